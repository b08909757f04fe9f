"""The library entry points: `evaluate(request) -> RunSummary` runs a model on tasks and writes a run directory;
`score_run(run_dir)` rescores a finished run without the model. Both validate everything they can (tasks, data
files, model arguments, protocols) before any weight is read, and compute every figure from the records."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mcub import __version__
from mcub.conditions import ConditionError, condition_label, condition_task, edits_decoded_media
from mcub.data import TaskData, load_task
from mcub.errors import DataError, PeerLost, RunError, RunInterrupted, Terminated
from mcub.models.base import ModelSpec
from mcub.protocols import Protocol, ProtocolError, protocol_for
from mcub.request import EvalRequest
from mcub.results import (
    REQUEST_FILE,
    RecordFile,
    RunFiles,
    check_identity,
    count_saved_records,
    environment,
    git_revision,
    new_run_name,
    resume_run_dir,
    start_run,
    write_records,
    write_summary,
)
from mcub.run_lock import RunLock
from mcub.runner.receipts import media_consumption
from mcub.schema import (
    DataPaths,
    GroupMetrics,
    ModelInfo,
    Record,
    RecordFigures,
    RunSummary,
    ScorerSettings,
    Settings,
    TaskSummary,
)
from mcub.scorer import ScoringContext, check_scorable, recorded_judgements, score_records
from mcub.scoring import group_metrics, task_metrics
from mcub.tasks import Registry, load_registry

if TYPE_CHECKING:
    from mcub.runner.distributed import Distributed

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass
class Plan:
    """What a request resolves to before any weight is read: the model's spec and arguments, the tasks with their
    data and protocols, the tasks skipped and why, the groups the tasks complete."""

    spec: ModelSpec
    model_args: dict
    modalities: frozenset[str]
    device: str
    dtype: str
    datasets: list[TaskData] = field(default_factory=list)
    protocols: dict[str, Protocol] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)


def plan_run(request: EvalRequest, registry: Registry, log: Log = _stderr) -> Plan:
    """Resolve and check the request: model id and arguments, task names, each task's protocol and data files.
    A task the model cannot take is skipped (with the reason) unless it was named, when it is an error."""
    from mcub.models.base import checked_arguments, find_model_spec, load_model_specs, resolve_dtype

    spec = find_model_spec(request.model, load_model_specs())
    arguments = checked_arguments(spec, request.model_args)
    device = resolve_device(request.device) if arguments.computes_on_device or request.device != "auto" else "cpu"
    takes = frozenset(arguments.input_modalities())
    plan = Plan(spec, arguments.effective(), takes, device, resolve_dtype(spec, device, request.dtype))
    named = registry.resolve(request.tasks) if request.tasks else list(registry.tasks.values())
    for task in named:
        missing = set(task.modalities) - takes
        try:
            if missing:
                raise RunError(f"model {spec.name} lacks {', '.join(sorted(missing))}")
            protocol = protocol_for(task, request.protocol)
            refusal = arguments.decoding_refusal(protocol.decoding(task, request.max_new_tokens).kind)
            if refusal is not None:
                raise RunError(f"model {spec.name} cannot run protocol {protocol.name}: {refusal}")
            data = condition_task(load_task(task, request.data_paths), request.conditions, request.seed)
            if data.unanswered_note:
                log(data.unanswered_note)
        except (RunError, ProtocolError, DataError, ConditionError) as error:
            reason = str(error)
            if request.tasks:
                raise RunError(f"cannot run {task.name}: {reason}") from None
            plan.skipped[task.name] = reason
            log(f"skipping {task.name}: {reason}")
            continue
        if request.strict:
            data.raise_for_problems()
        plan.datasets.append(data)
        plan.protocols[task.name] = protocol
    names = {data.task.name for data in plan.datasets}
    for group in registry.groups:
        members = [task.name for task in registry.group_tasks(group)]
        if set(members) <= names:
            plan.groups[group] = members
    return plan


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def identity(request: EvalRequest, plan: Plan) -> dict:
    """What every record of the run depends on, and a resumed run must match (weights: None until hashed)."""
    return {
        "model": plan.spec.name,
        "model_args": plan.model_args,
        "weights": None,
        "protocol": request.protocol,
        "max_new_tokens": request.max_new_tokens,
        "scoring": request.scoring.identity(),
        "seed": request.seed,
        "limit": request.limit,
        "dtype": plan.dtype,
        "conditions": request.conditions,
    }


def evaluate(request: EvalRequest, log: Log = _stderr) -> RunSummary | None:
    """Run the request and return its summary (None on the non-main ranks of a torchrun run)."""
    return run(request, log)[0]


def run(request: EvalRequest, log: Log = _stderr) -> tuple[RunSummary | None, Path]:
    """`evaluate`, also returning the run directory."""
    from mcub.runner.distributed import Distributed

    tracker = request.tracker
    if tracker is not None:
        tracker.check_installed()
    plan = plan_run(request, load_registry(), log)
    dist = Distributed.from_environment()
    with ExitStack() as held:
        held.callback(dist.close)
        device = dist.local_device(plan.device)
        run_dir = _run_dir(request, plan.spec.name, dist)
        if dist.is_main:
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                held.enter_context(RunLock(run_dir, log))
            except OSError as error:
                raise RunError(f"{run_dir}: the run directory cannot be written ({error.strerror})") from None
        try:
            summary, run_dir = _run_in(run_dir, request, plan, dist, device, log)
        except PeerLost as lost:
            raise PeerLost(f"{lost}; {saved_note(run_dir, plan, request, dist.world_size)}") from None
        except KeyboardInterrupt as stop:
            if not dist.is_main or isinstance(stop, RunInterrupted):
                raise
            terminated = isinstance(stop, Terminated)
            note = f"{'terminated (SIGTERM)' if terminated else 'interrupted (SIGINT)'}: "
            raise RunInterrupted(note + saved_note(run_dir, plan, request, dist.world_size), terminated) from None
    if tracker is not None and summary is not None:
        from mcub.tracking import log_finished_run

        log_finished_run(tracker, summary, run_dir)
    return summary, run_dir


def _run_in(
    run_dir: Path, request: EvalRequest, plan: Plan, dist: Distributed, device: str, log: Log
) -> tuple[RunSummary | None, Path]:
    """The run in its (locked) directory: identity, model, every task's records, scoring and the summary."""
    from mcub.models.base import Runtime, build_model
    from mcub.runner.loop import Query, RunSettings, run_task
    from mcub.runner.progress import RunProgress

    expected = identity(request, plan)
    resolved = request.model_copy(update={"dtype": plan.dtype, "model_args": plan.model_args, "run_name": None,
                                          "resume": False})  # fmt: skip
    if dist.is_main:
        start_run(run_dir, expected, resolved.to_yaml(), request.resume)
    dist.barrier()
    dist.check_shared(run_dir / REQUEST_FILE)  # written once, when the run starts
    runtime = Runtime(device, plan.dtype, request.seed, offline=not request.download)
    model = build_model(plan.spec, request.model_args, runtime)
    description = model.describe()
    lacking = plan.modalities - set(model.modalities)
    if lacking:
        raise RunError(f"model {plan.spec.name} is declared with {', '.join(sorted(lacking))}, which it lacks")
    edited = edits_decoded_media(request.conditions)
    if edited and model.media_preprocessing is None:
        raise RunError(f"condition {', '.join(edited)} changes decoded media, and model {plan.spec.name} has no media "
                       "decoded by the harness (it reads the files itself, or none)")  # fmt: skip
    if dist.is_main:
        check_identity(run_dir, {**expected, "weights": description.weights})
    settings = RunSettings(request.batch_size, request.num_workers, request.strict, request.limit,
                           pin_memory=device.startswith("cuda"), media_limits=request.limits,
                           condition=condition_label(request.conditions))  # fmt: skip
    notes: dict[str, list[str]] = {}
    files: dict[str, RecordFile | None] = {}
    totals = {data.task.name: samples_to_run(data, request.limit) for data in plan.datasets}
    with RunProgress(totals, enabled=request.progress and dist.is_main) as progress:
        for data in plan.datasets:
            protocol = plan.protocols[data.task.name]
            query = Query(data.task, protocol, protocol.decoding(data.task, request.max_new_tokens))
            ran = run_task(model, data, query, settings, run_dir / "records", dist, progress.task_bars, progress.batch)
            files[data.task.name], notes[data.task.name] = ran.file, ran.notes
            progress.task_done(data.task.name, ran.file.records if ran.file else None)
            for note in ran.notes:
                log(f"warning: {note}")
    if not dist.is_main:
        return None, run_dir
    context = ScoringContext(request.scoring)
    records = {}
    for data in plan.datasets:
        name = data.task.name
        records[name] = score_pending(run_dir / "records" / f"{name}.jsonl", files[name], data, plan.protocols[name],
                                      context)  # fmt: skip
    tasks, groups = summarize(plan.datasets, records, plan.protocols, request.limit, request.seed, plan.groups, notes)
    summary = RunSummary(
        harness_version=__version__,
        git_revision=git_revision(),
        created=new_run_name(),
        model=ModelInfo(
            name=plan.spec.name,
            args=plan.model_args,
            modalities=sorted(model.modalities),
            dtype=plan.dtype,
            **description.model_dump(),
        ),  # fmt: skip
        settings=Settings(
            protocol=request.protocol,
            batch_size=request.batch_size,
            num_workers=request.num_workers,
            max_new_tokens=request.max_new_tokens,
            seed=request.seed,
            strict=request.strict,
            limit=request.limit,
            device=device,
            dtype=plan.dtype,
            world_size=dist.world_size,
            media_limits=request.limits.changed(),
            conditions=request.conditions,
        ),  # fmt: skip
        scoring=request.scoring,
        environment=environment(),
        tasks=tasks,
        groups=groups,
        skipped=plan.skipped,
    )
    write_summary(run_dir, summary)
    return summary, run_dir


def saved_note(run_dir: Path, plan: Plan, request: EvalRequest, world_size: int) -> str:
    """What a stopped run leaves: the records saved so far and the command that continues it (the same torchrun
    launch on every node for a run of several ranks)."""
    total = sum(samples_to_run(data, request.limit) for data in plan.datasets)
    if not (run_dir / REQUEST_FILE).is_file():
        return f"nothing was saved ({run_dir} held no run yet)"
    saved = count_saved_records(run_dir / "records")
    resume = f"--config {run_dir / REQUEST_FILE} --run-name {run_dir.name} --resume"
    command = (
        f"torchrun <the same options, on every node> -m mcub.eval {resume}" if world_size > 1 else f"mcub eval {resume}"
    )
    return f"{saved} of {total} record(s) are saved in {run_dir}; continue with: {command}"


def samples_to_run(data: TaskData, limit: int | None) -> int:
    """How many of a task's samples a run with `limit` poses."""
    return len(data.samples) if limit is None else min(limit, len(data.samples))


def _run_dir(request: EvalRequest, model: str, dist) -> Path:
    name = None
    if dist.is_main:
        if request.resume:
            name = resume_run_dir(request.output_dir, model, request.run_name).name
        else:
            name = request.run_name or new_run_name()
    return request.output_dir / model / dist.share("run_name", name)


def score_pending(
    path: Path, file: RecordFile, data: TaskData, protocol: Protocol, context: ScoringContext
) -> dict[str, Record | RecordFigures]:
    """Score the records of a task's file (as read: `file`, in the view RecordFigures) that are not scored yet (new
    ones, or raw ones a crash left), each read whole, rewrite the file if any were, and return its records by id."""
    pending = [file.whole(record_id) for record_id, record in file.records.items() if not record.scored]
    if pending:
        file.update(score_records(pending, data.task, protocol, context))
        file.write(path)
    return file.records


def summarize(
    datasets: list[TaskData],
    records: Mapping[str, Mapping[str, Record]],
    protocols: dict[str, Protocol],
    limit: int | None,
    seed: int,
    groups: dict[str, list[str]],
    notes: dict[str, list[str]],
) -> tuple[dict[str, TaskSummary], dict[str, GroupMetrics]]:
    """Task and group summaries (the first `limit` samples of each task; bootstrap seeded by `seed`), computed from
    each task's records by id (as its record file holds them) alone."""
    tasks = {}
    for data in datasets:
        samples = data.samples[:limit] if limit is not None else data.samples
        recorded = records[data.task.name]
        tasks[data.task.name] = TaskSummary(
            task=data.task.name,
            family=data.task.family,
            protocol=protocols[data.task.name].name,
            paper_match=data.task.paper_match,
            question_file=str(data.question_file),
            answer_file=str(data.answer_file),
            question_sha256=data.question_sha256,
            answer_sha256=data.answer_sha256,
            data_problems=[str(problem) for problem in data.record_problems] + notes.get(data.task.name, []),
            metrics=task_metrics([sample.id for sample in samples], recorded, data.task.breakdown, seed),
            media=media_consumption(recorded[sample.id] for sample in samples if sample.id in recorded),
        )
    group_summaries = {
        name: group_metrics({task: tasks[task].metrics for task in members}, seed)
        for name, members in groups.items()
        if all(task in tasks for task in members)
    }
    return tasks, group_summaries


def score_run(
    run_dir: Path,
    paths: DataPaths,
    protocol: str | None = None,
    scoring: ScorerSettings | None = None,
    name: str | None = None,
) -> tuple[RunSummary, Path]:
    """Rescore a finished run from its raw records (under `protocol`, else each task's protocol of the run, with
    `scoring`, else the run's scorer settings) into `RUN_DIR/rescored/<name>/`: records, summary and table.
    Judgements are replayed from the records when the judge is the run's own; a judge that differs is asked. The
    run is locked meanwhile (an evaluation still writing it refuses this, and the other way round)."""
    with RunLock(run_dir):
        return _score_run(run_dir, paths, protocol, scoring, name)


def _score_run(
    run_dir: Path, paths: DataPaths, protocol: str | None, scoring: ScorerSettings | None, name: str | None
) -> tuple[RunSummary, Path]:
    run = RunFiles(run_dir)
    summary = run.summary
    scoring = scoring or summary.scoring
    same_judge = scoring.judge is not None and summary.scoring.judge is not None
    same_judge = same_judge and scoring.judge.identity() == summary.scoring.judge.identity()
    out_dir = run_dir / "rescored" / (name or rescore_name(protocol, scoring, summary.scoring))
    registry = load_registry()
    datasets, protocols, rescored_records = [], {}, {}
    for task_name, task_summary in summary.tasks.items():
        if task_name not in registry.tasks:
            raise RunError(f"{run_dir}: task {task_name} is not a task of this mcub")
        task = registry.tasks[task_name]
        chosen = protocol_for(task, protocol or task_summary.protocol)
        data = condition_task(load_task(task, paths), summary.settings.conditions, summary.settings.seed)
        if (data.question_sha256, data.answer_sha256) != (task_summary.question_sha256, task_summary.answer_sha256):
            raise RunError(
                f"{run_dir}: task {task_name} was run on other data than {data.question_file} and "
                f"{data.answer_file} hold now (their hashes differ); point --data-root at the run's data"
            )
        records = list(run.records[task_name].values())
        check_scorable(records, task, chosen, summary.settings.max_new_tokens)
        context = ScoringContext(scoring, recorded_judgements(records) if same_judge else None)
        (out_dir / "records").mkdir(parents=True, exist_ok=True)
        scored = score_records(records, task, chosen, context)
        write_records(out_dir / "records" / f"{task_name}.jsonl", scored)
        rescored_records[task_name] = {record.id: record for record in scored}
        datasets.append(data)
        protocols[task_name] = chosen
    groups = {group_name: group.tasks for group_name, group in summary.groups.items()}
    tasks, group_summaries = summarize(
        datasets, rescored_records, protocols, summary.settings.limit, summary.settings.seed, groups, {}
    )
    rescored = summary.model_copy(
        update={"tasks": tasks, "groups": group_summaries, "scoring": scoring, "created": new_run_name(),
                "rescored_from": str(run_dir), "harness_version": __version__, "git_revision": git_revision()}
    )  # fmt: skip
    write_summary(out_dir, rescored)
    return rescored, out_dir


def rescore_name(protocol: str | None, scoring: ScorerSettings, original: ScorerSettings) -> str:
    """`<protocol>` (or `own-protocols`), with a short hash of the scorer settings when they are not the run's."""
    import hashlib
    import json

    label = protocol or "own-protocols"
    if scoring.identity() != original.identity():
        label += "-" + hashlib.sha256(json.dumps(scoring.identity(), sort_keys=True).encode()).hexdigest()[:8]
    return label
