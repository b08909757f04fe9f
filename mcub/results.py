"""Runs on disk: the record and summary schemas, append-only record logs that survive crashes, run
directories, and result tables."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from mcub.scoring import GroupMetrics, TaskMetrics

SCHEMA_VERSION = 1
DEFAULT_OUTPUT_DIR = Path("results")


class Record(BaseModel):
    """One sample's result: what was asked, what came back, how it was read, and what the media were."""

    model_config = ConfigDict(extra="forbid")

    task: str
    id: str
    question_index: int
    condition: str = "default"
    protocol: str
    question_sha256: str
    answer_sha256: str
    prompt_sha256: str | None
    options: dict[str, str]
    gold: str
    output: str | None
    extracted: str | None
    extraction: str | None
    unparseable: bool
    option_logliks: dict[str, float] | None
    scores: dict[str, float] | None = None
    judgement: dict[str, Any] | None = None
    correct: bool | None
    error: str | None
    media: list[dict[str, Any]]
    meta: dict[str, Any]
    timing: dict[str, float]


class TaskSummary(BaseModel):
    """A task as run: its definition's scoring, its data files and their hashes, and its metrics."""

    task: str
    family: str
    protocol: str
    paper_match: str | None
    question_file: str
    answer_file: str
    question_sha256: str
    answer_sha256: str
    data_problems: list[str]
    metrics: TaskMetrics


class RunSummary(BaseModel):
    """`summary.json`: everything a reader needs to trust, reproduce and compare a run."""

    schema_version: int = SCHEMA_VERSION
    harness_version: str
    git_revision: str | None
    created: str
    model: dict[str, Any]
    settings: dict[str, Any]
    environment: dict[str, Any]
    tasks: dict[str, TaskSummary]
    groups: dict[str, GroupMetrics]
    skipped: dict[str, str]


class RecordLog:
    """An append-only JSONL file of records, flushed after every batch (a killed process loses nothing it wrote)
    and synced to disk when closed (a batch's fsync can cost more than the batch on some file systems)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("a", encoding="utf-8")

    def append(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self._handle.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()


def read_records(path: Path, repair: bool = True) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Records by id, and a note for every damaged line; with `repair`, damaged lines are cut out of the file
    (a crash can leave a half-written last line; its sample is simply done again)."""
    if not path.is_file():
        return {}, []
    records: dict[str, dict[str, Any]] = {}
    damaged: list[str] = []
    good_lines: list[str] = []
    raw = path.read_text(encoding="utf-8", errors="replace")
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "id" not in record:
                raise ValueError("not a record")
        except ValueError:
            damaged.append(f"{path}:{number}: damaged record ({len(line)} bytes) dropped; its sample is redone")
            continue
        records[record["id"]] = record
        good_lines.append(line)
    if repair and (damaged or (raw and not raw.endswith("\n"))):
        temporary = path.with_suffix(".repair")
        temporary.write_text("".join(line + "\n" for line in good_lines), encoding="utf-8")
        temporary.replace(path)
    return records, damaged


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    """Write records (atomically) in question order."""
    ordered = sorted(records, key=lambda record: record["question_index"])
    temporary = path.with_suffix(".tmp")
    temporary.write_text(
        "".join(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n" for record in ordered), encoding="utf-8"
    )
    temporary.replace(path)


def write_summary(run_dir: Path, summary: RunSummary) -> None:
    (run_dir / "summary.json").write_text(summary.model_dump_json(indent=2) + "\n", encoding="utf-8")
    (run_dir / "table.md").write_text(summary_table(summary) + "\n", encoding="utf-8")


def read_summary(run_dir: Path) -> RunSummary:
    path = run_dir / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no summary.json (is {run_dir} a run directory?)")
    return RunSummary.model_validate_json(path.read_text(encoding="utf-8"))


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _interval(low: float | None, high: float | None) -> str:
    return "-" if low is None else f"[{low:.2f}, {high:.2f}]"


def summary_table(summary: RunSummary) -> str:
    """A markdown table of one run: a row per task, then per group (micro and macro)."""
    lines = [
        "| task | protocol | n | accuracy | 95% CI | unparseable | missing | errors |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for name, task in summary.tasks.items():
        m = task.metrics
        lines.append(
            f"| {name} | {task.protocol} | {m.n} | {_percent(m.accuracy)} | {_interval(m.ci_low, m.ci_high)} "
            f"| {m.unparseable} | {m.missing} | {m.errors} |"
        )
    for name, group in summary.groups.items():
        for kind, value in (("micro", group.micro), ("macro", group.macro)):
            lines.append(
                f"| {name} ({kind}) | | {value.n} | {_percent(value.accuracy)} | "
                f"{_interval(value.ci_low, value.ci_high)} | | | |"
            )
    return "\n".join(lines)


def git_revision() -> str | None:
    import subprocess

    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def environment() -> dict[str, Any]:
    import platform

    import torch

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


def new_run_name() -> str:
    import time

    return time.strftime("%Y%m%d-%H%M%S")


def resume_run_dir(output_dir: Path, model: str, run_name: str | None) -> Path:
    """The run to resume: the one named, or the latest run of the model."""
    model_dir = output_dir / model
    if run_name is not None:
        run_dir = model_dir / run_name
        if not (run_dir / "run.json").is_file():
            raise FileNotFoundError(f"{run_dir}: no run to resume (no run.json)")
        return run_dir
    runs = sorted(path.parent for path in model_dir.glob("*/run.json"))
    if not runs:
        raise FileNotFoundError(f"{model_dir}: no earlier run of {model} to resume")
    return runs[-1]


def start_run(run_dir: Path, identity: dict[str, Any], resume: bool) -> None:
    """Write `run.json` for a new run, or check that a resumed run was started with the same identity."""
    path = run_dir / "run.json"
    if resume:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        changed = {key: (earlier.get(key), value) for key, value in identity.items() if earlier.get(key) != value}
        if changed:
            listing = "; ".join(f"{key}: {old!r} then, {new!r} now" for key, (old, new) in changed.items())
            raise ValueError(f"{run_dir}: cannot resume a run started with other settings ({listing})")
        return
    if path.exists():
        raise FileExistsError(f"{run_dir}: already holds a run; use --resume or another --run-name")
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(identity, indent=2, sort_keys=True) + "\n", encoding="utf-8")


class RunFiles:
    """A run directory read strictly: its summary and every task's records by id (duplicates are an error)."""

    def __init__(self, run_dir: Path):
        if not (run_dir / "summary.json").is_file():
            raise ValueError(f"{run_dir}: not a run directory (no summary.json)")
        raw = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        version = raw.get("schema_version") if isinstance(raw, dict) else None
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ValueError(
                f"{run_dir}/summary.json: schema version {version!r}; this mcub reads versions up to {SCHEMA_VERSION}"
            )
        self.run_dir = run_dir
        self.summary = RunSummary.model_validate(raw)
        self.records: dict[str, dict[str, dict[str, Any]]] = {}
        for task in self.summary.tasks:
            self.records[task] = read_unique_records(run_dir / "records" / f"{task}.jsonl")


def read_unique_records(path: Path) -> dict[str, dict[str, Any]]:
    """Records by id; a missing file, a damaged line or a repeated id is an error naming the file and line."""
    if not path.is_file():
        raise ValueError(f"{path}: no records file")
    records: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path}:{number}: damaged record") from None
        if record["id"] in records:
            raise ValueError(f"{path}:{number}: id {record['id']!r} is recorded twice")
        records[record["id"]] = record
    return records
