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


def length_sorted_batches(samples: list[Sample], batch_size: int) -> list[list[int]]:
    """Indices into `samples`, batched so that samples of similar cost (media count, prompt length) share a
    batch, and questions on the same media files sit side by side (the model encodes shared media once per
    batch); the costliest batches come first, so memory problems show at once."""
    longest: dict[tuple, int] = {}
    for sample in samples:
        longest[sample.media] = max(longest.get(sample.media, 0), len(sample.prompt))

    def cost(i: int) -> tuple:
        sample = samples[i]
        return (-len(sample.media), -longest[sample.media], sample.media, -len(sample.prompt), i)

    order = sorted(range(len(samples)), key=cost)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


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
