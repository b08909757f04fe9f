"""Conversation templates and placeholder handling."""

from __future__ import annotations

import re

from mcub.modalities import PLACEHOLDERS, Modality

VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_ANY_PLACEHOLDER = "|".join(re.escape(placeholder) for placeholder in PLACEHOLDERS.values())
_LABELLED_PLACEHOLDER_LINE = re.compile(rf"^[ \t]*(?:\w+:[ \t]*)?(?:{_ANY_PLACEHOLDER})[ \t]*\n", re.MULTILINE)
_PLACEHOLDER = re.compile(_ANY_PLACEHOLDER)
_MODALITY_OF: dict[str, Modality] = {placeholder: modality for modality, placeholder in PLACEHOLDERS.items()}


def vicuna_v1(human: str) -> str:
    """The vicuna_v1 prompt of one human turn, ending where the assistant's answer starts (no BOS)."""
    return f"{VICUNA_V1_SYSTEM} USER: {human} ASSISTANT:"


def strip_placeholders(text: str) -> str:
    """The text without media: lines holding only a (labelled) placeholder go, other placeholders are removed."""
    return _PLACEHOLDER.sub("", _LABELLED_PLACEHOLDER_LINE.sub("", text)).strip()


def placeholder_parts(text: str) -> tuple[list[str], list[Modality]]:
    """The text around the placeholders (one more piece than placeholders, empty pieces kept) and the placeholders'
    modalities in order: how a chat adapter lays out a turn's text and media parts."""
    return _PLACEHOLDER.split(text), [_MODALITY_OF[found] for found in _PLACEHOLDER.findall(text)]
