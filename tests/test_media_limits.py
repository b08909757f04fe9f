"""Bounded decoding: an input over a media limit is refused from its header, before decoding, as a per-sample error
naming the limit and its flag; the limits are overridable per run and recorded."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

import mcub
from mcub.check import main as check_main
from mcub.errors import MediaError
from mcub.media import load_media
from mcub.media.limits import MediaLimits, check_limits
from mcub.results import RunFiles
from mcub.tasks import BUNDLED_DATA_ROOT


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares `width` x `height` (no pixel data: nothing a decoder could hold)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


def ply_header(path: Path, points: int) -> Path:
    """A binary PLY whose header declares `points` vertices, followed by three of them."""
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {points}\nproperty float x\nproperty float y\n"
    header += "property float z\nend_header\n"
    path.write_bytes(header.encode() + np.zeros((3, 3), np.float32).tobytes())
    return path


def test_a_decompression_bomb_image_is_refused_from_its_header(tmp_path):
    bomb = png_header(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(MediaError) as raised:
        load_media("image", str(bomb))
    assert "over the image_pixels limit of 64,000,000" in raised.value.reason
    large = png_header(tmp_path / "large.png", 9000, 9000)
    with pytest.raises(MediaError) as raised:
        check_limits("image", str(large))
    assert raised.value.reason == (
        "a 9000 x 9000 image (81,000,000 pixels): over the image_pixels limit of 64,000,000 "
        "(--media-limit image_pixels=N raises it)"
    )
    check_limits("image", str(large), MediaLimits(image_pixels=100_000_000))


def test_a_point_cloud_over_the_limit_is_refused_before_it_is_read(tmp_path):
    cloud = ply_header(tmp_path / "huge.ply", 4_000_000)
    with pytest.raises(MediaError) as raised:
        load_media("point", str(cloud))
    assert raised.value.reason == (
        "4,000,000 points: over the points limit of 1,000,000 (--media-limit points=N raises it)"
    )
    stored = tmp_path / "small.npy"
    np.save(stored, np.zeros((500, 6), np.float32))
    with pytest.raises(MediaError, match="500 points: over the points limit of 100 "):
        check_limits("point", str(stored), MediaLimits(points=100))


def test_limits_are_checked_names_and_values():
    assert MediaLimits.from_values({"points": "2e6", "audio_seconds": 30}) == MediaLimits(points=2_000_000,
                                                                                       audio_seconds=30.0)  # fmt: skip
    assert MediaLimits.from_values({"points": 2_000_000}).changed() == {"points": 2_000_000}
    with pytest.raises(ValueError, match="unknown media limit.s. pixels; known: file_bytes, image_pixels"):
        MediaLimits.from_values({"pixels": 1})
    with pytest.raises(ValueError, match="media limit points must be positive"):
        MediaLimits.from_values({"points": 0})


def test_a_run_records_an_input_over_a_limit_as_an_error_on_its_sample_and_the_limits_it_ran_with(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(BUNDLED_DATA_ROOT, data)
    request = mcub.EvalRequest(model="tiny-damc", tasks=["mcub-sample"], data_root=data, download=False,
                               output_dir=tmp_path / "runs", run_name="r", num_workers=0, progress=False,
                               model_args={"cache_dir": str(tmp_path / "tiny")},
                               media_limits={"video_frame_pixels": 1000})  # fmt: skip
    summary = mcub.evaluate(request)
    assert summary.settings.media_limits == {"video_frame_pixels": 1000}
    records = RunFiles(tmp_path / "runs" / "tiny-damc" / "r").records["mcub-sample"].values()
    for record in records:
        assert "pixels each): over the video_frame_pixels limit of 1,000 (--media-limit" in record.error
        assert record.error.startswith("media error: ") and record.prompt_sha256 is None
    assert summary.tasks["mcub-sample"].metrics.errors == 5


def test_data_check_reports_inputs_over_a_limit_and_takes_the_flag(tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(BUNDLED_DATA_ROOT, data)
    questions = data / "test" / "mcub-sample.json"
    records = json.loads(questions.read_text())
    records[0]["modal_inputs"]["point"] = [str(ply_header(tmp_path / "huge.ply", 4_000_000))]
    questions.write_text(json.dumps(records))
    args = ["check", "--tasks", "mcub-sample", "--data-root", str(data), "--no-download", "--no-progress"]
    assert check_main(args) == 1
    assert "4,000,000 points: over the points limit of 1,000,000" in capsys.readouterr().out
    assert check_main([*args, "--media-limit", "nonsense=3"]) == 2
    assert "error: --media-limit: unknown media limit(s) nonsense" in capsys.readouterr().err


def test_beats_reads_only_its_window_and_gives_the_fbank_of_the_whole_file(tmp_path):
    import soundfile
    import torch

    from mcub.media.audio import BEATS_SECONDS, beats_fbank, decode_audio

    rate = 44_100
    tone = (0.2 * np.sin(2 * np.pi * 330 * np.arange(30 * rate) / rate)).astype(np.float32)
    noise = np.random.default_rng(0).normal(0, 0.05, tone.shape).astype(np.float32)
    path = tmp_path / "long.wav"
    soundfile.write(path, np.stack([tone + noise, tone - noise], axis=1), rate)
    windowed = load_media("audio", str(path), "beats-fbank")
    whole, _ = decode_audio(str(path))
    fbank, mask, _ = beats_fbank(whole)
    assert torch.allclose(windowed.tensors["fbank"], fbank, atol=1e-5) and torch.equal(
        windowed.tensors["padding_mask"], mask
    )
    provenance = windowed.provenance
    assert provenance["duration_s"] == 30.0 and provenance["original_samples"] == 30 * rate
    assert provenance["read_samples"] == int(np.ceil((BEATS_SECONDS + 0.1) * rate))


def test_a_wav_declared_at_1_hz_is_read_only_as_far_as_its_window(tmp_path):
    import soundfile

    path = tmp_path / "slow.wav"
    soundfile.write(path, np.random.default_rng(0).uniform(-0.5, 0.5, 3600).astype(np.float32), 1, subtype="FLOAT")
    media = load_media("audio", str(path), "beats-fbank")
    assert media.provenance["read_samples"] == 11 and media.provenance["duration_s"] == 3600.0
    assert media.provenance["samples"] == 11 * 16_000  # not the 57.6 M samples of the whole declared hour
    with pytest.raises(MediaError, match=r"3,600 seconds of audio to decode: over the audio_seconds limit of 600"):
        check_limits("audio", str(path), MediaLimits(audio_seconds=600))  # a preprocessing that reads it whole
    with pytest.raises(MediaError, match=r"a sample rate of 96,000 Hz: over the audio_rate limit of 48,000"):
        soundfile.write(tmp_path / "fast.wav", np.zeros(960, np.float32), 96_000)
        check_limits("audio", str(tmp_path / "fast.wav"), MediaLimits(audio_rate=48_000))
