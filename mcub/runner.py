"""The runner: decodes media in DataLoader workers, feeds the model batches of similar length, scores each
output and appends a record per sample, resumes from whatever records exist, and shares the samples between
torchrun ranks through a work queue."""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcub.data import Sample, TaskData
from mcub.errors import McubError, MediaError, UnsupportedInput
from mcub.hashing import file_sha256
from mcub.judge import JudgeConfig
from mcub.media import MediaInput, check_file, load_media, preprocessing_names
from mcub.modalities import Modality
from mcub.models.base import Model, PreparedBatch
from mcub.models.feature_cache import FeatureCache
from mcub.results import RecordLog, read_records, write_records
from mcub.scoring import Outcome, authors_postprocess, score_generated, score_loglik, score_paper
from mcub.tasks import TaskSpec


class RunError(McubError):
    """A run cannot go on (strict mode met an error, or a task cannot be run as asked)."""


@dataclass(frozen=True)
class RunSettings:
    """How samples are run: protocol (None: each task's own), batching (`batch_size` None: the largest that
    fits, see `find_batch_size`), decoding limits, seed, strictness."""

    protocol: str | None = None
    batch_size: int | None = 1
    num_workers: int = 0
    max_new_tokens: int = 128
    seed: int = 0
    strict: bool = False
    limit: int | None = None
    pin_memory: bool = False
    embedder: str | None = None
    judge: JudgeConfig | None = None


class Distributed:
    """This process's place among torchrun ranks (or alone), with a shared counter for the work queue."""

    def __init__(self, rank: int = 0, world_size: int = 1, store: Any = None):
        self.rank = rank
        self.world_size = world_size
        self._store = store
        self._local_counters: dict[str, int] = {}

    @classmethod
    def from_environment(cls, device: str) -> Distributed:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        import torch.distributed as dist

        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return cls(dist.get_rank(), world_size, dist.distributed_c10d._get_default_store())

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def claim(self, key: str) -> int:
        """The next unclaimed index under `key`, atomically across ranks."""
        if self._store is None:
            self._local_counters[key] = self._local_counters.get(key, 0) + 1
            return self._local_counters[key] - 1
        return int(self._store.add(f"mcub/{key}", 1)) - 1

    def share(self, key: str, value: str | None) -> str:
        """The main rank's `value`, on every rank."""
        if self._store is None:
            return value or ""
        if self.is_main:
            self._store.set(f"mcub/{key}", value or "")
        return self._store.get(f"mcub/{key}").decode()

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


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
    ):
        self.samples = samples
        self.preprocessing = preprocessing
        self.feature_cache = feature_cache

    @classmethod
    def for_model(cls, samples: list[Sample], model: Model) -> SampleDataset:
        return cls(samples, model.media_preprocessing, model.feature_cache)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> LoadedSample:
        sample = self.samples[index]
        if sample.error:
            return LoadedSample(sample, error=f"data error: {sample.error}")
        start = time.perf_counter()
        loaded = LoadedSample(sample)
        try:
            for modality, path in sample.media:
                if self.preprocessing is None:
                    check_file(path)
                    loaded.provenance.append({"path": path, "modality": modality, "decoded": False})
                    continue
                media = self._load(modality, path)
                loaded.media.append(media)
                loaded.provenance.append({"modality": modality, **media.provenance})
        except MediaError as error:
            loaded.error = f"media error: {error}"
        loaded.decode_s = time.perf_counter() - start
        return loaded

    def _load(self, modality: Modality, path: str) -> MediaInput:
        """The cached features of the file, when the cache has them; else the decoded file."""
        name = self.preprocessing.get(modality) or preprocessing_names(modality)[0]
        if self.feature_cache is None:
            return load_media(modality, path, name)
        check_file(path)
        digest = file_sha256(path)
        return self.feature_cache.load(modality, path, digest, name) or load_media(modality, path, name, digest)


def protocol_for(task: TaskSpec, settings: RunSettings) -> str:
    """The protocol a task runs under, or a RunError saying why it cannot run under the one asked for."""
    protocol = settings.protocol or task.protocol
    if protocol == "paper" and task.paper_match is None:
        raise RunError(
            f"task {task.name} has no `paper` protocol (the authors scored it with a GPT judge); "
            "use --protocol loglik or generate"
        )
    if protocol == "loglik" and task.answer_type == "text":
        raise RunError(f"task {task.name} has open answers; `loglik` needs options (use paper or generate)")
    if protocol == "open" and not task.metrics:
        raise RunError(f"task {task.name} declares no open-answer metrics; use paper, generate or loglik")
    return protocol


def run_task(
    model: Model, data: TaskData, settings: RunSettings, records_dir: Path, dist: Distributed, progress: bool = True
) -> list[str]:
    """Run every sample of a task that has no record yet; return notes on damaged records that were redone.

    Each rank appends to its own part file; the main rank folds parts into `<task>.jsonl` before and after."""
    task = data.task
    protocol = protocol_for(task, settings)
    samples = data.samples[: settings.limit] if settings.limit is not None else data.samples
    main_file = records_dir / f"{task.name}.jsonl"
    notes: list[str] = []
    if dist.is_main:
        notes = consolidate_records(records_dir, task.name)
    dist.barrier()
    recorded, _ = read_records(main_file, repair=False)
    current = (data.question_sha256, data.answer_sha256)
    done = {i for i, r in recorded.items() if (r.get("question_sha256"), r.get("answer_sha256")) == current}
    if len(done) < len(recorded) and dist.is_main:
        notes.append(f"{main_file}: {len(recorded) - len(done)} record(s) made on other task data are redone")
    pending = [sample for sample in samples if sample.id not in done]
    batch_size = settings.batch_size or find_batch_size(model, pending, data, protocol, settings)
    batches = length_sorted_batches(pending, batch_size)
    queue_key = f"{task.name}/{hashlib.sha256(os.urandom(8)).hexdigest()[:8]}"
    queue_key = dist.share(f"{task.name}/queue", queue_key)
    log = RecordLog(records_dir / f"{task.name}.rank{dist.rank}.jsonl")
    try:
        claim = lambda: dist.claim(queue_key)  # noqa: E731
        for items in _loader(pending, batches, model, settings, claim, progress and dist.is_main, task.name):
            log.append(evaluate_batch(model, items, data, protocol, settings))
    finally:
        log.close()
    dist.barrier()
    if dist.is_main:
        notes += consolidate_records(records_dir, task.name)
    return notes


def consolidate_records(records_dir: Path, task_name: str) -> list[str]:
    """Fold every part file of a task into `<task>.jsonl` (one record per id), repairing damaged lines."""
    main_file = records_dir / f"{task_name}.jsonl"
    merged, notes = read_records(main_file)
    parts = sorted(records_dir.glob(f"{task_name}.rank*.jsonl"))
    for part in parts:
        records, damaged = read_records(part)
        merged.update(records)
        notes += damaged
    if parts or notes or not main_file.exists():
        records_dir.mkdir(parents=True, exist_ok=True)
        write_records(main_file, list(merged.values()))
        for part in parts:
            part.unlink()
    return notes


AUTO_BATCH_SIZES = (64, 32, 16, 8, 4, 2, 1)
CPU_MAX_BATCH_SIZE = 8


def find_batch_size(model: Model, samples: list[Sample], data: TaskData, protocol: str, settings: RunSettings) -> int:
    """The largest batch (of AUTO_BATCH_SIZES; at most CPU_MAX_BATCH_SIZE without CUDA) whose costliest samples
    run without running out of GPU memory. The probe's outputs are discarded."""
    import torch

    if not samples:
        return 1
    order = [samples[i] for batch in length_sorted_batches(samples, len(samples)) for i in batch]
    limit = max(AUTO_BATCH_SIZES) if torch.cuda.is_available() else CPU_MAX_BATCH_SIZE
    sizes = [size for size in AUTO_BATCH_SIZES if size <= min(limit, len(samples)) or size == 1]
    dataset = SampleDataset.for_model(order, model)
    loaded = [dataset[index] for index in range(min(sizes[0], len(order)))]  # decoded once, for every probe
    for size in sizes:
        try:
            _probe(model, [item for item in loaded[:size] if item.error is None], protocol, data.task, settings)
        except torch.cuda.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        return size
    raise RunError(f"{data.task.name}: even one sample does not fit in GPU memory")


def _probe(model: Model, items: list[LoadedSample], protocol: str, task: TaskSpec, settings: RunSettings) -> None:
    """Run `items` as one batch, leaving out the samples the model refuses on their own (UnsupportedInput: the
    run records them as errors, they say nothing about memory)."""
    if not items:
        return
    try:
        prepared = model.prepare([item.sample for item in items], [item.media for item in items])
        _answers(model, prepared, protocol, task, settings)
    except UnsupportedInput:
        accepted = [item for item in items if _accepted(model, item)]
        if len(accepted) == len(items):
            raise
        _probe(model, accepted, protocol, task, settings)


def _accepted(model: Model, item: LoadedSample) -> bool:
    try:
        model.prepare([item.sample], [item.media])
    except UnsupportedInput:
        return False
    return True


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


class _QueueSampleSampler:
    """Yields the sample indices of the batches this rank claims from the shared counter, batch after batch, and
    notes each claimed batch's size so that the samples can be regrouped where they arrive (in order)."""

    def __init__(self, batches: list[list[int]], claim: Callable[[], int]):
        self.batches = batches
        self.claim = claim
        self.sizes: deque[int] = deque()

    def __iter__(self) -> Iterator[int]:
        while (index := self.claim()) < len(self.batches):
            self.sizes.append(len(self.batches[index]))
            yield from self.batches[index]

    def __len__(self) -> int:
        return sum(len(batch) for batch in self.batches)


def _loader(
    samples: list[Sample],
    batches: list[list[int]],
    model: Model,
    settings: RunSettings,
    claim: Callable[[], int],
    progress: bool,
    name: str,
) -> Iterator[list[LoadedSample]]:
    """Batches of decoded samples. Workers fetch single samples, so the samples of one batch are decoded in
    parallel (the first batch is ready after one sample's decoding per worker, not a whole batch's), and about
    two batches are kept in flight."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    if not batches:
        return
    sampler = _QueueSampleSampler(batches, claim)
    workers = settings.num_workers
    loader = DataLoader(
        SampleDataset.for_model(samples, model),
        batch_size=None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=_as_is,
        pin_memory=settings.pin_memory,
        prefetch_factor=max(2, -(-2 * max(len(batch) for batch in batches) // workers)) if workers else None,
    )
    with tqdm(total=len(samples), desc=name, unit="sample", disable=not progress, dynamic_ncols=True) as bar:
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


def evaluate_batch(
    model: Model, items: list[LoadedSample], data: TaskData, protocol: str, settings: RunSettings
) -> list[dict[str, Any]]:
    """Run the model on the posable samples of a batch and make one record per sample."""
    ready = [item for item in items if item.error is None]
    if settings.strict:
        for item in items:
            if item.error:
                raise RunError(f"{data.task.name} sample {item.sample.id}: {item.error}")
    prompts: list[str | None] = [None] * len(ready)
    answers: list[tuple[str | None, dict[str, float] | None]] = [(None, None)] * len(ready)
    model_error = None
    start = time.perf_counter()
    if ready:
        try:
            prepared = model.prepare([item.sample for item in ready], [item.media for item in ready])
            prompts = list(prepared.prompts)
            answers = _answers(model, prepared, protocol, data.task, settings)
        except Exception as error:  # noqa: BLE001 - recorded per sample below; strict mode re-raises
            if settings.strict:
                raise
            model_error = f"model error: {type(error).__name__}: {error}"
    if model_error is not None and len(ready) > 1:
        # One sample's failure (too long, out of memory at this batch size) must not cost its batch-mates their
        # answers: each is run again on its own, so an error lands only on the samples that cause it.
        return [record for item in items for record in evaluate_batch(model, [item], data, protocol, settings)]
    model_s = (time.perf_counter() - start) / max(1, len(ready))
    by_id = {id(item): index for index, item in enumerate(ready)}
    records = []
    for item in items:
        index = by_id.get(id(item))
        error = item.error or model_error
        prompt, (output, logliks) = (prompts[index], answers[index]) if index is not None else (None, (None, None))
        outcome = _outcome(item.sample, data.task, protocol, output, logliks, settings) if error is None else None
        records.append(
            _record(
                item, data, protocol, prompt, output, logliks, outcome, error, model_s if index is not None else 0.0
            )
        )
    return records


def _answers(
    model: Model, prepared: PreparedBatch, protocol: str, task: TaskSpec, settings: RunSettings
) -> list[tuple[str | None, dict[str, float] | None]]:
    if protocol == "loglik":
        keys = [list(sample.options) for sample in prepared.samples]
        continuations = [
            keys_ if task.answer_type == "letter" else [sample.options[key] for key in keys_]
            for sample, keys_ in zip(prepared.samples, keys, strict=True)
        ]
        scores = model.loglik(prepared, continuations)
        return [(None, dict(zip(keys_, values, strict=True))) for keys_, values in zip(keys, scores, strict=True)]
    stop = "first-character" if protocol == "paper" and task.paper_match == "first-character" else "eos"  # open: eos
    return [(text, None) for text in model.generate(prepared, settings.max_new_tokens, stop)]


def _outcome(
    sample: Sample,
    task: TaskSpec,
    protocol: str,
    output: str | None,
    logliks: dict[str, float] | None,
    settings: RunSettings,
) -> Outcome:
    if protocol == "open":
        from mcub.open_metrics import embedder, open_scores

        needs_encoder = {"sbert", "class_nearest"} & set(task.metrics)
        encoder = embedder(settings.embedder) if needs_encoder else None
        answer = authors_postprocess(output or "")
        scores = open_scores(answer, sample.answer, sample.options, task.metrics, encoder)
        correct = scores["class_named"] == 100.0 if "class_named" in scores else None
        judgement = None
        if settings.judge is not None and task.judgement is not None:
            from mcub.judge import judge_for

            closed = task.judgement == "close-set"
            reference = sample.answer if closed else sample.options.get(sample.answer, sample.answer)
            verdict = judge_for(settings.judge).judge(task.judgement, answer, reference, sample.options or None)
            judgement = verdict.record()
            scores["judge"] = verdict.verdict if verdict.verdict is not None else 0.0
        return Outcome(None, "open", correct, False, scores, judgement)
    if protocol == "loglik":
        return score_loglik(logliks or {}, sample.answer)
    if protocol == "paper":
        return score_paper(authors_postprocess(output or ""), sample.answer, sample.options, task.paper_match or "")
    return score_generated(output or "", sample.answer, sample.options)


def _correct(outcome: Outcome | None, task: TaskSpec, protocol: str) -> bool | None:
    """Right or wrong; None for open answers without a class (their scores stand instead, 0 on error)."""
    if protocol == "open" and "class_named" not in task.metrics:
        return None
    return bool(outcome and outcome.correct)


def _record(
    item: LoadedSample,
    data: TaskData,
    protocol: str,
    prompt: str | None,
    output: str | None,
    logliks: dict[str, float] | None,
    outcome: Outcome | None,
    error: str | None,
    model_s: float,
) -> dict[str, Any]:
    sample = item.sample
    meta = {key: value for key, value in sample.meta.items() if key != "question_index"}
    return {
        "task": sample.task,
        "id": sample.id,
        "question_index": sample.meta["question_index"],
        "condition": "default",
        "protocol": protocol,
        "question_sha256": data.question_sha256,
        "answer_sha256": data.answer_sha256,
        "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest() if prompt is not None else None,
        "options": sample.options,
        "gold": sample.answer,
        "output": output,
        "extracted": outcome.extracted if outcome else None,
        "extraction": outcome.method if outcome else None,
        "unparseable": outcome.unparseable if outcome else False,
        "option_logliks": logliks,
        "scores": outcome.scores if outcome else None,
        "judgement": outcome.judgement if outcome else None,
        "correct": _correct(outcome, data.task, protocol),
        "error": error,
        "media": item.provenance,
        "meta": meta,
        "timing": {"decode_s": round(item.decode_s, 6), "model_s": round(model_s, 6)},
    }


def summarize(
    datasets: list[TaskData],
    records_dir: Path,
    settings: RunSettings,
    group_members: dict[str, list[str]],
    notes: dict[str, list[str]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Task and group summaries, computed from the record files alone."""
    from mcub.results import TaskSummary
    from mcub.scoring import group_metrics, task_metrics

    tasks = {}
    for data in datasets:
        samples = data.samples[: settings.limit] if settings.limit is not None else data.samples
        records, _ = read_records(records_dir / f"{data.task.name}.jsonl", repair=False)
        tasks[data.task.name] = TaskSummary(
            task=data.task.name,
            family=data.task.family,
            protocol=protocol_for(data.task, settings),
            paper_match=data.task.paper_match,
            question_file=str(data.question_file),
            answer_file=str(data.answer_file),
            question_sha256=data.question_sha256,
            answer_sha256=data.answer_sha256,
            data_problems=[str(problem) for problem in data.record_problems] + notes.get(data.task.name, []),
            metrics=task_metrics([sample.id for sample in samples], records, data.task.breakdown, settings.seed),
        )
    groups = {
        name: group_metrics({task: tasks[task].metrics for task in members}, settings.seed)
        for name, members in group_members.items()
        if all(task in tasks for task in members)
    }
    return tasks, groups
