"""A run as the eval results a Hugging Face model repository carries: one result per task and metric, and per
group's micro and macro accuracy, with the dataset id and split and the harness and its version. Two layouts: the
`model-index` of the model card's YAML front matter (written by huggingface_hub's own `ModelCardData`, the
harness, protocol and interval in each metric's `args`), or a file of the newer `.eval_results/` folder (one
`dataset` / `value` entry per result, the rest in its `notes`). Nothing is uploaded: committing the YAML to a model
repository is the user's step (README)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mcub.exports.eee import ACCURACY, ExportError, task_metrics_of
from mcub.results import read_summary
from mcub.schema import Accuracy, MeanScore, RunSummary
from mcub.scoring import BOOTSTRAP_RESAMPLES
from mcub.tasks import load_registry

if TYPE_CHECKING:
    from huggingface_hub import EvalResult

HubFormat = Literal["model-index", "eval-results"]
TASK_TYPES = {"letter": "multiple-choice", "class": "text-classification", "text": "question-answering"}
"""The Hub task type of each answer type of mcub's tasks."""


def hub_results_yaml(run_dir: Path, layout: HubFormat = "model-index", model_name: str | None = None,
                     dataset_ids: dict[str, str] | None = None, source_url: str | None = None) -> str:  # fmt: skip
    """The run's results as YAML in `layout`. `dataset_ids` gives the Hub dataset of a task whose definition names
    none (a local or bundled task); `source_url` links the results to where the run's files are kept."""
    summary = read_summary(run_dir)
    results = hub_results(run_dir, summary, dataset_ids or {}, source_url)
    if layout == "eval-results":
        return eval_results_yaml(results, summary)
    from huggingface_hub import ModelCardData

    return ModelCardData(model_name=model_name or summary.model.name, eval_results=results).to_yaml() + "\n"


def eval_results_yaml(results: list[EvalResult], summary: RunSummary) -> str:
    """The results as a `.eval_results/*.yaml` file: per result its dataset (id, task, config, split), value and
    source, and in `notes` what the value is (metric, protocol, n, interval, harness)."""
    import yaml

    entries = []
    for result in results:
        args = result.metric_args
        entry: dict[str, Any] = {
            "dataset": {"id": result.dataset_type, "task_id": result.task_name, "config": result.dataset_config,
                        **({"split": result.dataset_split} if result.dataset_split else {})},
            "value": result.metric_value,
        }  # fmt: skip
        if result.source_url:
            entry["source"] = {"url": result.source_url, "name": result.source_name}
        interval = f"95% CI [{args['ci_low']}, {args['ci_high']}] ({args['bootstrap_resamples']} bootstrap resamples)"
        entry["notes"] = f"{result.metric_name}, n={args['n']}, {interval}; mcub {summary.harness_version}"
        entries.append(entry)
    return yaml.safe_dump(entries, sort_keys=False, allow_unicode=True, width=1000)


def hub_results(run_dir: Path, summary: RunSummary, dataset_ids: dict[str, str],
                source_url: str | None) -> list[EvalResult]:  # fmt: skip
    """One result per task and metric, then per group (whose tasks share one dataset) and aggregation."""
    from huggingface_hub import EvalResult

    registry = load_registry()
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
    return results


def harness_args(summary: RunSummary) -> dict[str, Any]:
    return {"harness": "mcub", "harness_version": summary.harness_version,
            **({"git_revision": summary.git_revision} if summary.git_revision else {})}  # fmt: skip


def interval_args(value: Accuracy | MeanScore) -> dict[str, Any]:
    """The item count and the 95% bootstrap interval behind a value."""
    return {"n": value.n, "ci_low": value.ci_low, "ci_high": value.ci_high, "bootstrap_resamples": BOOTSTRAP_RESAMPLES}
