"""A run as the eval results a Hugging Face model repository carries: the `model-index` of its model card's YAML
front matter (one result per task and metric, and per group's micro and macro accuracy, with the dataset id and
split, and the harness and its version in each metric's arguments), written by huggingface_hub's own
`ModelCardData`. Nothing is uploaded: committing the YAML to a model repository is the user's step (README)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcub.exports.eee import ACCURACY, ExportError, task_metrics_of
from mcub.results import read_summary
from mcub.schema import Accuracy, MeanScore, RunSummary
from mcub.scoring import BOOTSTRAP_RESAMPLES
from mcub.tasks import load_registry

TASK_TYPES = {"letter": "multiple-choice", "class": "text-classification", "text": "question-answering"}
"""The Hub task type of each answer type of mcub's tasks."""


def hub_results_yaml(run_dir: Path, model_name: str | None = None, dataset_ids: dict[str, str] | None = None,
                     source_url: str | None = None) -> str:  # fmt: skip
    """The `model-index` YAML of the run (to paste into the front matter of a model card). `dataset_ids` gives the
    Hub dataset of a task whose definition names none (a local or bundled task); `source_url` links the results to
    where the run's files are kept."""
    from huggingface_hub import EvalResult, ModelCardData

    summary = read_summary(run_dir)
    registry = load_registry()
    dataset_ids = dataset_ids or {}
    unknown = sorted(set(dataset_ids) - set(summary.tasks))
    if unknown:
        raise ExportError(f"--dataset-id: {', '.join(unknown)} is not a task of the run {run_dir}")
    harness = harness_args(summary)
    source = {"source_name": f"mcub {summary.harness_version}", "source_url": source_url} if source_url else {}
    results = []
    datasets: dict[str, str] = {}
    for name, task in summary.tasks.items():
        spec = registry.tasks.get(name)
        dataset = dataset_ids.get(name) or (spec.hub_dataset if spec is not None else None)
        if dataset is None:
            raise ExportError(f"task {name} has no Hub dataset in its definition; give one with --dataset-id {name}=ID")
        datasets[name] = dataset
        task_type = TASK_TYPES[spec.answer_type] if spec is not None else "question-answering"
        for metric in task_metrics_of(task):
            label = "Accuracy" if metric.name == ACCURACY else metric.name
            results.append(EvalResult(
                task_type=task_type, task_name=name, dataset_type=dataset, dataset_name=name, dataset_config=name,
                dataset_split=spec.folder if spec is not None else None, metric_type=metric.name,
                metric_value=metric.score, metric_name=f"{label} ({task.protocol} protocol)",
                metric_args={**harness, **interval_args(metric.value), "protocol": task.protocol}, **source,
            ))  # fmt: skip
    for name, group in summary.groups.items():
        members = {datasets.get(task) for task in group.tasks}
        if len(members) != 1 or None in members:
            continue  # a group over several datasets has no one dataset id to file it under
        dataset = members.pop()
        for kind, value in (("micro", group.micro), ("macro", group.macro)):
            if value.accuracy is not None:
                results.append(EvalResult(
                    task_type="multiple-choice", task_name=name, dataset_type=dataset, dataset_name=name,
                    dataset_config=name, metric_type=ACCURACY, metric_value=value.accuracy,
                    metric_name=f"Accuracy ({kind} over {len(group.tasks)} tasks)",
                    metric_args={**harness, **interval_args(value), "aggregation": kind,
                                 "tasks": ",".join(group.tasks)},
                    **source,
                ))  # fmt: skip
    if not results:
        raise ExportError(f"{run_dir}: no task of the run has a metric to export")
    return ModelCardData(model_name=model_name or summary.model.name, eval_results=results).to_yaml() + "\n"


def harness_args(summary: RunSummary) -> dict[str, Any]:
    return {"harness": "mcub", "harness_version": summary.harness_version,
            **({"git_revision": summary.git_revision} if summary.git_revision else {})}  # fmt: skip


def interval_args(value: Accuracy | MeanScore) -> dict[str, Any]:
    """The item count and the 95% bootstrap interval behind a value."""
    return {"n": value.n, "ci_low": value.ci_low, "ci_high": value.ci_high, "bootstrap_resamples": BOOTSTRAP_RESAMPLES}
