"""Run directories: append-only record logs that survive crashes, record and summary files written atomically and
read strictly against the schema, the run's request and identity (what resuming must match), result tables."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from mcub.errors import McubError, validation_problems
from mcub.gc_pause import paused_gc
from mcub.schema import SCHEMA_VERSION, Environment, Record, RecordOutcome, RunSummary

View = TypeVar("View", bound=BaseModel)

DEFAULT_OUTPUT_DIR = Path("results")
IDENTITY_FILE = "run.json"
REQUEST_FILE = "run.yaml"


class RunFileError(McubError):
    """A run directory, summary or record file cannot be read as mcub wrote it."""


def record_line(record: Record) -> str:
    """One record as its JSONL line (keys sorted, UTF-8 kept)."""
    return json.dumps(record.model_dump(mode="json"), ensure_ascii=False, sort_keys=True) + "\n"


class RecordLog:
    """An append-only JSONL file of records, flushed after every batch (a killed process loses nothing it wrote)
    and synced to disk when closed (a batch's fsync can cost more than the batch on some file systems)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("a", encoding="utf-8")

    def append(self, records: Iterable[Record]) -> None:
        try:
            self._handle.write("".join(record_line(record) for record in records))
            self._handle.flush()
        except OSError as error:
            raise self._failure(error) from None

    def close(self) -> None:
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as error:
            raise self._failure(error) from None
        finally:
            try:
                self._handle.close()
            except OSError:
                pass  # the write error above is the one to report

    def _failure(self, error: OSError) -> RunFileError:
        return RunFileError(
            f"{self.path}: cannot write records ({error.strerror or error}); the records written before are kept "
            "(a half-written last line is redone): free the space or fix the permissions and --resume"
        )


def parse_record(line: str, path: Path, where: int | str, view: type[View] = Record) -> View:
    """A record line validated against the schema (or, with `view`, the fields of a record that a reader projects);
    a line that does not validate is an error naming the file and `where` in it (a line number, an id)."""
    try:
        return view.model_validate_json(line)
    except ValidationError as error:
        problem = validation_problems(error, "record", limit=1)
        raise RunFileError(f"{path}:{where}: not a valid record ({problem})") from None


def _json_or_none(line: str) -> Any:
    """The line's JSON value, or None when it is not JSON."""
    try:
        return json.loads(line)
    except ValueError:
        return None


def _numbered_lines(path: Path, errors: str = "strict") -> Iterator[tuple[int, str]]:
    """(line number, line with its newline) of a JSONL file, read a line at a time (the file's text is never held
    whole); only a newline ends a line (a record's text may hold other line separators, such as U+2028, that
    `str.splitlines` would split it at). The last line lacks its newline when the file does not end with one."""
    with path.open(encoding="utf-8", errors=errors) as handle:
        yield from enumerate(handle, start=1)


def _without_newline(line: str) -> str:
    return line[:-1] if line.endswith("\n") else line


@dataclass
class RecordFile:
    """A record log parsed once: records (or the view of them it was read with) by id (a later line of an id
    replaces an earlier one), the line each was read from (without its newline; written back byte for byte when the
    file is rewritten), and a note per damaged line."""

    path: Path
    records: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, str] = field(default_factory=dict)
    damaged: list[str] = field(default_factory=list)

    def whole(self, record_id: str) -> Record:
        """The record of an id read whole from its line (an invalid one is an error naming file and id)."""
        return parse_record(self.lines[record_id], self.path, f"id {record_id!r}")

    def update(self, records: Iterable[Record]) -> None:
        """Add or replace records (their lines made from them)."""
        for record in records:
            self.records[record.id] = record
            self.lines[record.id] = record_line(record)[:-1]

    def merge(self, other: RecordFile) -> None:
        """Take the records (with their lines) of another file read; its records win."""
        self.records.update(other.records)
        self.lines.update(other.lines)

    def write(self, path: Path) -> None:
        """Write the records (atomically) in question order."""
        ordered = sorted(self.records.values(), key=lambda record: record.question_index)
        write_atomically(path, "".join(f"{self.lines[record.id]}\n" for record in ordered))


def read_record_file(path: Path, repair: bool = True, view: type[BaseModel] = Record) -> RecordFile:
    """A record log parsed once (each line validated once, as a Record or its `view`). A line that is not JSON is
    damaged: a crash can leave a half-written last line, and its sample is simply done again; with `repair`, damaged
    lines are cut out of the file. A line that is JSON but not a valid record is an error."""
    read = RecordFile(path)
    if not path.is_file():
        return read
    unterminated = False
    good_lines: list[str] = []
    with paused_gc():
        for number, text in _numbered_lines(path, errors="replace"):
            line = _without_newline(text)
            unterminated = line is text
            if not line.strip():
                continue
            try:
                record = view.model_validate_json(line)
            except ValidationError:
                if not isinstance(_json_or_none(line), dict):
                    read.damaged.append(
                        f"{path}:{number}: damaged record ({len(line)} bytes) dropped; its sample is redone"
                    )
                    continue
                record = parse_record(line, path, number, view)
            read.records[record.id] = record
            read.lines[record.id] = line
            good_lines.append(line)
    if repair and (read.damaged or unterminated):
        write_atomically(path, "".join(line + "\n" for line in good_lines))
    return read


def read_records(path: Path, repair: bool = True) -> tuple[dict[str, Record], list[str]]:
    """Records by id, and a note for every damaged line (see `read_record_file`)."""
    read = read_record_file(path, repair)
    return read.records, read.damaged


def write_atomically(path: Path, text: str) -> None:
    """Write a file so that a reader sees the old content or the new, never half of it: a temporary file beside it,
    synced, renamed over it (and the rename synced). A failed write leaves the old file and no temporary one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise RunFileError(
                f"{path}: cannot write ({error.strerror or error}); its earlier content is kept"
            ) from None
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (where the platform lets a directory be opened)."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass  # some file systems refuse fsync on directories; the rename itself is already atomic
    finally:
        os.close(handle)


def write_records(path: Path, records: Iterable[Record]) -> None:
    """Write records (atomically) in question order."""
    ordered = sorted(records, key=lambda record: record.question_index)
    write_atomically(path, "".join(record_line(record) for record in ordered))


def consolidate_records(
    records_dir: Path, task_name: str, known: RecordFile | None = None, view: type[BaseModel] = Record
) -> tuple[RecordFile, list[str]]:
    """Fold every rank's part file of a task into `<task>.jsonl` (one record per id), repairing damaged lines; return
    what the folded file holds (its records read as `view`) and a note per damaged line. `known` is the file as this
    process last read or wrote it (the run's lock keeps other writers out), so that only the part files are parsed.
    The file is rewritten only when a part holds records, a line was damaged or there is no file yet; the records
    already in it keep their bytes."""
    main_file = records_dir / f"{task_name}.jsonl"
    merged = known if known is not None else read_record_file(main_file, view=view)
    notes = [] if known is not None else list(merged.damaged)
    parts = sorted(records_dir.glob(f"{task_name}.rank*.jsonl"))
    fresh = False
    for part in parts:
        read = read_record_file(part, view=view)
        fresh = fresh or bool(read.records)
        merged.merge(read)
        notes += read.damaged
    if fresh or notes or not main_file.exists():
        records_dir.mkdir(parents=True, exist_ok=True)
        merged.write(main_file)
    for part in parts:
        part.unlink()
    return merged, notes


def count_saved_records(records_dir: Path) -> int:
    """The distinct samples with a record on disk, over every task's records file and the ranks' part files."""
    saved: set[tuple[str, str]] = set()
    for path in sorted(records_dir.glob("*.jsonl")) if records_dir.is_dir() else []:
        records = read_record_file(path, repair=False, view=RecordOutcome).records
        saved.update((record.task, record.id) for record in records.values())
    return len(saved)


def write_summary(run_dir: Path, summary: RunSummary) -> None:
    write_atomically(run_dir / "summary.json", summary.model_dump_json(indent=2) + "\n")
    write_atomically(run_dir / "table.md", summary_table(summary) + "\n")


def read_summary(run_dir: Path) -> RunSummary:
    """A run's summary, validated; an older or newer schema, or a summary that does not validate, is an error."""
    path = run_dir / "summary.json"
    if not path.is_file():
        raise RunFileError(f"{run_dir}: not a run directory (no summary.json)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise RunFileError(f"{path}: not JSON ({error})") from None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != SCHEMA_VERSION:
        raise RunFileError(f"{path}: schema version {version!r}; this mcub reads version {SCHEMA_VERSION}")
    try:
        return RunSummary.model_validate(raw)
    except ValidationError as error:
        problem = validation_problems(error, "summary", limit=1)
        raise RunFileError(f"{path}: not a valid run summary ({problem})") from None


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _interval(low: float | None, high: float | None) -> str:
    return "-" if low is None else f"[{low:.2f}, {high:.2f}]"


def summary_table(summary: RunSummary) -> str:
    """A markdown table of one run: a row per task, then per group (micro and macro); then, where the run has them,
    the CircularEval accuracies, the position bias of its letter tasks and the conditions it was run under."""
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
    conditions = summary.settings.conditions
    noted = ["", f"Every record was made under the condition(s) {'+'.join(conditions)}."] if conditions else []
    return "\n".join(lines + circular_lines(summary) + position_bias_lines(summary) + noted)


def circular_lines(summary: RunSummary) -> list[str]:
    """The CircularEval table of a run's rotated tasks (none when it has none)."""
    rows = [(name, task.metrics) for name, task in summary.tasks.items() if task.metrics.circular is not None]
    if not rows:
        return []
    lines = [
        "",
        "CircularEval (over items; circular: right under every rotation of the options; original order: rotation 0):",
        "",
        "| task | items | rotations | circular | 95% CI | original order | 95% CI | incomplete items |",
        "|---|---:|---:|---:|---|---:|---|---:|",
    ]
    for name, m in rows:
        c, o = m.circular, m.original_order
        lines.append(
            f"| {name} | {c.n} | {c.rotations} | {_percent(c.accuracy)} | {_interval(c.ci_low, c.ci_high)} "
            f"| {_percent(o.accuracy)} | {_interval(o.ci_low, o.ci_high)} | {c.incomplete} |"
        )
    return lines


def position_bias_lines(summary: RunSummary) -> list[str]:
    """The position-bias table of a run's letter tasks (none when it has none)."""
    rows = [(name, task.metrics.position_bias) for name, task in summary.tasks.items()]
    rows = [(name, bias) for name, bias in rows if bias is not None]
    if not rows:
        return []
    lines = [
        "",
        "Position bias (records by gold letter and by answer; chi-square test that accuracy is the same whatever "
        "the gold letter):",
        "",
        "| task | gold | answered | accuracy by gold letter | chi-square (df) | p |",
        "|---|---|---|---|---|---:|",
    ]
    for name, bias in rows:
        gold = " ".join(f"{letter}:{count}" for letter, count in bias.gold.items())
        answered = " ".join(f"{key}:{count}" for key, count in bias.answered.items())
        by_gold = " ".join(f"{letter}:{value:.2f}" for letter, value in bias.accuracy_by_gold.items())
        test = "-" if bias.statistic is None else f"{bias.statistic:.2f} ({bias.df})"
        p_value = "-" if bias.p_value is None else f"{bias.p_value:.3g}"
        lines.append(f"| {name} | {gold} | {answered} | {by_gold} | {test} | {p_value} |")
    return lines


def git_revision() -> str | None:
    import subprocess

    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def environment() -> Environment:
    """Python, platform, torch and transformers versions, and the GPU, with nothing imported to read them: torch's
    version is the loaded module's when the run loaded torch (it carries the build, e.g. `+cu130`), else the installed
    distribution's, as transformers' always is; the GPU is the one the run's torch sees (None when the run never
    loaded torch)."""
    import platform

    torch = sys.modules.get("torch")
    return Environment(
        python=sys.version.split()[0],
        platform=platform.platform(),
        torch=torch.__version__ if torch is not None else installed_version("torch"),
        transformers=installed_version("transformers"),
        gpu=torch.cuda.get_device_name(0) if torch is not None and torch.cuda.is_available() else None,
    )


def installed_version(distribution: str) -> str | None:
    """The version of an installed distribution, from its metadata (None when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def new_run_name() -> str:
    import time

    return time.strftime("%Y%m%d-%H%M%S")


def resume_run_dir(output_dir: Path, model: str, run_name: str | None) -> Path:
    """The run to resume: the one named, or the latest run of the model."""
    model_dir = output_dir / model
    if run_name is not None:
        run_dir = model_dir / run_name
        if not (run_dir / IDENTITY_FILE).is_file():
            raise RunFileError(f"{run_dir}: no run to resume (no {IDENTITY_FILE})")
        return run_dir
    runs = sorted(path.parent for path in model_dir.glob(f"*/{IDENTITY_FILE}"))
    if not runs:
        raise RunFileError(f"{model_dir}: no earlier run of {model} to resume")
    return runs[-1]


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (`scoring.judge.model`), so that a difference names the leaf that changed."""
    if isinstance(value, dict) and value:
        return {key: leaf for name, item in value.items() for key, leaf in _flat(item, f"{prefix}{name}.").items()}
    return {prefix.rstrip("."): value}


def identity_differences(earlier: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """`key: old then, new now` for every leaf of two identities that differs."""
    old, new = _flat(earlier), _flat(now)
    return [f"{key}: {old.get(key)!r} then, {new.get(key)!r} now" for key in dict.fromkeys([*new, *old])
            if old.get(key) != new.get(key)]  # fmt: skip


def start_run(run_dir: Path, identity: dict[str, Any], request_yaml: str, resume: bool) -> None:
    """For a new run, write its identity (`run.json`) and resolved request (`run.yaml`); for a resumed run, check
    that it was started with the same identity (every difference is named)."""
    path = run_dir / IDENTITY_FILE
    if resume:
        check_identity(run_dir, identity)
        for stale in [*run_dir.glob(".*.tmp"), *run_dir.glob("records/.*.tmp")]:
            stale.unlink()  # a temporary file a killed writer left (the run is locked: no writer is live)
        return
    if path.exists():
        raise RunFileError(f"{run_dir}: already holds a run; use --resume or another --run-name")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(identity, indent=2, sort_keys=True) + "\n")
    write_atomically(run_dir / REQUEST_FILE, request_yaml)


IDENTITY_ADDED = {"conditions": []}
"""Keys of a run's identity added since runs were first made, with the value every run made before them had."""


def check_identity(run_dir: Path, identity: dict[str, Any]) -> None:
    """A RunFileError naming every difference between the run's recorded identity and `identity`. Weights are
    compared once known (`weights` None: not hashed yet); a run recorded before its weights were hashed gets them."""
    path = run_dir / IDENTITY_FILE
    earlier = json.loads(path.read_text(encoding="utf-8"))
    now = {key: value for key, value in identity.items() if not (key == "weights" and value is None)}
    then = {key: earlier.get(key, IDENTITY_ADDED.get(key)) for key in now}
    fill = "weights" in now and earlier.get("weights") is None
    if fill:
        then["weights"] = now["weights"]
    changes = identity_differences(then, now)
    if changes:
        raise RunFileError(f"{run_dir}: cannot resume a run started with other settings ({'; '.join(changes)})")
    if fill:
        write_atomically(path, json.dumps({**earlier, "weights": now["weights"]}, indent=2, sort_keys=True) + "\n")


def records_path(run_dir: Path, task: str) -> Path:
    """The records file of a task in a run directory."""
    return run_dir / "records" / f"{task}.jsonl"


class RunFiles:
    """A run directory read strictly: its summary and every task's records by id (duplicates and records that do
    not validate are errors), each record file parsed once. `view` reads only the fields of a record that a command
    needs (e.g. `RecordOutcome`): the other fields are neither validated nor kept."""

    def __init__(self, run_dir: Path, view: type[BaseModel] = Record):
        self.run_dir = run_dir
        self.summary = read_summary(run_dir)
        self.records: dict[str, dict[str, Any]] = {
            task: read_unique_records(records_path(run_dir, task), view=view) for task in self.summary.tasks
        }


def read_unique_records(path: Path, invalid: list[str] | None = None, view: type[View] = Record) -> dict[str, View]:
    """Records (or their `view`) by id; a missing file, a damaged line, a repeated id, or (without an `invalid` list
    to collect their ids in) a line that is not a valid record is an error naming file and line."""
    if not path.is_file():
        raise RunFileError(f"{path}: no records file")
    records: dict[str, View] = {}
    seen: set[str] = set()
    with paused_gc():
        for number, text in _numbered_lines(path):
            line = _without_newline(text)
            try:
                record = view.model_validate_json(line)
            except ValidationError:
                record = None
            if record is not None:
                record_id = record.id
            else:
                try:
                    value = json.loads(line)
                except ValueError:
                    raise RunFileError(f"{path}:{number}: damaged record") from None
                record_id = str(value.get("id")) if isinstance(value, dict) else f"line {number}"
            if record_id in seen:
                raise RunFileError(f"{path}:{number}: id {record_id!r} is recorded twice")
            seen.add(record_id)
            if record is not None:
                records[record_id] = record
            elif invalid is None:
                parse_record(line, path, number, view)
            else:
                invalid.append(record_id)
    return records
