"""The Qwen2.5-Omni conversation of a sample: the system turn, and one user turn whose content parts follow the
sample's placeholders."""

from __future__ import annotations

from typing import Any

from mcub.errors import UnsupportedInput
from mcub.prompts import placeholder_parts
from mcub.schema import Sample

DEFAULT_SYSTEM_PROMPT = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving auditory and "
    "visual inputs, as well as generating text and speech."
)
"""The system prompt of the Qwen2.5-Omni model card and of transformers' Qwen2.5-Omni documentation."""


def content_parts(sample: Sample) -> list[dict[str, Any]]:
    """The user turn's parts: each placeholder as a part of its modality, the text between them as text parts, as
    written (nothing stripped; empty text left out)."""
    texts, placed = placeholder_parts(sample.prompt)
    carried = [modality for modality, _ in sample.media]
    if placed != carried:
        raise UnsupportedInput(
            f"sample {sample.id}: placeholders {'+'.join(placed) or 'none'} but media {'+'.join(carried) or 'none'}"
        )
    parts: list[dict[str, Any]] = []
    for index, text in enumerate(texts):
        if text:
            parts.append({"type": "text", "text": text})
        if index < len(placed):
            parts.append({"type": placed[index]})
    return parts


def conversation(sample: Sample, system_prompt: str) -> list[dict[str, Any]]:
    """The messages the chat template renders for a sample."""
    return [
        {"role": "system", "content": [{"type": "text", "text": system_prompt}]},
        {"role": "user", "content": content_parts(sample)},
    ]
