"""Shared prefixes: the samples of a batch whose inputs start alike (the same token ids, the same media blocks at the
same positions, hence the same routes) are grouped, so that the composed LM prefills each shared prefix once and
branches its KV cache to each sample's suffix (`pack_shared`; `ComposedLM` runs the result)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mcub.models.modelcompose.llm import ComposedLM, SharedPrefixBatch, Span

MIN_SHARED_POSITIONS = 64
"""The fewest positions worth a prefill of their own: a shorter prefix (Vicuna's system text alone is about 40) saves
less than the second forward pass costs."""


@dataclass(frozen=True)
class PrefixGroup:
    """Rows of a batch (two or more, in batch order) whose first `positions` input positions are the same."""

    rows: tuple[int, ...]
    positions: int


def same_block(first: Span, second: Span) -> bool:
    """Two modality blocks are the same input: one tensor, or blocks made from the same media (`source`) alike."""
    if first.route != second.route or len(first) != len(second):
        return False
    return first.embeddings is second.embeddings or (first.source is not None and first.source == second.source)


def common_positions(first: Sequence[Span], second: Sequence[Span]) -> int:
    """How many leading positions two samples' spans have in common (route, token ids and media blocks alike)."""
    shared = 0
    for one, other in zip(first, second, strict=False):
        if one.route != other.route:
            break
        if one.embeddings is None and other.embeddings is None:
            same = len(one) if one.token_ids == other.token_ids else _common_length(one.token_ids, other.token_ids)
            shared += same
            if same != len(one) or same != len(other):
                break
        elif one.embeddings is not None and other.embeddings is not None and same_block(one, other):
            shared += len(one)
        else:
            break
    return shared


def _common_length(first: tuple[int, ...], second: tuple[int, ...]) -> int:
    for index, (a, b) in enumerate(zip(first, second, strict=False)):
        if a != b:
            return index
    return min(len(first), len(second))


def shared_prefixes(samples: Sequence[Sequence[Span]], min_positions: int = MIN_SHARED_POSITIONS) -> list[PrefixGroup]:
    """Groups of rows sharing at least `min_positions` leading positions (one level: a prefix is shared by its group
    alone). Each row, in batch order, joins the group (led by its first row) it keeps the longest prefix with, if
    that adds to the positions computed once less (n rows sharing p positions save (n - 1) p) and no later row
    shares more with it (then it leads a group of its own). A prefix always leaves each row at least one position of
    its own (the one whose logits come next). Rows in no group share nothing."""
    lengths = [sum(map(len, spans)) for spans in samples]
    groups: list[tuple[list[int], int]] = []
    for row, spans in enumerate(samples):
        best, best_positions = None, 0
        for index, (rows, positions) in enumerate(groups):
            kept = min(positions, common_positions(samples[rows[0]], spans), lengths[row] - 1)
            gain = len(rows) * kept - (len(rows) - 1) * positions
            if kept >= min_positions and gain > 0 and kept > best_positions:
                best, best_positions = index, kept
        later = max((common_positions(spans, other) for other in samples[row + 1 :]), default=0)
        if best is None or later > best_positions:
            groups.append(([row], lengths[row] - 1))
        else:
            groups[best] = ([*groups[best][0], row], best_positions)
    return [PrefixGroup(tuple(rows), positions) for rows, positions in groups if len(rows) > 1]


def pack_shared(lm: ComposedLM, samples: Sequence[Sequence[Span]], groups: Sequence[PrefixGroup]) -> SharedPrefixBatch:
    """The batch of `samples` with each group's prefix (its first row's) packed once and every row's suffix after it.
    A row in no group prefills its own input but the last positions alongside the prefixes, as many as the longest
    suffix of a group's row (a shorter row runs whole in the suffixes), so that the cache is about as wide as the
    longest input, not the longest prefix plus the longest input."""
    import torch

    lengths = [sum(map(len, spans)) for spans in samples]
    owner, shared, offsets = [0] * len(samples), [0] * len(samples), [0] * len(samples)
    for index, group in enumerate(groups):
        for row in group.rows:
            owner[row], shared[row], offsets[row] = index, 1, group.positions
    width = max(lengths[row] - group.positions for group in groups for row in group.rows)
    prefixes = [split_spans(samples[group.rows[0]], group.positions)[0] for group in groups]
    for row, length in enumerate(lengths):
        if not shared[row] and length > width:
            owner[row], shared[row], offsets[row] = len(prefixes), 1, length - width
            prefixes.append(split_spans(samples[row], length - width)[0])
    suffixes = [split_spans(spans, offsets[row])[1] for row, spans in enumerate(samples)]
    device = lm.device
    return SharedPrefixBatch(
        lm.pack(prefixes),
        lm.pack(suffixes),
        torch.tensor(owner).to(device, non_blocking=True),
        torch.tensor(shared).to(device, non_blocking=True),
        torch.tensor(offsets).to(device, non_blocking=True),
    )


def split_spans(spans: Sequence[Span], positions: int) -> tuple[list[Span], list[Span]]:
    """The spans of the first `positions` positions and those of the rest (a span across the cut is cut in two)."""
    head: list[Span] = []
    tail: list[Span] = []
    left = positions
    for span in spans:
        if left >= len(span):
            head.append(span)
            left -= len(span)
            continue
        if left:
            head.append(_cut(span, 0, left))
            tail.append(_cut(span, left, len(span)))
            left = 0
        else:
            tail.append(span)
    return head, tail


def _cut(span: Span, start: int, end: int) -> Span:
    if span.embeddings is None:
        return Span(span.route, token_ids=span.token_ids[start:end])
    source = None if span.source is None else (span.source, start, end)
    return Span(span.route, embeddings=span.embeddings[start:end], source=source)
