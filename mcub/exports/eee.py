"""A run as Every Eval Ever files: one aggregate file (every task's metrics with their bootstrap intervals, and each
group's micro and macro accuracy) and its instance-level companion (one row per gold item and task metric, with the
model's output, the extracted answer and the rule that extracted it), laid out as the EEE datastore expects
(`data/<collection>/<developer>/<model>/<uuid>.json` and `<uuid>_samples.jsonl`) and validated against the pinned
schemas of `mcub.exports.eee_schema`. The questions come from the task files the run was made on (their sha256 must
equal the run's); every figure comes from the run's summary and records."""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mcub.data import load_task
from mcub.errors import McubError
from mcub.exports.eee_schema import AGGREGATE_SCHEMA, EEE_VERSION, INSTANCE_SCHEMA, check_document
from mcub.results import RunFiles, write_atomically
from mcub.schema import Accuracy, DataPaths, Decoding, MeanScore, Record, RunSummary, Sample, Settings, TaskSummary
from mcub.scoring import BOOTSTRAP_RESAMPLES
from mcub.tasks import TaskSpec, load_registry

HARNESS = "mcub"
COLLECTION = "mcub"
"""The datastore collection (benchmark folder) every mcub run is filed under."""
ACCURACY = "accuracy"
Relationship = Literal["first_party", "third_party", "collaborative", "other"]
_PATH_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_MISSING = "missing: the run has no record of this sample, so it counts as wrong"


class ExportError(McubError):
    """A run cannot be exported as asked (an identity the datastore cannot file, task files that are not the run's)."""


@dataclass(frozen=True)
class EeeIdentity:
    """Who the exported model is and who ran it, in the terms of the EEE schema."""

    model_id: str | None = None
    """`developer/model`, Hugging Face style (the datastore files a record by it); None: `mcub/<the run's model>`."""
    organization: str = ""
    """The organization that ran the evaluation (`source_metadata.source_organization_name`)."""
    relationship: Relationship = "third_party"


@dataclass(frozen=True)
class EeeExport:
    """The files written: the aggregate, the instance-level rows, and how many rows."""

    aggregate: Path
    samples: Path
    rows: int


@dataclass(frozen=True)
class _Metric:
    """One aggregate result of a task: accuracy (a right or wrong per item) or an open-answer score."""

    name: str
    value: Accuracy | MeanScore

    @property
    def score(self) -> float | None:
        return self.value.accuracy if isinstance(self.value, Accuracy) else self.value.mean


def export_eee(run_dir: Path, out: Path, paths: DataPaths, identity: EeeIdentity) -> EeeExport:
    """Write the run's EEE files under `out` (a folder that holds or will hold `data/`) and return where they are."""
    run = RunFiles(run_dir)
    summary = run.summary
    model_id = identity.model_id or f"{HARNESS}/{summary.model.name}"
    developer, model = datastore_parts(model_id)
    registry = load_registry()
    file_uuid = str(uuid.UUID(bytes=hashlib.sha256(
        (run_dir / "summary.json").read_bytes() + model_id.encode()).digest()[:16], version=4))  # fmt: skip
    retrieved = str(int(time.time()))
    evaluation_id = f"{COLLECTION}/{model_id}/{retrieved}"
    folder = Path("data", COLLECTION, developer, model)
    results: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for name, task in summary.tasks.items():
        spec = registry.tasks.get(name)
        if spec is None:
            raise ExportError(f"{run_dir}: task {name} of the run is not a task of this mcub (tasks/*.yaml)")
        samples = run_samples(spec, task, paths, summary.settings)
        records = run.records[name]
        metrics = task_metrics_of(task)
        decoding = next((record.decoding for record in records.values() if record.decoding is not None), None)
        results += [task_result(name, task, spec, metric, decoding, summary) for metric in metrics]
        for sample in samples:
            rows += [instance_row(sample, records.get(sample.id), metric.name, evaluation_id, model_id)
                     for metric in metrics]  # fmt: skip
    for name, group in summary.groups.items():
        for kind, value in (("micro", group.micro), ("macro", group.macro)):
            if value.accuracy is not None:
                results.append(group_result(name, group.tasks, kind, value))
    if not rows:
        raise ExportError(f"{run_dir}: no task of the run has a metric to export")
    target = out / folder
    samples_path = target / f"{file_uuid}_samples.jsonl"
    for number, row in enumerate(rows, 1):
        check_document(row, INSTANCE_SCHEMA, f"{samples_path}:{number}")
    lines = "".join(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n" for row in rows)
    detail = {
        "format": "jsonl",
        "file_path": (folder / samples_path.name).as_posix(),
        "hash_algorithm": "sha256",
        "checksum": hashlib.sha256(lines.encode("utf-8")).hexdigest(),
        "total_rows": len(rows),
    }
    aggregate = aggregate_document(run_dir, summary, identity, evaluation_id, retrieved, model_id, results, detail)
    aggregate_path = target / f"{file_uuid}.json"
    check_document(aggregate, AGGREGATE_SCHEMA, str(aggregate_path))
    target.mkdir(parents=True, exist_ok=True)
    write_atomically(samples_path, lines)
    write_atomically(aggregate_path, json.dumps(aggregate, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    return EeeExport(aggregate=aggregate_path, samples=samples_path, rows=len(rows))


def aggregate_document(
    run_dir: Path,
    summary: RunSummary,
    identity: EeeIdentity,
    evaluation_id: str,
    retrieved: str,
    model_id: str,
    results: list[dict[str, Any]],
    detail: dict[str, Any],
) -> dict[str, Any]:
    """The aggregate file: who ran what with which harness, the results, and the instance file it points to."""
    return {
        "schema_version": EEE_VERSION,
        "evaluation_id": evaluation_id,
        "evaluation_timestamp": summary.created,
        "retrieved_timestamp": retrieved,
        "source_metadata": {
            "source_name": HARNESS,
            "source_type": "evaluation_run",
            "source_organization_name": identity.organization,
            "evaluator_relationship": identity.relationship,
            "additional_details": {"run_directory": str(run_dir), **_optional("rescored_from", summary.rescored_from)},
        },
        "eval_library": {
            "name": HARNESS,
            "version": summary.harness_version,
            "additional_details": {
                "git_revision": summary.git_revision or "unknown",
                "summary_schema_version": str(summary.schema_version),
            },
        },
        "model_info": model_info(summary, model_id, datastore_parts(model_id)[0]),
        "evaluation_results": results,
        "detailed_evaluation_results": detail,
    }


def datastore_parts(model_id: str) -> tuple[str, str]:
    """The developer and model folders of `developer/model[/...]` (the rest flattened with `_`), each a portable
    name."""
    parts = model_id.split("/")
    if len(parts) < 2 or not all(_PATH_PART.fullmatch(part) and part != "data" for part in parts):
        raise ExportError(f"--model-id {model_id!r}: give DEVELOPER/MODEL, each part letters, digits, '.', '_' or '-'")
    return parts[0], "_".join(parts[1:])


def run_samples(spec: TaskSpec, task: TaskSummary, paths: DataPaths, settings: Settings) -> list[Sample]:
    """The gold items the run scored a task on: from its task files, which must be the ones the run was made on,
    under the run's conditions (as evaluation and validation apply them), cut at its limit."""
    from mcub.conditions import condition_task

    data = condition_task(load_task(spec, paths), settings.conditions, settings.seed)
    limit = settings.limit
    if (data.question_sha256, data.answer_sha256) != (task.question_sha256, task.answer_sha256):
        raise ExportError(
            f"task {task.task}: {data.question_file} and {data.answer_file} are not the files the run was made on "
            f"(sha256 {data.question_sha256[:12]}/{data.answer_sha256[:12]}, the run's "
            f"{task.question_sha256[:12]}/{task.answer_sha256[:12]}); point --data-root at the run's data"
        )
    samples = data.samples[:limit] if limit is not None else data.samples
    if len(samples) != task.metrics.n:
        raise ExportError(f"task {task.task}: {len(samples)} gold items in its files, {task.metrics.n} in the run")
    return samples


def task_metrics_of(task: TaskSummary) -> list[_Metric]:
    """The task's metrics with a value: accuracy (when its answers are right or wrong), then each open score."""
    metrics = [_Metric(ACCURACY, task.metrics)] if task.metrics.accuracy is not None else []
    return metrics + [_Metric(name, value) for name, value in task.metrics.scores.items() if value.mean is not None]


def result_id(task: str, metric: str) -> str:
    return f"{task}/{metric}"


def _optional(key: str, value: Any) -> dict[str, str]:
    return {} if value is None else {key: str(value)}


def _interval(value: Accuracy | MeanScore, method: str) -> dict[str, Any]:
    uncertainty: dict[str, Any] = {"num_samples": value.n, "num_bootstrap_samples": BOOTSTRAP_RESAMPLES}
    if value.ci_low is not None:
        uncertainty["confidence_interval"] = {"lower": value.ci_low, "upper": value.ci_high, "confidence_level": 0.95,
                                              "method": method}  # fmt: skip
    return uncertainty


def _percent_metric(metric_id: str, name: str, description: str, details: dict[str, str]) -> dict[str, Any]:
    return {
        "evaluation_description": description,
        "metric_id": metric_id,
        "metric_name": name,
        "metric_kind": "accuracy" if metric_id.startswith(ACCURACY) else "score",
        "metric_unit": "percent",
        "lower_is_better": False,
        "score_type": "continuous",
        "min_score": 0,
        "max_score": 100,
        "additional_details": details,
    }


def source_data(name: str, spec: TaskSpec, task: TaskSummary) -> dict[str, Any]:
    """The task's data: its Hub dataset when it has one, else its local files; with the files' hashes."""
    details = {"question_file": task.question_file, "answer_file": task.answer_file,
               "question_sha256": task.question_sha256, "answer_sha256": task.answer_sha256}  # fmt: skip
    if spec.hub_dataset is None:
        return {"dataset_name": name, "source_type": "other", "additional_details": details}
    return {"dataset_name": name, "source_type": "hf_dataset", "hf_repo": spec.hub_dataset, "hf_split": spec.folder,
            "samples_number": task.metrics.n, "additional_details": details}  # fmt: skip


def generation_config(decoding: Decoding | None, summary: RunSummary) -> dict[str, Any]:
    settings = summary.settings
    details = {"seed": str(settings.seed), "batch_size": str(settings.batch_size or "auto"), "device": settings.device,
               "dtype": settings.dtype, **_optional("limit", settings.limit)}  # fmt: skip
    if decoding is None:
        return {"additional_details": details}
    details["decoding"] = decoding.describe()
    if decoding.kind == "loglik":
        return {"additional_details": details}
    return {"generation_args": {"max_tokens": decoding.max_new_tokens}, "additional_details": details}


def task_result(
    name: str, task: TaskSummary, spec: TaskSpec, metric: _Metric, decoding: Decoding | None, summary: RunSummary
) -> dict[str, Any]:
    """One aggregate result of a task: the summary's value, its 95% bootstrap interval and the counts behind it."""
    m = task.metrics
    counts = {"n": str(m.n), "unparseable": str(m.unparseable), "missing": str(m.missing), "errors": str(m.errors)}
    if metric.name == ACCURACY:
        counts["correct"] = str(m.correct)
        counts |= {f"breakdown.{field}": json.dumps({label: cell.model_dump() for label, cell in cells.items()})
                   for field, cells in m.breakdown.items()}  # fmt: skip
        description = (f"{name}: accuracy over its {m.n} gold items under the {task.protocol} protocol; a missing, "
                       "unparseable or failed item counts as wrong")  # fmt: skip
        title = "Accuracy"
    else:
        counts["failed_judgements"] = str(m.failed_judgements)
        description = f"{name}: mean {metric.name} score over its {m.n} gold items (an item without one scores 0)"
        title = metric.name
    details = {"protocol": task.protocol, "family": task.family, **_optional("paper_match", task.paper_match),
               **_optional("hub_dataset", spec.hub_dataset)}  # fmt: skip
    return {
        "evaluation_result_id": result_id(name, metric.name),
        "evaluation_name": name,
        "source_data": source_data(name, spec, task),
        "evaluation_timestamp": summary.created,
        "metric_config": _percent_metric(metric.name, title, description, details),
        "score_details": {
            "score": metric.score,
            "details": counts,
            "uncertainty": _interval(metric.value, "percentile bootstrap"),
        },
        "generation_config": generation_config(decoding, summary),
    }


def group_result(name: str, tasks: list[str], kind: str, value: Accuracy) -> dict[str, Any]:
    """A group's micro (pooled items) or macro (mean of its tasks' accuracies) accuracy."""
    pooled = "pooled over the items of" if kind == "micro" else "mean of the task accuracies of"
    method = "percentile bootstrap" + (" of the mean of per-task binomial resamples" if kind == "macro" else "")
    return {
        "evaluation_result_id": result_id(name, f"{ACCURACY}-{kind}"),
        "evaluation_name": name,
        "source_data": {"dataset_name": name, "source_type": "other", "additional_details": {"tasks": ",".join(tasks)}},
        "metric_config": _percent_metric(
            f"{ACCURACY}_{kind}",
            f"Accuracy ({kind})",
            f"{name}: accuracy {pooled} {', '.join(tasks)}",
            {"aggregation": kind},
        ),
        "score_details": {
            "score": value.accuracy,
            "details": {"n": str(value.n), "correct": str(value.correct)},
            "uncertainty": _interval(value, method),
        },
    }


def model_info(summary: RunSummary, model_id: str, developer: str) -> dict[str, Any]:
    """The model as the run describes it; weights it hashed locally mark it as self-deployed open weights."""
    model = summary.model
    local = bool(model.weights)
    details = {
        "deployment_type": "self_deployed" if local else "unknown",
        "model_availability": "open_weights" if local else "unknown",
        "adapter": model.adapter,
        "modalities": ",".join(model.modalities),
        "args": json.dumps(model.args, sort_keys=True),
        "weights": json.dumps(model.weights, sort_keys=True),
        "details": json.dumps(model.details, sort_keys=True, default=str),
        **_optional("dtype", model.dtype),
    }
    return {"name": model.name, "id": model_id, "developer": developer, "additional_details": details}


def instance_row(sample: Sample, record: Record | None, metric: str, evaluation_id: str, model_id: str) -> dict:
    """One gold item under one task metric: its question and gold, the model's output, the answer extracted from it
    and how, and its score (1/0 for accuracy, the percent score for open metrics). An item without a record scores
    0 and says so in `error`."""
    if metric == ACCURACY:
        score = 1.0 if record is not None and record.correct else 0.0
    else:
        score = float(((record.scores or {}).get(metric) if record is not None else None) or 0.0)
    reference = [sample.answer]
    hashed = json.dumps({"raw": sample.prompt, "reference": reference}, sort_keys=True, ensure_ascii=False)
    return {
        "schema_version": EEE_VERSION,
        "evaluation_id": evaluation_id,
        "model_id": model_id,
        "evaluation_name": sample.task,
        "evaluation_result_id": result_id(sample.task, metric),
        "sample_id": sample.id,
        "sample_hash": hashlib.sha256(hashed.encode("utf-8")).hexdigest(),
        "interaction_type": "single_turn",
        "input": {
            "raw": sample.prompt,
            "reference": reference,
            "choices": [f"{key}. {text}" for key, text in sample.options.items()] or None,
        },
        "output": {"raw": [record.output] if record is not None and record.output is not None else []},
        "answer_attribution": answer_attribution(record),
        "evaluation": {"score": score, "is_correct": record is not None and record.correct is True},
        "error": _MISSING if record is None else record.error,
        "metadata": instance_metadata(record),
    }


def answer_attribution(record: Record | None) -> list[dict[str, Any]]:
    """How the answer was read: the record's extraction rule and the value it took (empty when none was taken)."""
    if record is None or record.extraction is None:
        return []
    source = "output.raw" if record.output is not None else "option_logliks"
    return [{"turn_idx": 0, "source": source, "extracted_value": record.extracted or "",
             "extraction_method": record.extraction, "is_terminal": True}]  # fmt: skip


def instance_metadata(record: Record | None) -> dict[str, str] | None:
    """The record's own fields that the instance schema has no place for, as strings."""
    if record is None:
        return None
    fields = {
        "question_index": str(record.question_index),
        "protocol": record.protocol,
        "condition": record.condition,
        "correct": "none" if record.correct is None else str(record.correct).lower(),
        "unparseable": str(record.unparseable).lower(),
        "question_sha256": record.question_sha256,
        "answer_sha256": record.answer_sha256,
        "media": json.dumps(record.media, sort_keys=True, default=str),
        "meta": json.dumps(record.meta, sort_keys=True, default=str),
        "timing": json.dumps(record.timing, sort_keys=True),
        **_optional("prompt_sha256", record.prompt_sha256),
        **_optional("decoding", record.decoding.describe() if record.decoding else None),
    }
    if record.option_logliks is not None:
        fields["option_logliks"] = json.dumps(record.option_logliks, sort_keys=True)
    if record.scores is not None:
        fields["scores"] = json.dumps(record.scores, sort_keys=True)
    if record.receipts is not None:
        fields["receipts"] = json.dumps([receipt.model_dump(mode="json") for receipt in record.receipts])
    return fields
