from pathlib import Path

import numpy as np
import pytest
import torch

from mcub.errors import MediaError
from mcub.media import load_media, preprocessing_names, synthetic
from mcub.media.audio import beats_fbank, decode_audio
from mcub.media.image import CLIP_MEAN, CLIP_MEAN_RGB, CLIP_STD, clip_pixel_values, decode_image, pad_to_square
from mcub.media.point import decode_points, normalize_points, resample_points
from mcub.media.video import decode_video, frame_indices, languagebind_pixel_values

# image


def test_pad_to_square_centres_on_the_clip_mean_colour(tmp_path):
    image, provenance = decode_image(str(synthetic.write_image(tmp_path / "i.png", 40, 20)))
    assert provenance["width"] == 40 and provenance["height"] == 20 and CLIP_MEAN_RGB == (122, 116, 104)
    padded = np.asarray(pad_to_square(image))
    assert padded.shape == (40, 40, 3)
    assert (padded[:10] == CLIP_MEAN_RGB).all() and (padded[30:] == CLIP_MEAN_RGB).all()
    assert (padded[10:30] == np.asarray(image)).all()


def test_clip_pixel_values_resize_crop_normalise():
    from PIL import Image

    flat = Image.new("RGB", (500, 300), (200, 100, 50))
    values = clip_pixel_values(flat)
    assert values.shape == (3, 336, 336) and values.dtype == torch.float32
    expected = (torch.tensor([200, 100, 50]) / 255.0 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(values.mean(dim=(1, 2)), expected, atol=1e-5)
    ramp = Image.fromarray(np.tile((np.arange(500) % 256).astype(np.uint8)[None, :, None], (300, 1, 3)))
    direct = ramp.resize((int(336 * 500 / 300), 336), Image.Resampling.BICUBIC).crop((112, 0, 448, 336))
    manual = (np.asarray(direct, np.float32) / 255 - CLIP_MEAN) / CLIP_STD
    assert np.allclose(clip_pixel_values(ramp).numpy().transpose(1, 2, 0), manual, atol=1e-5)


# video


def test_frame_indices_follow_the_reference_rule():
    assert frame_indices(300) == [int(i) for i in np.linspace(0, 299, 8)] == [0, 42, 85, 128, 170, 213, 256, 299]
    assert frame_indices(5) == [0, 0, 1, 1, 2, 2, 3, 4]
    assert frame_indices(1) == [0] * 8


@pytest.mark.parametrize("frames", [24, 5])
def test_decord_and_pyav_return_the_same_frames(tmp_path, frames):
    path = str(synthetic.write_video(tmp_path / "v.mp4", frames=frames))
    by_decord, decord_provenance = decode_video(path, backend="decord")
    by_pyav, pyav_provenance = decode_video(path, backend="pyav")
    assert by_decord.shape == (8, 48, 64, 3)
    assert np.array_equal(by_decord, by_pyav)
    assert decord_provenance["frame_indices"] == pyav_provenance["frame_indices"] == frame_indices(frames)
    assert decord_provenance["total_frames"] == frames and decord_provenance["repeated_frames"] == (frames < 8)
    assert decord_provenance["horizontal_flip"] is False
    # the red channel carries index * 8: the frames returned are the frames asked for
    decoded_index = np.round(by_decord[:, 24, 32, 0].astype(float) / 8).astype(int)
    assert np.abs(decoded_index - np.array(frame_indices(frames))).max() <= 1


def test_languagebind_pixel_values_shape_and_values():
    frames = np.zeros((8, 48, 64, 3), np.uint8)
    frames[..., 0] = 255
    values = languagebind_pixel_values(frames)
    assert values.shape == (3, 8, 224, 224)
    expected_red = (1.0 - CLIP_MEAN[0]) / CLIP_STD[0]
    assert torch.allclose(values[0], torch.full_like(values[0], expected_red), atol=1e-5)
    tall = languagebind_pixel_values(np.zeros((2, 100, 50, 3), np.uint8))
    assert tall.shape == (3, 2, 224, 224)


def test_a_still_image_is_a_one_frame_video(tmp_path):
    frames, provenance = decode_video(str(synthetic.write_image(tmp_path / "f.jpg", 30, 20)))
    assert frames.shape == (1, 20, 30, 3) and provenance["total_frames"] == 1
    media = load_media("video", str(tmp_path / "f.jpg"))
    assert media.tensors["pixel_values"].shape == (3, 1, 224, 224)


# audio


def test_fbank_matches_a_direct_kaldi_call(tmp_path):
    from torchaudio.compliance import kaldi

    path = str(synthetic.write_audio(tmp_path / "a.wav", seconds=2.0))
    waveform, provenance = decode_audio(path)
    assert provenance["rate"] == 16000 and provenance["samples"] == 32000 and provenance["channels"] == 1
    fbank, mask, window = beats_fbank(waveform)
    direct = kaldi.fbank(
        waveform[None] * 32768, num_mel_bins=128, sample_frequency=16000, frame_length=25, frame_shift=10
    )
    direct = (direct - 15.41663) / (2 * 6.55582)
    assert direct.shape == (198, 128) and window["fbank_frames"] == 198
    assert fbank.shape == (1024, 128)
    assert torch.equal(fbank[:198], direct) and torch.count_nonzero(fbank[198:]) == 0
    assert not mask[:198].any() and mask[198:].all()
    _, reference_mask, _ = beats_fbank(waveform, padding_mask="reference")
    assert not reference_mask.any()


def test_long_audio_is_cut_to_1024_frames(tmp_path):
    waveform, _ = decode_audio(str(synthetic.write_audio(tmp_path / "a.flac", seconds=12.0)))
    fbank, mask, window = beats_fbank(waveform)
    assert fbank.shape == (1024, 128) and not mask.any()
    assert window["fbank_frames"] == 1198 and window["kept_frames"] == 1024 and window["window_s"] == [0.0, 10.255]


def test_stereo_44k_becomes_16k_mono_by_averaging(tmp_path):
    import soundfile
    import torchaudio.functional

    path = str(synthetic.write_audio(tmp_path / "s.wav", seconds=1.0, rate=44100, channels=2))
    mono, provenance = decode_audio(path)
    stereo, _ = soundfile.read(path, dtype="float32")
    per_channel = torchaudio.functional.resample(torch.from_numpy(stereo.T.copy()), 44100, 16000)
    assert provenance["channels"] == 2 and provenance["original_rate"] == 44100 and mono.shape == (16000,)
    assert torch.allclose(mono, per_channel.mean(dim=0), atol=1e-5)


def test_pyav_and_soundfile_agree_and_mp4_audio_decodes(tmp_path):
    import av

    from mcub.media import audio

    path = str(synthetic.write_audio(tmp_path / "a.wav", seconds=0.5))
    by_pyav, rate, total = audio._read_pyav(path, None)
    by_soundfile, _, _ = audio._read_soundfile(path, None)
    assert (rate, total) == (16000, 8000) and np.array_equal(by_pyav, by_soundfile)
    start_pyav, _, _ = audio._read_pyav(path, 0.2)
    start_soundfile, _, whole = audio._read_soundfile(path, 0.2)
    assert start_pyav.shape[1] == start_soundfile.shape[1] == 4800 and whole == 8000  # 0.2 s and the 0.1 s margin
    assert np.array_equal(start_pyav, by_pyav[:, :4800]) and np.array_equal(start_soundfile, by_soundfile[:, :4800])

    m4a = tmp_path / "tone.m4a"
    with av.open(str(m4a), "w") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
        for start in range(0, 16000, 1024):
            chunk = tone[None, start : start + 1024]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="flt", layout="mono")
            frame.rate = 16000
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    waveform, provenance = decode_audio(str(m4a))
    assert provenance["decoder"] == "pyav" and abs(provenance["samples"] - 16000) < 2048
    spectrum = np.abs(np.fft.rfft(waveform.numpy()))
    assert abs(np.argmax(spectrum) * 16000 / waveform.shape[0] - 440) < 5


# point clouds


def test_npy_and_ply_point_clouds(tmp_path):
    from plyfile import PlyData, PlyElement

    six, provenance = decode_points(str(synthetic.write_points(tmp_path / "p.npy", 2048, 6)))
    assert (
        six.shape == (2048, 6) and six.dtype == np.float32 and provenance == {"format": "npy", "count": 2048, "dims": 6}
    )
    three, _ = decode_points(str(synthetic.write_points(tmp_path / "q.npy", 100, 3)))
    assert three.shape == (100, 3)
    vertices = np.array(
        [(0.0, 1.0, 2.0, 255, 0, 51)],
        dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")],
    )
    PlyData([PlyElement.describe(vertices, "vertex")]).write(str(tmp_path / "c.ply"))
    ply, _ = decode_points(str(tmp_path / "c.ply"))
    assert np.allclose(ply, [[0, 1, 2, 1.0, 0.0, 0.2]])
    stored = load_media("point", str(tmp_path / "p.npy"))
    assert torch.equal(stored.tensors["points"], torch.from_numpy(six)) and stored.provenance["normalized"] is False


def test_normalize_and_seeded_resampling():
    points = synthetic.point_cloud(500, 6) * 3 + 7
    normalized = normalize_points(points)
    assert np.allclose(normalized[:, :3].mean(axis=0), 0, atol=1e-5)
    assert np.isclose(np.linalg.norm(normalized[:, :3], axis=1).max(), 1.0)
    assert np.array_equal(normalized[:, 3:], points[:, 3:])
    down, info = resample_points(points, 100, seed=3)
    again, _ = resample_points(points, 100, seed=3)
    assert down.shape == (100, 6) and np.array_equal(down, again)
    assert info == {
        "resampled": True,
        "resampled_from": 500,
        "resampled_to": 100,
        "sampling_seed": 3,
        "with_replacement": False,
    }
    up, info = resample_points(points, 800, seed=3)
    assert up.shape == (800, 6) and info["with_replacement"] is True
    same, info = resample_points(points, 500, seed=3)
    assert same is points and info == {"resampled": False}


def test_load_media_defaults_are_the_released_encoders_preprocessing(tmp_path):
    assert preprocessing_names("image")[0] == "clip-336-pad"
    assert preprocessing_names("audio")[0] == "beats-fbank"
    media = load_media("image", str(synthetic.write_image(tmp_path / "i.png")))
    assert media.tensors["pixel_values"].shape == (3, 336, 336)
    assert media.provenance["preprocessing"] == "clip-336-pad" and media.provenance["padded_to_square"]
    with pytest.raises(ValueError, match="unknown image preprocessing 'nope'"):
        load_media("image", str(tmp_path / "i.png"), "nope")


# bad input: each a MediaError naming the file


def _truncated_video(tmp_path: Path) -> Path:
    full = synthetic.write_video(tmp_path / "full.mp4").read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(full[: len(full) // 2])
    return path


def _bad_points(tmp_path: Path, array) -> Path:
    path = tmp_path / "bad.npy"
    np.save(path, array, allow_pickle=True)
    return path


def _file(directory: Path, name: str, content: bytes) -> Path:
    (directory / name).write_bytes(content)
    return directory / name


def _wav(tmp_path: Path, samples: int) -> Path:
    import soundfile

    path = tmp_path / "short.wav"
    soundfile.write(str(path), np.zeros(samples, np.float32), 16000)
    return path


BAD_MEDIA = {
    "missing": ("image", lambda d: d / "nope.png", "no such file"),
    "empty": ("audio", lambda d: _file(d, "e.wav", b""), "empty file"),
    "garbage image": ("image", lambda d: _file(d, "g.png", b"not a png"), "undecodable image"),
    "truncated png": (
        "image",
        lambda d: _file(d, "t.png", synthetic.write_image(d / "f.png", 64, 64, 1).read_bytes()[:60]),
        "undecodable image",
    ),
    "truncated mp4 (decord)": ("video", _truncated_video, "undecodable video"),
    "garbage wav": ("audio", lambda d: _file(d, "g.wav", b"RIFF...."), "undecodable audio"),
    "zero samples": ("audio", lambda d: _wav(d, 0), "zero samples"),
    "shorter than a window": ("audio", lambda d: _wav(d, 300), "shorter than one 25 ms fbank window"),
    "mp4 without audio": ("audio", lambda d: synthetic.write_video(d / "v.mp4"), "no audio stream"),
    "points of shape (N, 4)": ("point", lambda d: _bad_points(d, np.zeros((10, 4))), r"shape \(10, 4\)"),
    "points 1-D": ("point", lambda d: _bad_points(d, np.zeros(10)), r"shape \(10,\)"),
    "points with NaN": ("point", lambda d: _bad_points(d, np.full((10, 3), np.nan)), "NaN"),
    "pickled points": ("point", lambda d: _bad_points(d, np.array([{}], dtype=object)), "undecodable .npy"),
    "unknown point format": ("point", lambda d: _file(d, "p.xyz", b"0 0 0"), "unsupported"),
}


@pytest.mark.parametrize("case", list(BAD_MEDIA))
def test_bad_media_fail_loudly_naming_the_file(tmp_path, case):
    modality, make, message = BAD_MEDIA[case]
    path = str(make(tmp_path))
    with pytest.raises(MediaError, match=message) as caught:
        load_media(modality, path)
    assert caught.value.path == path and str(caught.value).startswith(path)


def test_truncated_mp4_fails_with_pyav_too(tmp_path):
    with pytest.raises(MediaError, match="undecodable video"):
        load_media("video", str(_truncated_video(tmp_path)), "languagebind-224-pyav")
