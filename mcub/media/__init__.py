"""Media decoders, one module per modality. Each turns a file into the tensors an encoder needs, by a named
preprocessing of the released encoders, plus a provenance dict saying exactly what was taken from the file."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

from mcub.errors import MediaError
from mcub.hashing import file_sha256
from mcub.media.limits import DEFAULT_LIMITS, MediaLimits, check_limits
from mcub.modalities import Modality

_MODULES: dict[Modality, str] = {
    "image": "mcub.media.image",
    "video": "mcub.media.video",
    "audio": "mcub.media.audio",
    "point": "mcub.media.point",
}


@dataclass(frozen=True)
class MediaInput:
    """One decoded and preprocessed media file."""

    modality: Modality
    path: str
    tensors: dict[str, Any]
    provenance: dict[str, Any]


class SignalEdit(Protocol):
    """A change of a decoded signal before its preprocessing (a run condition's: blank, noise): the signal as the
    decoder gives it (an RGB image, video frames, 16 kHz mono samples, points) in, the changed signal out. `key`
    identifies the change (decoded media are shared within a batch by file and key); `provenance` says what it did."""

    key: str
    provenance: dict[str, Any]

    def __call__(self, signal: Any) -> Any: ...


def edited(signal: Any, edit: SignalEdit | None, path: str) -> Any:
    """`signal` as `edit` changes it (unchanged without one); a ValueError of the edit is a MediaError naming `path`."""
    if edit is None:
        return signal
    try:
        return edit(signal)
    except ValueError as error:
        raise MediaError(path, f"{edit.key}: {error}") from None


def preprocessing_names(modality: Modality) -> tuple[str, ...]:
    """The named preprocessings of a modality; the first is the default (the released encoder's)."""
    return tuple(importlib.import_module(_MODULES[modality]).PREPROCESSING)


def load_media(
    modality: Modality,
    path: str,
    preprocessing: str | None = None,
    sha256: str | None = None,
    limits: MediaLimits = DEFAULT_LIMITS,
    edit: SignalEdit | None = None,
) -> MediaInput:
    """Decode `path` and apply a named preprocessing (default: the one the released checkpoints used); `sha256`
    is the file's content hash when the caller has it already. A file over `limits` is refused from its header.
    With `edit`, the decoded signal is changed before the preprocessing, and the provenance says how (its
    `preprocessing` is then `<name>+<edit key>`)."""
    module = importlib.import_module(_MODULES[modality])
    name = preprocessing or preprocessing_names(modality)[0]
    if name not in module.PREPROCESSING:
        raise ValueError(f"unknown {modality} preprocessing {name!r}; known: {', '.join(module.PREPROCESSING)}")
    check_limits(modality, path, limits, getattr(module, "READ_SECONDS", {}).get(name))
    tensors, provenance = module.PREPROCESSING[name](path, edit)
    described = {"path": path, "sha256": sha256 or file_sha256(path), "preprocessing": name, **provenance}
    if edit is not None:
        # The edit is part of the preprocessing's name, so that inputs of one file edited alike, and only those, are
        # encoded alike (models share the encoding of inputs of the same file content and preprocessing).
        described |= {**edit.provenance, "preprocessing": f"{name}+{edit.key}"}
    return MediaInput(modality, path, tensors, described)


def check_file(path: str) -> int:
    """The size of `path` in bytes; a MediaError unless it is a non-empty regular file (one stat)."""
    import os
    import stat

    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise MediaError(path, "no such file") from None
    except OSError as error:
        raise MediaError(path, f"cannot be read ({error.strerror})") from None
    if not stat.S_ISREG(status.st_mode):
        raise MediaError(path, "not a regular file")
    if status.st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")
    return status.st_size


def consumed(media: MediaInput) -> dict[str, Any]:
    """What a decoded input hands a model, from its provenance: an image's size, a video's frames, the seconds of
    audio in the window used, the points of a cloud (for media receipts)."""
    provenance = media.provenance
    if media.modality == "video":
        return {"frames": len(provenance["frame_indices"])}
    if media.modality == "audio":
        start, end = provenance.get("window_s") or (0.0, provenance["samples"] / provenance["rate"])
        return {"seconds": round(end - start, 6)}
    if media.modality == "point":
        return {"points": provenance.get("resampled_to", provenance["count"])}
    return {"width": provenance["width"], "height": provenance["height"]}
