"""Experiment trackers (`mcub eval --log wandb[:PROJECT]` or `--log trackio[:PROJECT]`): a finished run's settings,
per-task and per-group metrics with their 95% intervals, its result table and a sample of its records, logged to
W&B or Trackio. Each tracker is an optional extra (`pip install 'mcub[wandb]'`), imported only when asked for; both
keep working offline (W&B's offline mode, `WANDB_MODE=offline`; Trackio's local store, `TRACKIO_DIR`)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mcub.errors import McubError
from mcub.results import read_record_file, records_path
from mcub.schema import RunSummary

TrackerName = Literal["wandb", "trackio"]
TRACKERS: tuple[TrackerName, ...] = ("wandb", "trackio")
DEFAULT_PROJECT = "mcub"
RECORDS_PER_TASK = 20
"""Records of each task logged as the record sample (the first ones by question order)."""
RESULT_COLUMNS = ["task", "protocol", "n", "accuracy", "ci_low", "ci_high", "unparseable", "missing", "errors"]
RECORD_COLUMNS = ["task", "id", "gold", "output", "extracted", "extraction", "correct", "error"]


class TrackerError(McubError):
    """A tracker is unknown, not installed, or cannot log the run."""


@dataclass(frozen=True)
class Tracker:
    """Where to log a run: which tracker, and its project."""

    name: TrackerName
    project: str = DEFAULT_PROJECT

    @classmethod
    def parse(cls, text: str) -> Tracker:
        """`wandb`, `wandb:PROJECT`, `trackio` or `trackio:PROJECT`."""
        name, _, project = text.partition(":")
        if name not in TRACKERS:
            raise TrackerError(f"{text!r}: the trackers are {', '.join(TRACKERS)} (NAME or NAME:PROJECT)")
        if ":" in text and not project.strip():
            raise TrackerError(f"{text!r}: the project after ':' is empty")
        return cls(name=name, project=project.strip() or DEFAULT_PROJECT)

    def check_installed(self) -> None:
        """Fail before the run, not after it, when the tracker's package is missing (nothing is imported)."""
        if importlib.util.find_spec(self.name) is None:
            raise TrackerError(f"--log {self.name}: {self.name} is not installed (pip install 'mcub[{self.name}]')")


def run_config(summary: RunSummary, run_dir: Path) -> dict[str, Any]:
    """The run's settings as a flat tracker config."""
    settings = summary.settings.model_dump(mode="json")
    return {
        "harness_version": summary.harness_version,
        "git_revision": summary.git_revision,
        "run_dir": str(run_dir),
        "created": summary.created,
        "model": summary.model.name,
        "adapter": summary.model.adapter,
        "model_args": json.dumps(summary.model.args, sort_keys=True),
        "weights": json.dumps(summary.model.weights, sort_keys=True),
        "modalities": ",".join(summary.model.modalities),
        "scoring": json.dumps(summary.scoring.identity(), sort_keys=True),
        **{f"settings/{key}": value for key, value in settings.items() if not isinstance(value, dict)},
        "settings/media_limits": json.dumps(settings["media_limits"], sort_keys=True),
        "tasks": ",".join(summary.tasks),
        "skipped": json.dumps(summary.skipped, sort_keys=True),
    }


def metric_values(summary: RunSummary) -> dict[str, float | int]:
    """Every figure of the summary a chart can show: per task its accuracy, interval and counts, its open scores,
    and per group its micro and macro accuracy (None values, e.g. the accuracy of an open task, are left out)."""
    values: dict[str, Any] = {}
    for name, task in summary.tasks.items():
        m = task.metrics
        values |= {
            f"{name}/{key}": getattr(m, key)
            for key in ("accuracy", "ci_low", "ci_high", "n", "correct", "unparseable", "missing", "errors")
        }
        for score, value in m.scores.items():
            values |= {f"{name}/{score}/{key}": getattr(value, key) for key in ("mean", "ci_low", "ci_high")}
    for name, group in summary.groups.items():
        for kind, value in (("micro", group.micro), ("macro", group.macro)):
            values |= {f"{name}/{kind}/{key}": getattr(value, key) for key in ("accuracy", "ci_low", "ci_high", "n")}
    return {key: value for key, value in values.items() if value is not None}


def result_rows(summary: RunSummary) -> list[list[Any]]:
    """The run's table (RESULT_COLUMNS): a row per task, then per group's micro and macro accuracy."""
    rows = [[name, task.protocol, *(getattr(task.metrics, key) for key in RESULT_COLUMNS[2:])]
            for name, task in summary.tasks.items()]  # fmt: skip
    for name, group in summary.groups.items():
        for kind, value in (("micro", group.micro), ("macro", group.macro)):
            interval = [value.accuracy, value.ci_low, value.ci_high]
            rows.append([f"{name} ({kind})", "", value.n, *interval, None, None, None])
    return rows


def record_rows(run_dir: Path, summary: RunSummary, per_task: int = RECORDS_PER_TASK) -> list[list[Any]]:
    """The record sample (RECORD_COLUMNS): the first `per_task` records of each task by question order."""
    rows = []
    for name in summary.tasks:
        records = read_record_file(records_path(run_dir, name), repair=False).records.values()
        for record in sorted(records, key=lambda record: record.question_index)[:per_task]:
            rows.append([name, record.id, record.gold, record.output, record.extracted, record.extraction,
                         record.correct, record.error])  # fmt: skip
    return rows


def log_run(tracker: Tracker, summary: RunSummary, run_dir: Path) -> None:
    """Log a finished run to the tracker as one tracker run named `<model>/<run directory>`: its settings as the
    config, and one step holding every metric, the result table and the record sample."""
    name = f"{summary.model.name}/{run_dir.name}"
    config = run_config(summary, run_dir)
    if tracker.name == "wandb":
        import wandb as module

        run = module.init(project=tracker.project, name=name, config=config, job_type="eval")
        log, finish = run.log, run.finish
    else:
        import trackio as module

        module.init(project=tracker.project, name=name, config=config)
        log, finish = module.log, module.finish
    records = [_texts(row) for row in record_rows(run_dir, summary)]
    try:
        log({
            **metric_values(summary),
            "results": module.Table(columns=RESULT_COLUMNS, data=result_rows(summary)),
            "records": module.Table(columns=RECORD_COLUMNS, data=records),
        })  # fmt: skip
    finally:
        finish()


def log_finished_run(tracker: Tracker, summary: RunSummary, run_dir: Path) -> None:
    """`log_run`, its failure (the tracker's own: network, credentials, ...) an error that says the run is saved."""
    try:
        log_run(tracker, summary, run_dir)
    except Exception as error:
        raise TrackerError(f"--log {tracker.name}: the run is saved in {run_dir}, but logging it failed "
                           f"({type(error).__name__}: {error})") from error  # fmt: skip


def _texts(row: list[Any]) -> list[Any]:
    """A record row with its booleans and missing values as text (tracker tables want one type per column)."""
    return ["" if value is None else str(value).lower() if isinstance(value, bool) else value for value in row]
