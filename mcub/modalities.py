"""The four modalities: their names, prompt placeholders and keys in the authors' `modal_inputs`."""

from __future__ import annotations

from typing import Literal

Modality = Literal["image", "video", "audio", "point"]

MODALITIES: tuple[Modality, ...] = ("image", "video", "audio", "point")

PLACEHOLDERS: dict[Modality, str] = {
    "image": "<image>",
    "video": "<video>",
    "audio": "<audio>",
    "point": "<point>",
}

REFERENCE_KEYS: dict[str, Modality] = {
    "vision": "image",
    "video": "video",
    "audio": "audio",
    "point": "point",
}
