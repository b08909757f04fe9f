"""Bounded decoding: limits on what a media file may ask the decoders for, checked from its header before anything
is decoded (`check_limits`). An input over a limit is a MediaError naming the limit and the flag that raises it;
the sample gets an error record, the run goes on. The defaults are far above every benchmark file (MCUB, AVQA,
MUSIC-AVQA, ModelNet40, Objaverse) and far below what exhausts a worker's memory."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from mcub.errors import MediaError
from mcub.modalities import Modality


@dataclass(frozen=True)
class MediaLimits:
    """Per-modality limits (`--media-limit NAME=VALUE`)."""

    file_bytes: int = 4 * 1024**3
    """Any media file: its size on disk."""
    image_pixels: int = 64_000_000
    """An image's width x height (64 MP: an 8000 x 8000 image)."""
    video_frame_pixels: int = 8_912_896
    """A video frame's width x height (4096 x 2176, DCI 4K)."""
    video_frames: int = 2_000_000
    """The frames a video stream declares (18.5 hours at 30 fps)."""
    audio_seconds: float = 3 * 3600.0
    """The audio a decoder reads: the window a preprocessing uses (BEATs: 10.24 s), or the whole stream."""
    audio_rate: int = 768_000
    """An audio stream's sample rate."""
    points: int = 1_000_000
    """The points of a point cloud (the benchmark clouds hold 8,192 to 10,000)."""

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> MediaLimits:
        """Limits with `values` (name -> number) over the defaults; an unknown name is an error listing the known."""
        known = {field.name: field.type for field in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown media limit(s) {', '.join(unknown)}; known: {', '.join(known)}")
        typed = {}
        for name, value in values.items():
            number = float(value) if known[name] == "float" else int(float(value))
            if number <= 0:
                raise ValueError(f"media limit {name} must be positive, not {value!r}")
            typed[name] = number
        return cls(**typed)

    def changed(self) -> dict[str, float]:
        """The limits that differ from the defaults (what a run records)."""
        default = MediaLimits()
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)
        }


DEFAULT_LIMITS = MediaLimits()


def over_limit(path: str, what: str, limit: str, limits: MediaLimits) -> MediaError:
    """The error of an input over a limit: what it holds, the limit, and the flag that raises it."""
    return MediaError(path, f"{what}: over the {limit} limit of {_number(getattr(limits, limit))} "
                            f"(--media-limit {limit}=N raises it)")  # fmt: skip


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.6g}"


def check_limits(
    modality: Modality, path: str, limits: MediaLimits = DEFAULT_LIMITS, read_seconds: float | None = None
) -> None:
    """Refuse a file that is not a non-empty regular file (`check_file`), or whose size or header says it is over a
    limit (a file whose header cannot be read is left to its decoder, which names the problem). `read_seconds`: the
    audio a preprocessing reads from the start of the file (None: all of it)."""
    from mcub.media import check_file

    size = check_file(path)
    if size > limits.file_bytes:
        raise over_limit(path, f"{_number(size)} bytes", "file_bytes", limits)
    if modality == "image":
        _check_image(path, limits)
    elif modality == "video":
        _check_video(path, limits)
    elif modality == "point":
        _check_points(path, limits)
    elif modality == "audio":
        _check_audio(path, limits, read_seconds)


def _check_audio(path: str, limits: MediaLimits, read_seconds: float | None) -> None:
    header = _audio_header(path)
    if header is None:
        return
    rate, seconds = header
    if rate > limits.audio_rate:
        raise over_limit(path, f"a sample rate of {_number(rate)} Hz", "audio_rate", limits)
    read = seconds if read_seconds is None else min(seconds, read_seconds)
    if read > limits.audio_seconds:
        raise over_limit(path, f"{_number(round(read, 3))} seconds of audio to decode", "audio_seconds", limits)


def _audio_header(path: str) -> tuple[int, float] | None:
    """(sample rate, seconds) from the header of an audio file (None: no header to read)."""
    from mcub.media.audio import SOUNDFILE_SUFFIXES

    try:
        if Path(path).suffix.lower() in SOUNDFILE_SUFFIXES:
            import soundfile

            info = soundfile.info(path)
            return int(info.samplerate), float(info.duration)
        import av

        with av.open(path) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            seconds = float(stream.duration * stream.time_base) if stream.duration else container.duration / 1e6
            return int(stream.rate), seconds
    except Exception:  # noqa: BLE001 - an unreadable header is the decoder's to report
        return None


def _check_image(path: str, limits: MediaLimits) -> None:
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:  # reads the header only
                width, height = image.size
        except Image.DecompressionBombError as error:  # PIL's own ceiling, above ours
            raise MediaError(path, f"{error} (over the image_pixels limit of {_number(limits.image_pixels)})") from None
        except Exception:  # noqa: BLE001 - an unreadable header is the decoder's to report
            return
    if width * height > limits.image_pixels:
        raise over_limit(path, f"a {width} x {height} image ({_number(width * height)} pixels)", "image_pixels", limits)


def _check_video(path: str, limits: MediaLimits) -> None:
    from mcub.media.video import IMAGE_SUFFIXES

    if Path(path).suffix.lower() in IMAGE_SUFFIXES:
        _check_image(path, limits)
        return
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                return
            stream = container.streams.video[0]
            width, height, frames = stream.codec_context.width, stream.codec_context.height, stream.frames
    except av.FFmpegError:
        return
    if width * height > limits.video_frame_pixels:
        what = f"{width} x {height} frames ({_number(width * height)} pixels each)"
        raise over_limit(path, what, "video_frame_pixels", limits)
    if frames > limits.video_frames:
        raise over_limit(path, f"a stream of {_number(frames)} frames", "video_frames", limits)


def _check_points(path: str, limits: MediaLimits) -> None:
    count = _stored_point_count(path)
    if count is not None and count > limits.points:
        raise over_limit(path, f"{_number(count)} points", "points", limits)


def _stored_point_count(path: str) -> int | None:
    """The point count a `.npy` or `.ply` header states (None: no header to read)."""
    import numpy as np

    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".npy":
            shape = np.load(path, mmap_mode="r").shape  # reads the header only
            return int(shape[0]) if shape else None
        if suffix == ".ply":
            with open(path, "rb") as handle:
                for _ in range(64):
                    line = handle.readline(256).decode("ascii", "replace").split()
                    if line[:2] == ["element", "vertex"] and len(line) == 3:
                        return int(line[2])
                    if line[:1] == ["end_header"]:
                        return None
    except (OSError, ValueError):
        return None
    return None
