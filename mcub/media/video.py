"""Videos: 8 frames at the reference's indices (decord, or PyAV) and LanguageBind's 224 preprocessing; frames at
qwen-omni-utils' 2 fps rule (decord), with or without the video's audio track, for Qwen2.5-Omni's own processor."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mcub.errors import MediaError
from mcub.media import SignalEdit, check_file, edited
from mcub.media.audio import decode_audio
from mcub.media.image import CLIP_MEAN, CLIP_STD, decode_image

NUM_FRAMES = 8
LANGUAGEBIND_SIZE = 224
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
Backend = Literal["decord", "pyav"]
FramePicker = Callable[[int, float], list[int]]
"""The frame indices to decode, from the video's frame count and frame rate."""
QWEN_OMNI_SAMPLING: dict[str, Any] = {"fps": 2.0, "min_frames": 4, "max_frames": 768, "frame_factor": 2}
"""qwen-omni-utils' defaults (`FPS`, `FPS_MIN_FRAMES`, `FPS_MAX_FRAMES`, `FRAME_FACTOR` of its vision_process.py)."""


def frame_indices(total_frames: int, count: int = NUM_FRAMES) -> list[int]:
    """The reference's rule: `linspace(0, total - 1, count)` truncated to int (repeats when total < count)."""
    if total_frames < 1:
        raise ValueError("a video needs at least one frame")
    return [int(index) for index in np.linspace(0, total_frames - 1, count).astype(np.int64)]


def decode_video(
    path: str, num_frames: int = NUM_FRAMES, backend: Backend = "decord"
) -> tuple[np.ndarray, dict[str, Any]]:
    """`num_frames` frames as uint8 (T, H, W, 3). A still image is a 1-frame video, as in the reference."""
    check_file(path)
    if Path(path).suffix.lower() in IMAGE_SUFFIXES:
        image, provenance = decode_image(path)
        frames = np.array(image, dtype=np.uint8)[None]
        return frames, {**provenance, "total_frames": 1, "frame_indices": [0], "repeated_frames": False}
    reader = _read_decord if backend == "decord" else _read_pyav
    total, indices, frames, fps = reader(path, lambda total, fps: frame_indices(total, num_frames))
    _check_decoded(path, frames, indices)
    provenance = {
        "decoder": backend,
        "total_frames": total,
        "fps": fps,
        "frame_indices": indices,
        "repeated_frames": total < num_frames,
        "height": int(frames.shape[1]),
        "width": int(frames.shape[2]),
        "horizontal_flip": False,
    }
    return frames, provenance


def _check_decoded(path: str, frames: np.ndarray, indices: list[int]) -> None:
    if frames.shape[0] != len(indices):
        raise MediaError(path, f"decoded {frames.shape[0]} of the {len(indices)} frames asked for (truncated?)")


def _read_decord(path: str, pick: FramePicker) -> tuple[int, list[int], np.ndarray, float]:
    import decord

    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        total = len(reader)
        if total < 1:
            raise MediaError(path, "the video has no frames")
        fps = float(reader.get_avg_fps())
        indices = pick(total, fps)
        frames = reader.get_batch(indices).asnumpy()
    except (decord.DECORDError, RuntimeError) as error:
        raise MediaError(path, f"undecodable video ({str(error).splitlines()[0]})") from None
    return total, indices, frames, fps


def _read_pyav(path: str, pick: FramePicker) -> tuple[int, list[int], np.ndarray, float]:
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise MediaError(path, "no video stream")
            stream = container.streams.video[0]
            total = sum(1 for packet in container.demux(stream) if packet.size)
            if total < 1:
                raise MediaError(path, "the video has no frames")
            fps = float(stream.average_rate) if stream.average_rate else math.nan
            indices = pick(total, fps)
            container.seek(0)
            wanted = set(indices)
            decoded: dict[int, np.ndarray] = {}
            for position, frame in enumerate(container.decode(stream)):
                if position in wanted:
                    decoded[position] = frame.to_ndarray(format="rgb24")
                if position >= indices[-1]:
                    break
    except av.FFmpegError as error:
        raise MediaError(path, f"undecodable video ({error})") from None
    frames = [decoded[index] for index in indices if index in decoded]
    return total, indices, np.stack(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8), fps


def short_side_resize(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """LanguageBind's geometry: the size (height, width) with the short side at `size`, and the top and left of the
    centred `size` square."""
    if width < height:
        new_height, new_width = int(math.floor(height / width * size)), size
    else:
        new_height, new_width = size, int(math.floor(width / height * size))
    return new_height, new_width, int(round((new_height - size) / 2.0)), int(round((new_width - size) / 2.0))


def languagebind_pixel_values(frames: np.ndarray, size: int = LANGUAGEBIND_SIZE) -> torch.Tensor:
    """LanguageBind's eval steps minus the random flip: /255, normalise, short side to `size`, centre crop.

    Returns (3, T, size, size). The reference normalises the full frames before resizing; the per-channel affine
    normalisation commutes with the bilinear resize (its weights sum to 1), so it runs here on the cropped frames
    instead, equal to the reference's order within float32 rounding (under 1e-6)."""
    video = torch.from_numpy(frames).permute(3, 0, 1, 2).to(torch.float32)
    new_height, new_width, top, left = short_side_resize(frames.shape[1], frames.shape[2], size)
    video = torch.nn.functional.interpolate(video, size=(new_height, new_width), mode="bilinear", align_corners=False)
    video = video[:, :, top : top + size, left : left + size]
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1, 1)
    return ((video / 255.0 - mean) / std).contiguous()


def _languagebind(backend: Backend):
    def preprocess(path: str, edit: SignalEdit | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        frames, provenance = decode_video(path, NUM_FRAMES, backend)
        frames = edited(frames, edit, path)
        return {"pixel_values": languagebind_pixel_values(frames)}, provenance

    return preprocess


def qwen_omni_frame_count(total_frames: int, video_fps: float) -> int:
    """qwen-omni-utils' `smart_nframes` at its defaults: 2 frames a second, at least 4 and at most 768 (nor more than
    the video has), floored to an even count. ValueError where fewer than 2 frames would remain."""
    factor = QWEN_OMNI_SAMPLING["frame_factor"]
    low = math.ceil(QWEN_OMNI_SAMPLING["min_frames"] / factor) * factor
    high = math.floor(min(QWEN_OMNI_SAMPLING["max_frames"], total_frames) / factor) * factor
    wanted = total_frames / video_fps * QWEN_OMNI_SAMPLING["fps"]
    count = math.floor(min(max(wanted, low), high, total_frames) / factor) * factor
    if not factor <= count <= total_frames:
        raise ValueError(f"{total_frames} frame(s) give {count}, fewer than {factor}")
    return count


def qwen_omni_frame_indices(total_frames: int, video_fps: float) -> list[int]:
    """`qwen_omni_frame_count` frames spread evenly: torch.linspace(0, total - 1, count) rounded, as qwen-omni-utils'
    decord reader picks them."""
    count = qwen_omni_frame_count(total_frames, video_fps)
    return torch.linspace(0, total_frames - 1, count).round().long().tolist()


def decode_qwen_omni_video(path: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The frames qwen-omni-utils would read (decord, its 2 fps rule) at their decoded size, uint8 (T, H, W, 3); the
    provenance has the indices, the video's and the sampled frame rate and the sampling rule."""
    check_file(path)

    def pick(total: int, fps: float) -> list[int]:
        if not fps > 0:
            raise MediaError(path, f"no usable frame rate ({fps}) for sampling at {QWEN_OMNI_SAMPLING['fps']} fps")
        try:
            return qwen_omni_frame_indices(total, fps)
        except ValueError as error:
            raise MediaError(path, f"too short for Qwen2.5-Omni's frame sampling ({error})") from None

    total, indices, frames, fps = _read_decord(path, pick)
    _check_decoded(path, frames, indices)
    provenance = {
        "decoder": "decord",
        "total_frames": total,
        "fps": fps,
        "frame_indices": indices,
        "sample_fps": round(len(indices) / total * fps, 6),
        "sampling": dict(QWEN_OMNI_SAMPLING),
        "height": int(frames.shape[1]),
        "width": int(frames.shape[2]),
    }
    return frames, provenance


def _qwen_omni(with_audio: bool):
    def preprocess(path: str, edit: SignalEdit | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        frames, provenance = decode_qwen_omni_video(path)
        frames = edited(frames, edit, path)
        tensors: dict[str, Any] = {"frames": torch.from_numpy(frames)}
        if with_audio:
            try:
                tensors["audio"], provenance["audio"] = decode_audio(path)
            except MediaError as error:
                raise MediaError(path, f"{error.reason}: qwen-omni-2fps-audio reads the video's own audio") from None
        return tensors, provenance

    return preprocess


PREPROCESSING = {
    "languagebind-224": _languagebind("decord"),
    "languagebind-224-pyav": _languagebind("pyav"),
    "qwen-omni-2fps": _qwen_omni(with_audio=False),
    "qwen-omni-2fps-audio": _qwen_omni(with_audio=True),
}
