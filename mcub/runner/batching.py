"""Batch planning: samples of similar cost share a batch, questions on the same media sit side by side, the
costliest batches come first; and `auto` batch size, the largest batch whose costliest samples fit in memory."""

from __future__ import annotations

from collections.abc import Callable

from mcub.errors import RunError, UnsupportedInput
from mcub.media.limits import DEFAULT_LIMITS, MediaLimits
from mcub.models.base import Model
from mcub.runner.loading import LoadedSample, SampleDataset
from mcub.schema import Sample

AUTO_BATCH_SIZES = (64, 32, 16, 8, 4, 2, 1)
CPU_MAX_BATCH_SIZE = 8


LOOKAHEAD_MEDIA_SETS = 8
"""How many of the following media sets may fill a batch's room, so that the questions on the next media set, which
would not fit in that room, need not be split over two batches."""


def length_sorted_batches(samples: list[Sample], batch_size: int) -> list[list[int]]:
    """Indices into `samples`, batched so that samples of similar cost (media count, prompt length) share a
    batch, and questions on the same media files sit side by side (the model encodes shared media once per
    batch, and prefills their shared prefix once); the costliest batches come first, so memory problems show at once.

    The questions on one media set that fit in a batch are kept in one where one of the next LOOKAHEAD_MEDIA_SETS
    media sets fills the room they leave (so batches stay full); otherwise they are split as they come."""
    longest: dict[tuple, int] = {}
    for sample in samples:
        longest[sample.media] = max(longest.get(sample.media, 0), len(sample.prompt))

    def cost(i: int) -> tuple:
        sample = samples[i]
        return (-len(sample.media), -longest[sample.media], sample.media, -len(sample.prompt), i)

    pending: list[list[int]] = []
    for index in sorted(range(len(samples)), key=cost):
        if pending and samples[pending[-1][0]].media == samples[index].media:
            pending[-1].append(index)
        else:
            pending.append([index])
    pending.reverse()  # popped from the end
    batches: list[list[int]] = []
    current: list[int] = []
    while pending:
        group = pending.pop()
        if len(current) + len(group) > batch_size >= len(group):
            for position in range(len(pending) - 1, max(-1, len(pending) - 1 - LOOKAHEAD_MEDIA_SETS), -1):
                if len(current) + len(pending[position]) <= batch_size:
                    current += pending.pop(position)
        for index in group:
            if len(current) == batch_size:
                batches.append(current)
                current = []
            current.append(index)
    if current:
        batches.append(current)
    return batches


def find_batch_size(
    model: Model,
    samples: list[Sample],
    run: Callable[[list[LoadedSample]], object],
    limits: MediaLimits = DEFAULT_LIMITS,
) -> int:
    """The largest batch (of AUTO_BATCH_SIZES; at most CPU_MAX_BATCH_SIZE without CUDA) whose costliest samples
    `run` (prepare and answer, outputs discarded) without running out of GPU memory (media decoded within
    `limits`)."""
    import torch

    if not samples:
        return 1
    order = [samples[i] for batch in length_sorted_batches(samples, len(samples)) for i in batch]
    limit = max(AUTO_BATCH_SIZES) if torch.cuda.is_available() else CPU_MAX_BATCH_SIZE
    sizes = [size for size in AUTO_BATCH_SIZES if size <= min(limit, len(samples)) or size == 1]
    dataset = SampleDataset.for_model(order, model, limits)
    loaded = [dataset[index] for index in range(min(sizes[0], len(order)))]  # decoded once, for every probe
    for size in sizes:
        try:
            _probe(model, [item for item in loaded[:size] if item.error is None], run)
        except torch.cuda.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        return size
    raise RunError(f"{samples[0].task}: even one sample does not fit in GPU memory")


def _probe(model: Model, items: list[LoadedSample], run: Callable[[list[LoadedSample]], object]) -> None:
    """Run `items` as one batch, leaving out the samples the model refuses on their own (UnsupportedInput: the
    run records them as errors, they say nothing about memory)."""
    if not items:
        return
    try:
        run(items)
    except UnsupportedInput:
        accepted = [item for item in items if _accepted(model, item)]
        if len(accepted) == len(items):
            raise
        _probe(model, accepted, run)


def _accepted(model: Model, item: LoadedSample) -> bool:
    try:
        model.prepare([item.sample], [item.media])
    except UnsupportedInput:
        return False
    return True
