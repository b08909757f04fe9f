"""Deterministic synthetic media of every modality, for tests, the bundled sample and benchmarks.

Video frames carry their own index in the red channel (index * 8 mod 256), so decoders can be checked
for which frames they return."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_image(path: Path, width: int = 48, height: int = 32, seed: int = 0) -> Path:
    """A smooth colour gradient with a seeded offset, saved in the format the suffix names."""
    from PIL import Image

    rows = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    cols = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    offset = np.random.default_rng(seed).integers(0, 64)
    red = np.broadcast_to(cols, (height, width))
    green = np.broadcast_to(rows, (height, width))
    blue = np.full((height, width), 128 + offset, np.float32)
    pixels = np.stack([red, green, blue], axis=2).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def video_frame(index: int, width: int, height: int) -> np.ndarray:
    """Frame `index` of a synthetic video: red = index * 8 mod 256, a horizontal green ramp, blue = 96."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = (index * 8) % 256
    frame[..., 1] = np.linspace(0, 255, width, dtype=np.float32).astype(np.uint8)[None, :]
    frame[..., 2] = 96
    return frame


def write_video(path: Path, frames: int = 24, width: int = 64, height: int = 48, fps: int = 24) -> Path:
    """An H.264 mp4 (yuv420p, constant quality) whose frames are `video_frame(0..frames-1)`."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "10", "preset": "veryfast", "tune": "zerolatency"}
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(video_frame(index, width, height), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_audio(
    path: Path, seconds: float = 1.0, rate: int = 16_000, channels: int = 1, frequency: float = 440.0
) -> Path:
    """A sine tone (channel c at frequency * (c + 1)), 16-bit PCM, in the format the suffix names."""
    import soundfile

    time = np.arange(int(round(seconds * rate)), dtype=np.float64) / rate
    tones = [0.3 * np.sin(2 * np.pi * frequency * (channel + 1) * time) for channel in range(channels)]
    soundfile.write(str(path), np.stack(tones, axis=1).astype(np.float32), rate, subtype="PCM_16")
    return path


def point_cloud(count: int = 1024, dims: int = 6, seed: int = 0) -> np.ndarray:
    """Points on a unit sphere, coloured by position (xyz, then rgb in 0-1 when dims is 6)."""
    generator = np.random.default_rng(seed)
    xyz = generator.normal(size=(count, 3))
    xyz /= np.linalg.norm(xyz, axis=1, keepdims=True)
    columns = [xyz] if dims == 3 else [xyz, (xyz + 1) / 2]
    return np.concatenate(columns, axis=1).astype(np.float32)


def write_points(path: Path, count: int = 1024, dims: int = 6, seed: int = 0) -> Path:
    np.save(path, point_cloud(count, dims, seed))
    return path
