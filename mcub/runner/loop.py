"""The batch loop: for every sample of a task that has no record yet, pose it to the model with its decoded media
and append one raw record (what was asked, what came back, the media provenance, the error) per sample. Each rank
appends to its own part file; the main rank folds the parts into `<task>.jsonl` before and after."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from mcub.conditions import DEFAULT_CONDITION
from mcub.data import TaskData
from mcub.errors import RunError
from mcub.media.limits import DEFAULT_LIMITS, MediaLimits
from mcub.models.base import Model, PreparedBatch
from mcub.protocols import Answer, Protocol
from mcub.results import RecordFile, RecordLog, consolidate_records, read_record_file
from mcub.runner.batching import find_batch_size, length_sorted_batches
from mcub.runner.distributed import Distributed
from mcub.runner.loading import LoadedSample, SampleDataset, load_batches
from mcub.runner.receipts import receipt_problem
from mcub.schema import Decoding, MediaReceipt, Record, RecordFigures
from mcub.tasks import TaskSpec


@dataclass(frozen=True)
class RunSettings:
    """How samples are run: batching (`batch_size` None: the largest that fits), decoding workers, the first
    `limit` samples only, strictness (abort on the first error), pinned host memory for the copies to the GPU, the
    limits on what a media file may ask the decoders for, the run conditions' label every record carries."""

    batch_size: int | None = 1
    num_workers: int = 0
    strict: bool = False
    limit: int | None = None
    pin_memory: bool = False
    media_limits: MediaLimits = DEFAULT_LIMITS
    condition: str = DEFAULT_CONDITION


@dataclass(frozen=True)
class Query:
    """What a task's samples are asked: the protocol's decoding (text, or the log-likelihoods of continuations)."""

    task: TaskSpec
    protocol: Protocol
    decoding: Decoding

    def ask(self, model: Model, prepared: PreparedBatch) -> list[tuple[str | None, dict[str, float] | None]]:
        """(output, option log-likelihoods) per sample of the batch."""
        if self.decoding.kind == "loglik":
            keys = [list(sample.options) for sample in prepared.samples]
            continuations = [
                self.protocol.continuations(Answer(sample.answer, sample.options), self.task)
                for sample in prepared.samples
            ]
            scores = model.loglik(prepared, continuations)
            return [(None, dict(zip(k, values, strict=True))) for k, values in zip(keys, scores, strict=True)]
        texts = model.generate(prepared, self.decoding.max_new_tokens, self.decoding.stop)
        return [(text, None) for text in texts]

    def answer_batch(self, model: Model, items: list[LoadedSample]):
        """Prepare decoded samples as one batch and ask it: the rendered prompts, the answers and the media receipts
        (None per sample where the model gave none)."""
        prepared = model.prepare([item.sample for item in items], [item.media for item in items])
        answers = self.ask(model, prepared)
        receipts = prepared.receipts if prepared.receipts is not None else [None] * len(items)
        if len(receipts) != len(items):
            raise RunError(f"{type(model).__name__} gave receipts for {len(receipts)} of {len(items)} samples")
        return list(prepared.prompts), answers, list(receipts)


@dataclass
class TaskRecords:
    """What running a task leaves: its records file as folded, parsed (on the main rank; None on the others), and
    notes on damaged records and on records that were redone."""

    file: RecordFile | None
    notes: list[str]


BatchScope = Callable[[list[LoadedSample]], AbstractContextManager]
"""Called with each batch just before the model sees it: the context the batch runs in (timers, profiler labels)."""


def run_task(
    model: Model,
    data: TaskData,
    query: Query,
    settings: RunSettings,
    records_dir: Path,
    dist: Distributed,
    progress: bool = True,
    around_batch: BatchScope | None = None,
) -> TaskRecords:
    """Run every sample of a task that has no record made on the task's current data; return the folded records
    (read once on the main rank) and notes. Each batch runs inside `around_batch(batch)` when given."""
    task = data.task
    samples = data.samples[: settings.limit] if settings.limit is not None else data.samples
    main_file = records_dir / f"{task.name}.jsonl"
    notes: list[str] = []
    folded = None
    if dist.is_main:
        folded, notes = consolidate_records(records_dir, task.name, view=RecordFigures)
    dist.barrier()
    recorded = (folded or read_record_file(main_file, repair=False, view=RecordFigures)).records
    current = (data.question_sha256, data.answer_sha256)
    on_data = {i for i, r in recorded.items() if (r.question_sha256, r.answer_sha256) == current}
    done = {i for i in on_data if recorded[i].condition == settings.condition}
    if dist.is_main:
        if len(on_data) < len(recorded):
            notes.append(f"{main_file}: {len(recorded) - len(on_data)} record(s) made on other task data are redone")
        if len(done) < len(on_data):
            notes.append(f"{main_file}: {len(on_data) - len(done)} record(s) made under other conditions than "
                         f"{settings.condition} are redone")  # fmt: skip
    pending = [sample for sample in samples if sample.id not in done]
    if settings.batch_size is None:
        batch_size = find_batch_size(
            model, pending, lambda items: query.answer_batch(model, items), settings.media_limits
        )
    else:
        batch_size = settings.batch_size
    batches = length_sorted_batches(pending, batch_size)
    queue_key = dist.share(f"{task.name}/queue", f"{task.name}/{hashlib.sha256(os.urandom(8)).hexdigest()[:8]}")
    log = RecordLog(records_dir / f"{task.name}.rank{dist.rank}.jsonl")
    try:
        dataset = SampleDataset.for_model(pending, model, settings.media_limits)
        claim = lambda: dist.claim(queue_key)  # noqa: E731
        shown = progress and dist.is_main
        # A model that decodes no media has its files only checked: worker processes would cost more than they do.
        workers = settings.num_workers if model.media_preprocessing is not None else 0
        for items in load_batches(dataset, batches, claim, workers, settings.pin_memory, shown, task.name):
            with around_batch(items) if around_batch is not None else nullcontext():
                log.append(evaluate_batch(model, items, data, query, settings))
    finally:
        log.close()
    dist.barrier()
    if folded is not None:
        folded, damaged = consolidate_records(records_dir, task.name, folded, RecordFigures)
        notes += damaged
    return TaskRecords(folded, notes)


def evaluate_batch(
    model: Model, items: list[LoadedSample], data: TaskData, query: Query, settings: RunSettings
) -> list[Record]:
    """Run the model on the posable samples of a batch and make one raw record per sample."""
    ready = [item for item in items if item.error is None]
    if settings.strict:
        for item in items:
            if item.error:
                raise RunError(f"{data.task.name} sample {item.sample.id}: {item.error}")
    prompts: list[str | None] = [None] * len(ready)
    answers: list[tuple[str | None, dict[str, float] | None]] = [(None, None)] * len(ready)
    receipts: list[list[MediaReceipt] | None] = [None] * len(ready)
    model_error = None
    start = time.perf_counter()
    if ready:
        try:
            prompts, answers, receipts = query.answer_batch(model, ready)
        except Exception as error:  # noqa: BLE001 - recorded per sample below; strict mode re-raises
            if settings.strict:
                raise
            model_error = f"model error: {type(error).__name__}: {error}"
    if model_error is not None and len(ready) > 1:
        # One sample's failure (too long, out of memory at this batch size) must not cost its batch-mates their
        # answers: each is run again on its own, so an error lands only on the samples that cause it.
        return [record for item in items for record in evaluate_batch(model, [item], data, query, settings)]
    model_s = (time.perf_counter() - start) / max(1, len(ready))
    by_id = {id(item): index for index, item in enumerate(ready)}
    records = []
    for item in items:
        index = by_id.get(id(item))
        posed = index is not None and model_error is None
        prompt, (output, logliks) = (prompts[index], answers[index]) if posed else (None, (None, None))
        receipt = receipts[index] if posed else None
        error = item.error or model_error
        if posed and model.reads_media:
            error = receipt_problem(item.sample, receipt)
            if error is not None and settings.strict:
                raise RunError(f"{data.task.name} sample {item.sample.id}: {error}")
        model_share = model_s if index is not None else 0.0
        record = _raw_record(item, data, query, settings.condition, prompt, output, logliks, error, model_share)
        records.append(record.model_copy(update={"receipts": receipt}) if posed and model.reads_media else record)
    return records


def _raw_record(
    item: LoadedSample,
    data: TaskData,
    query: Query,
    condition: str,
    prompt: str | None,
    output: str | None,
    logliks: dict[str, float] | None,
    error: str | None,
    model_s: float,
) -> Record:
    sample = item.sample
    meta = {key: value for key, value in sample.meta.items() if key != "question_index"}
    return Record(
        task=sample.task,
        id=sample.id,
        question_index=sample.meta["question_index"],
        condition=condition,
        protocol=query.protocol.name,
        question_sha256=data.question_sha256,
        answer_sha256=data.answer_sha256,
        prompt_sha256=hashlib.sha256(prompt.encode()).hexdigest() if prompt is not None else None,
        options=sample.options,
        gold=sample.answer,
        decoding=query.decoding if error is None else None,
        output=output,
        option_logliks=logliks,
        extracted=None,
        extraction=None,
        unparseable=False,
        correct=None,
        error=error,
        scored=False,
        media=item.provenance,
        meta=meta,
        timing={"decode_s": round(item.decode_s, 6), "model_s": round(model_s, 6)},
    )
