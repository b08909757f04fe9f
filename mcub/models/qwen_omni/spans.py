"""The media spans of a Qwen2.5-Omni prompt as its processor tokenised it: what each media input occupies."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from mcub.modalities import Modality

COUNTED: dict[Modality, tuple[str, ...]] = {"image": ("image",), "video": ("video", "audio"), "audio": ("audio",)}
"""The tokens that are an input's positions: a video's own audio (use_audio_in_video) is interleaved in its span."""


@dataclass(frozen=True)
class MediaTokens:
    """The token ids of the media placeholders the processor expands, and of the start and end of each span."""

    image: int
    video: int
    audio: int
    starts: frozenset[int]
    ends: frozenset[int]


def media_spans(ids: Sequence[int], tokens: MediaTokens) -> list[Counter[str]]:
    """Each media span of one prompt, in order (from a vision or audio start token to the end token that closes it;
    a video's audio span nests in its vision span), as the count of image, video and audio tokens it holds."""
    kinds = {tokens.image: "image", tokens.video: "video", tokens.audio: "audio"}
    spans: list[Counter[str]] = []
    depth = 0
    for token in ids:
        if token in tokens.starts:
            if depth == 0:
                spans.append(Counter())
            depth += 1
        elif token in tokens.ends:
            depth -= 1
        elif depth and (kind := kinds.get(token)):
            spans[-1][kind] += 1
    return spans


def positions(modality: Modality, span: Counter[str]) -> int:
    """The positions a media input of `modality` takes in its span."""
    return sum(span[kind] for kind in COUNTED[modality])
