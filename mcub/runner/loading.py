"""Media loading: DataLoader workers decode each sample's media (or read its cached encoder features), one sample
per fetch, and the samples are regrouped into the planned batches as they arrive. A file that several samples of
a batch share is decoded (and hashed) once per worker for that batch."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mcub.conditions import media_edits
from mcub.conditions.inputs import signal_edit
from mcub.errors import MediaError
from mcub.hashing import file_sha256
from mcub.media import MediaInput, SignalEdit, check_file, load_media, preprocessing_names
from mcub.media.limits import DEFAULT_LIMITS, MediaLimits, check_limits
from mcub.modalities import Modality
from mcub.models.base import Model
from mcub.models.feature_cache import FeatureCache
from mcub.schema import Sample


@dataclass
class LoadedSample:
    """A sample with its decoded media, or the reason it cannot be posed."""

    sample: Sample
    media: list[MediaInput] = field(default_factory=list)
    provenance: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    decode_s: float = 0.0

    def pin_memory(self) -> LoadedSample:
        """A copy whose media tensors sit in page-locked memory (called by the DataLoader's pinning thread)."""
        media = [
            MediaInput(m.modality, m.path, {k: t.pin_memory() for k, t in m.tensors.items()}, m.provenance)
            for m in self.media
        ]
        return LoadedSample(self.sample, media, self.provenance, self.error, self.decode_s)


class SampleDataset:
    """Map-style dataset: decoding a sample's media (or reading its cached encoder features) happens in the
    DataLoader worker that fetches it."""

    def __init__(
        self,
        samples: list[Sample],
        preprocessing: dict[str, str] | None,
        feature_cache: FeatureCache | None = None,
        limits: MediaLimits | None = DEFAULT_LIMITS,
    ):
        self.samples = samples
        self.preprocessing = preprocessing
        self.feature_cache = feature_cache
        self.limits = limits

    @classmethod
    def for_model(cls, samples: list[Sample], model: Model, limits: MediaLimits = DEFAULT_LIMITS) -> SampleDataset:
        """The samples as `model` reads them: decoded by its preprocessings, or (a model that reads the files itself)
        checked against `limits`, or (a model that reads no media) only checked to exist."""
        return cls(samples, model.media_preprocessing, model.feature_cache, limits if model.reads_media else None)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> LoadedSample:
        return self.load(index, {})

    def load(self, index: int, decoded: DecodedMedia) -> LoadedSample:
        """The sample at `index` with its media, taking files from `decoded` (the media already decoded for this
        batch) and adding those it decodes."""
        sample = self.samples[index]
        if sample.error:
            return LoadedSample(sample, error=f"data error: {sample.error}")
        start = time.perf_counter()
        loaded = LoadedSample(sample)
        edits = media_edits(sample)
        try:
            for (modality, path), steps in zip(sample.media, edits, strict=True):
                if self.preprocessing is None:
                    if steps:
                        raise MediaError(path, "a run condition changes the decoded input, and the model decodes none")
                    if self.limits is None:
                        check_file(path)
                    else:
                        check_limits(modality, path, self.limits)
                    loaded.provenance.append({"path": path, "modality": modality, "decoded": False})
                    continue
                media = self._load(modality, path, decoded, signal_edit(modality, steps))
                loaded.media.append(media)
                loaded.provenance.append({"modality": modality, **media.provenance})
        except MediaError as error:
            loaded.error = f"media error: {error}"
        loaded.decode_s = time.perf_counter() - start
        return loaded

    def _load(self, modality: Modality, path: str, decoded: DecodedMedia, edit: SignalEdit | None) -> MediaInput:
        """The file as `decoded` has it; else its cached features, when the cache has them (never for an edited
        input); else the decoded file, changed by `edit` when given."""
        name = self.preprocessing.get(modality) or preprocessing_names(modality)[0]
        key = _file_version(modality, path, name, edit.key if edit is not None else None)
        if key in decoded:
            return decoded[key]
        limits = self.limits or DEFAULT_LIMITS
        if self.feature_cache is None or edit is not None:
            media = load_media(modality, path, name, limits=limits, edit=edit)
        else:
            check_file(path)
            digest = file_sha256(path)
            media = self.feature_cache.load(modality, path, digest, name) or load_media(
                modality, path, name, digest, limits
            )
        if key is not None:
            decoded[key] = media
        return media


DecodedMedia = dict[tuple, MediaInput]
"""Media decoded for one batch, by `_file_version`."""


def _file_version(modality: Modality, path: str, preprocessing: str, edit: str | None = None) -> tuple | None:
    """What a decoded file is kept under: the file's path, preprocessing and signal edit, and its size, modification
    time and inode, so that a file changed on disk is decoded again. None when the file cannot be read (decoding
    reports why)."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (modality, path, preprocessing, edit, status.st_size, status.st_mtime_ns, status.st_ino)


class _BatchDataset:
    """What the DataLoader fetches from: (batch number, sample index) pairs, in order; each worker keeps the media
    it decoded for its current batch and drops them when the next batch starts."""

    def __init__(self, dataset: SampleDataset):
        self.dataset = dataset
        self.batch: int | None = None
        self.decoded: DecodedMedia = {}

    def __getitem__(self, key: tuple[int, int]) -> LoadedSample:
        batch, index = key
        if batch != self.batch:
            self.batch, self.decoded = batch, {}
        return self.dataset.load(index, self.decoded)


class _QueueSampleSampler:
    """Yields (batch number, sample index) for the batches this rank claims from the shared counter, batch after
    batch, and notes each claimed batch's size so that the samples can be regrouped where they arrive (in order)."""

    def __init__(self, batches: list[list[int]], claim: Callable[[], int]):
        self.batches = batches
        self.claim = claim
        self.sizes: deque[int] = deque()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        while (batch := self.claim()) < len(self.batches):
            self.sizes.append(len(self.batches[batch]))
            for index in self.batches[batch]:
                yield batch, index

    def __len__(self) -> int:
        return sum(len(batch) for batch in self.batches)


def load_batches(
    dataset: SampleDataset,
    batches: list[list[int]],
    claim: Callable[[], int],
    workers: int,
    pin_memory: bool,
    progress: bool,
    name: str,
) -> Iterator[list[LoadedSample]]:
    """Batches of decoded samples, for the batches this rank claims. Workers fetch single samples, so the samples
    of one batch are decoded in parallel (the first batch is ready after one sample's decoding per worker, not a
    whole batch's), and about two batches are kept in flight. Without workers or pinned memory, the samples are
    loaded in this process, without a DataLoader (nor torch, for a model that computes with none)."""
    if not batches:
        return
    from tqdm import tqdm

    sampler = _QueueSampleSampler(batches, claim)
    if workers or pin_memory:
        from torch.utils.data import DataLoader

        loader: Iterable[LoadedSample] = DataLoader(
            _BatchDataset(dataset),
            batch_size=None,
            sampler=sampler,
            num_workers=workers,
            collate_fn=_as_is,
            pin_memory=pin_memory,
            prefetch_factor=max(2, -(-2 * max(len(batch) for batch in batches) // workers)) if workers else None,
        )
    else:
        fetch = _BatchDataset(dataset)
        loader = (fetch[key] for key in sampler)
    with tqdm(total=len(sampler), desc=name, unit="sample", disable=not progress, dynamic_ncols=True) as bar:
        items: list[LoadedSample] = []
        for item in loader:
            items.append(item)
            if len(items) == sampler.sizes[0]:
                sampler.sizes.popleft()
                yield items
                bar.update(len(items))
                items = []


def _as_is(item: LoadedSample) -> LoadedSample:
    return item
