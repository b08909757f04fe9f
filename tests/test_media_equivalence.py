"""The decoders' faster orders give today's tensors: LanguageBind's resize before normalising within 1e-6 of the
reference's normalise-then-resize, the channel mean bit for bit; images and points pinned by values computed with
the decoders as they were (commit 8b5b777)."""

import hashlib

import numpy as np
import pytest
import torch

from mcub.media import load_media, synthetic
from mcub.media.audio import channel_mean, decode_audio
from mcub.media.image import CLIP_MEAN, CLIP_STD
from mcub.media.video import decode_video, languagebind_pixel_values, short_side_resize


def normalise_then_resize(frames: np.ndarray, size: int = 224) -> torch.Tensor:
    """LanguageBind's eval transform in the reference's order (mcub's until 8b5b777): /255 and normalise every
    full-size frame, then resize the short side to `size` (bilinear) and centre-crop."""
    video = torch.from_numpy(frames).permute(3, 0, 1, 2).to(torch.float32) / 255.0
    video = (video - torch.tensor(CLIP_MEAN).view(3, 1, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1, 1)
    new_height, new_width, top, left = short_side_resize(frames.shape[1], frames.shape[2], size)
    video = torch.nn.functional.interpolate(video, size=(new_height, new_width), mode="bilinear", align_corners=False)
    return video[:, :, top : top + size, left : left + size].contiguous()


@pytest.mark.parametrize(
    "height, width", [(240, 320), (720, 1280), (226, 400), (333, 100), (224, 224), (48, 64), (5, 7), (1, 1)]
)
def test_languagebind_resizes_before_normalising_within_1e_6_of_the_reference_order(height, width):
    frames = np.random.default_rng(height * width).integers(0, 256, (8, height, width, 3), dtype=np.uint8)
    values = languagebind_pixel_values(frames)
    reference = normalise_then_resize(frames)
    assert values.shape == reference.shape == (3, 8, 224, 224) and values.is_contiguous()
    assert (values - reference).abs().max() <= 1e-6


def test_a_decoded_video_keeps_its_pixel_values(tmp_path):
    path = str(synthetic.write_video(tmp_path / "v.mp4", frames=30, width=320, height=240, fps=30))
    frames, _ = decode_video(path)
    media = load_media("video", path)
    assert (media.tensors["pixel_values"] - normalise_then_resize(frames)).abs().max() <= 1e-6
    # The synthetic frames' red channel is index * 8: the eighth frame (index 29) is 232 everywhere.
    red = (232 / 255 - CLIP_MEAN[0]) / CLIP_STD[0]
    assert abs(media.tensors["pixel_values"][0, 7].mean().item() - red) < 0.02


def _mean_reference(samples: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(samples.mean(axis=0, dtype=np.float32))


@pytest.mark.parametrize("channels", range(1, 10))
def test_the_channel_mean_is_numpys_bit_for_bit(channels):
    generator = np.random.default_rng(channels)
    interleaved = generator.standard_normal((3000, channels)).astype(np.float32)
    special = np.array([0.0, -0.0, 1e-45, -1e-45, 3e38, -3e38, np.inf], np.float32)
    chosen = generator.random(interleaved.shape) < 0.3
    interleaved[chosen] = generator.choice(special, int(chosen.sum()))
    with np.errstate(over="ignore", invalid="ignore"):
        for samples in (interleaved.T, np.ascontiguousarray(interleaved.T)):  # soundfile's view, PyAV's planes
            assert channel_mean(samples).tobytes() == _mean_reference(samples).tobytes()


def test_stereo_files_decode_to_the_mean_numpy_gives(tmp_path):
    import soundfile
    import torchaudio.functional

    wav = str(synthetic.write_audio(tmp_path / "s.wav", seconds=2.0, rate=44100, channels=2))
    mono, provenance = decode_audio(wav)
    interleaved, _ = soundfile.read(wav, dtype="float32", always_2d=True)
    expected = torchaudio.functional.resample(torch.from_numpy(_mean_reference(interleaved.T)), 44100, 16000)
    assert provenance["channels"] == 2 and torch.equal(mono, expected)
    same_rate = str(synthetic.write_audio(tmp_path / "t.wav", seconds=1.0, rate=16000, channels=2))
    interleaved, _ = soundfile.read(same_rate, dtype="float32", always_2d=True)
    assert torch.equal(decode_audio(same_rate)[0], torch.from_numpy(_mean_reference(interleaved.T)))


def _image_summary(values: torch.Tensor) -> list[float]:
    """Per channel: the mean, the mean square, and the values at two pixels."""
    values = values.double()
    return [
        *values.mean(dim=(1, 2)).tolist(),
        *(values**2).mean(dim=(1, 2)).tolist(),
        *values[:, 100, 60].tolist(),
        *values[:, 250, 300].tolist(),
    ]


IMAGE_GOLDEN = {
    "clip-336-pad": [0.032561721, 0.088543132, 0.638485445, 0.701356197, 0.752990672, 0.680013227]
    + [-1.135333419, -1.136778593, 1.065172076, 1.536178708, 1.729705095, 1.065172076],
    "clip-336": [0.061737653, 0.155586771, 1.065172076, 0.42401918, 1.264891537, 1.134591552]
    + [-0.653585255, -0.611506701, 1.065172076, 0.952241659, 1.099378824, 1.065172076],
}


def test_images_keep_the_values_they_had(tmp_path):
    """clip-336-pad and clip-336 resize the uint8 image before normalising already; their values are pinned."""
    path = str(synthetic.write_image(tmp_path / "i.png", 200, 120, seed=3))
    for name, expected in IMAGE_GOLDEN.items():
        summary = _image_summary(load_media("image", path, name).tensors["pixel_values"])
        assert summary == pytest.approx(expected, abs=1e-6), name


def test_points_are_the_arrays_they_were(tmp_path):
    path = str(synthetic.write_points(tmp_path / "p.npy", 3000, 6, seed=5))
    golden = {
        "stored": "6b3f9b65fc1adc2a099f622a792522605458f6c428a0560f576a9f1f099eb467",
        "stored-8192": "1fe8771f326a0ae909fa608508f39759c2ef7c4d8db777a4cf736357538f7a10",
        "pointllm-norm": "9ef5fa4905ed6880f5f4fa5ce892e14de4ef90cfcf027dc8962cb0018086e205",
    }
    for name, digest in golden.items():
        points = load_media("point", path, name).tensors["points"]
        assert hashlib.sha256(points.numpy().tobytes()).hexdigest() == digest, name
