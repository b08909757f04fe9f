"""Samples from the authors' question and answer files (local, or fetched from the hub dataset)."""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcub.data.files import (
    MediaPaths,
    count_questions,
    existing_file,
    json_array,
    locate_file,
    parse_records,
    read_bytes,
    read_records_file,
    resolve_media_path,
)
from mcub.data.integrity import human_turn_text, question_difference, shared_id_problems
from mcub.data.options import LETTERS, parse_options, read_options
from mcub.data.taskdata import Problem, TaskData
from mcub.errors import DataError
from mcub.gc_pause import paused_gc
from mcub.modalities import MODALITIES, PLACEHOLDERS, REFERENCE_KEYS, Modality
from mcub.schema import DataPaths, Sample
from mcub.tasks import TaskSpec

__all__ = [
    "DataError",
    "DataPaths",
    "Problem",
    "TaskData",
    "count_questions",
    "load_task",
    "locate_file",
    "parse_options",
    "read_records_file",
    "resolve_media_path",
]

_PLACEHOLDER_PATTERN = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS.values()))
_MODALITY_OF_PLACEHOLDER = {placeholder: modality for modality, placeholder in PLACEHOLDERS.items()}
DEFAULT_PATHS = DataPaths()
_RESERVED_KEYS = {"id", "conversations", "modal_inputs"}


@dataclass(frozen=True)
class _Gold:
    """What the answer file says about one id: the gold (None when its records disagree, `conflict` says how),
    the answer record's extra fields and its human turn."""

    answer: str | None
    extras: dict[str, Any] = field(default_factory=dict)
    asked: str | None = None
    conflict: str | None = None


@dataclass
class _Findings:
    """What reading the records found besides samples (see TaskData)."""

    record_problems: list[Problem] = field(default_factory=list)
    sample_problems: list[Problem] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)


def load_task(task: TaskSpec, paths: DataPaths = DEFAULT_PATHS, answer_file: Path | None = None) -> TaskData:
    """Read a task's question and answer files into Samples; problems with single records are collected.
    `answer_file` replaces the task's own answer file (and the check of ids shared with the question files of
    other tasks that read the task's own)."""
    question_file = locate_file(task, task.questions, paths)
    if answer_file is not None and not existing_file(answer_file):
        raise DataError(f"{answer_file}: answer file not found")
    shared = answer_file is None
    answer_file = answer_file or locate_file(task, task.answers, paths)
    question_bytes = read_bytes(question_file)
    answer_bytes = read_bytes(answer_file)
    question_sha256 = hashlib.sha256(question_bytes).hexdigest()
    answer_sha256 = hashlib.sha256(answer_bytes).hexdigest()
    findings = _Findings()
    media_paths = MediaPaths(task.data_root(paths.data_root), paths.media_root)
    with paused_gc():
        if task.format == "pointllm":
            samples = _pointllm_samples(task, question_file, question_bytes, media_paths, findings.record_problems)
        else:
            questions = parse_records(question_file, question_bytes)
            del question_bytes  # each file is let go once parsed (at 100k questions, hundreds of MB each)
            wanted = {str(record["id"]) for record in questions}
            gold = _gold_answers(task, answer_file, parse_records(answer_file, answer_bytes), wanted,
                                 findings.record_problems)  # fmt: skip
            del answer_bytes
            samples = _samples(task, (question_file, answer_file), questions, gold, media_paths, findings)
            del gold
            if shared:
                findings.record_problems.extend(shared_id_problems(task, question_file, questions, paths))
    return TaskData(
        task=task,
        question_file=question_file,
        answer_file=answer_file,
        question_sha256=question_sha256,
        answer_sha256=answer_sha256,
        samples=samples,
        record_problems=findings.record_problems,
        sample_problems=findings.sample_problems,
        unanswered=tuple(findings.unanswered),
    )


def _pointllm_samples(
    task: TaskSpec, path: Path, raw: bytes, media_paths: MediaPaths, problems: list[Problem]
) -> list[Sample]:
    """PointLLM's evaluation file: [{object_id, conversations: [human, gpt]}], the gpt turn the reference; the
    task's own prompt is asked, about the cloud at `point_file` (relative to the data root)."""
    records = json_array(path, raw)
    counts = Counter(str(r.get("object_id")) for r in records if isinstance(r, dict))
    samples = []
    for index, record in enumerate(records):
        object_id = str(record.get("object_id")) if isinstance(record, dict) else None
        if not object_id or object_id == "None":
            problems.append(Problem(str(path), f"record #{index} has no object_id"))
            continue
        if counts[object_id] > 1:
            problems.append(Problem(str(path), f"object_id appears {counts[object_id]} times", (object_id,)))
            continue
        try:
            answer = _last_turn(record)
        except ValueError as error:
            problems.append(Problem(str(path), f"unreadable answer: {error}", (object_id,)))
            continue
        if not isinstance(answer, str) or not answer.strip():
            problems.append(Problem(str(path), "the reference (last turn) is empty", (object_id,)))
            continue
        point = media_paths.resolve(task.point_file.format(object_id=object_id))
        meta = {"question_index": index}
        samples.append(Sample(task.name, object_id, task.prompt, (("point", str(point)),), {}, answer, meta))
    return samples


def _gold_answers(
    task: TaskSpec, path: Path, records: list[dict[str, Any]], wanted: set[str], problems: list[Problem]
) -> dict[str, _Gold]:
    """What the answer file says about each wanted id (answer files are shared by tasks). An id given twice
    with the same gold is a problem noted; with different golds it has no gold (`conflict` names them)."""
    found: dict[str, list[tuple[int, str, dict[str, Any]]]] = defaultdict(list)
    for index, record in enumerate(records):
        sample_id = str(record["id"])
        if sample_id not in wanted:
            continue
        try:
            found[sample_id].append((index, _gold_of(task, record), record))
        except ValueError as error:
            problems.append(Problem(str(path), f"unreadable answer: {error}", (sample_id,)))
    gold = {}
    for sample_id, entries in found.items():
        if len(entries) > 1:
            listing = ", ".join(f"{answer!r} (record #{index})" for index, answer, _ in entries)
            if len({answer for _, answer, _ in entries}) > 1:
                conflict = f"ambiguous gold: {path.name} gives this id different answers, {listing}"
                gold[sample_id] = _Gold(None, conflict=conflict)
                continue
            message = f"id given {len(entries)} times with the same answer, {listing}"
            problems.append(Problem(str(path), message, (sample_id,)))
        _, answer, record = entries[0]
        extras = {key: value for key, value in record.items() if key not in _RESERVED_KEYS}
        gold[sample_id] = _Gold(answer, extras, human_turn_text(record))
    return gold


def _gold_of(task: TaskSpec, record: dict[str, Any]) -> str:
    if task.answer_type == "class":
        return _class_key(task, record)
    value = _last_turn(record)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"the last turn's value is {value!r}, not a non-empty string")
    return value


def _class_key(task: TaskSpec, record: dict[str, Any]) -> str:
    """The option key of a class answer: from `label`, else `label_name`, else the last turn's text."""
    options = task.options or {}
    if "label" in record:
        key = str(record["label"])
        if key not in options:
            raise ValueError(f"label {record['label']!r} is not one of the {len(options)} classes")
        return key
    name = record["label_name"] if "label_name" in record else _last_turn(record)
    by_name = {_class_name_key(text): key for key, text in options.items()}
    if not isinstance(name, str) or _class_name_key(name) not in by_name:
        raise ValueError(f"class name {name!r} is not one of the {len(options)} classes")
    return by_name[_class_name_key(name)]


def _class_name_key(name: str) -> str:
    return re.sub(r"[\s_]+", " ", name).strip().lower()


def _last_turn(record: dict[str, Any]) -> Any:
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns or not isinstance(turns[-1], dict):
        raise ValueError("no 'conversations' list with a final turn")
    return turns[-1].get("value")


def _samples(
    task: TaskSpec,
    files: tuple[Path, Path],
    records: list[dict[str, Any]],
    gold: dict[str, _Gold],
    media_paths: MediaPaths,
    findings: _Findings,
) -> list[Sample]:
    """One sample per record with a unique id, a readable human turn and a gold entry; what else is found about a
    record lands in `findings`."""
    question_file, answer_file = files
    counts = Counter(str(record["id"]) for record in records)
    for sample_id, count in counts.items():
        if count > 1:
            findings.record_problems.append(Problem(str(question_file), f"id appears {count} times", (sample_id,)))
    samples = []
    for index, record in enumerate(records):
        sample_id = str(record["id"])
        if counts[sample_id] > 1:
            continue
        try:
            prompt = _human_turn(record)
        except ValueError as error:
            findings.record_problems.append(Problem(str(question_file), str(error), (sample_id,)))
            continue
        if sample_id not in gold:
            findings.unanswered.append(sample_id)
            message = f"no answer for this id in {answer_file.name}"
            findings.record_problems.append(Problem(str(question_file), message, (sample_id,)))
            continue
        entry = gold[sample_id]
        difference = question_difference(entry.asked, prompt)
        if difference is not None:
            message = f"its question differs from the one in {question_file.name} {difference}"
            findings.record_problems.append(Problem(str(answer_file), message, (sample_id,)))
        sample = _sample(task, index, record, prompt, entry, media_paths)
        if sample.error:
            blamed = answer_file if entry.conflict else question_file
            findings.sample_problems.append(Problem(str(blamed), sample.error, (sample_id,)))
        samples.append(sample)
    return samples


def _sample(
    task: TaskSpec, index: int, record: dict[str, Any], prompt: str, gold: _Gold, media_paths: MediaPaths
) -> Sample:
    """The record as a sample; one that cannot be posed faithfully carries the reason as its `error`."""
    sample_id = str(record["id"])
    extras = {key: value for key, value in record.items() if key not in _RESERVED_KEYS}
    meta = {**gold.extras, **extras, "question_index": index}
    if gold.answer is None:
        return Sample(task.name, sample_id, prompt, (), {}, "", meta, error=gold.conflict)
    try:
        media = _media_in_placeholder_order(task, prompt, record.get("modal_inputs", {}), media_paths)
        options = _options(task, prompt, gold.answer)
    except ValueError as error:
        return Sample(task.name, sample_id, prompt, (), {}, gold.answer, meta, error=str(error))
    return Sample(task.name, sample_id, prompt, media, options, gold.answer, meta)


def _human_turn(record: dict[str, Any]) -> str:
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise ValueError("no 'conversations' list")
    first = turns[0]
    if not isinstance(first, dict) or first.get("from") != "human" or not isinstance(first.get("value"), str):
        raise ValueError("the first turn is not a human turn with a text value")
    for turn in turns[1:]:
        if isinstance(turn, dict) and turn.get("from") == "gpt" and turn.get("value"):
            raise ValueError("the question record holds an assistant answer, which would leak into the prompt")
    if len(turns) > 2:
        raise ValueError(f"{len(turns)} turns; a question record has one human turn (and an empty gpt turn)")
    return first["value"]


def _media_in_placeholder_order(
    task: TaskSpec, prompt: str, modal_inputs: Any, media_paths: MediaPaths
) -> tuple[tuple[Modality, str], ...]:
    """Pair the k-th placeholder of each modality with the k-th path of that modality."""
    if not isinstance(modal_inputs, dict):
        raise ValueError("'modal_inputs' is not an object")
    files: dict[Modality, list[str]] = {}
    for key, value in modal_inputs.items():
        if key not in REFERENCE_KEYS:
            raise ValueError(f"unknown modality key {key!r} in modal_inputs (known: {', '.join(REFERENCE_KEYS)})")
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise ValueError(f"modal_inputs[{key!r}] is not a list of file paths")
        files[REFERENCE_KEYS[key]] = value
    order = [_MODALITY_OF_PLACEHOLDER[placeholder] for placeholder in _PLACEHOLDER_PATTERN.findall(prompt)]
    for modality in MODALITIES:
        given = len(files.get(modality, ()))
        placed = order.count(modality)
        if placed != given:
            raise ValueError(f"{placed} {PLACEHOLDERS[modality]} placeholder(s) but {given} {modality} file(s)")
        if given and modality not in task.modalities:
            raise ValueError(f"has {modality} input, which task {task.name} does not declare")
    remaining = {modality: iter(paths) for modality, paths in files.items()}
    return tuple((modality, str(media_paths.resolve(next(remaining[modality])))) for modality in order)


def _options(task: TaskSpec, prompt: str, answer: str) -> dict[str, str]:
    if task.answer_type == "class":
        return dict(task.options or {})
    if task.answer_type == "text":
        return {}
    options, left_out = read_options(prompt)
    if len(options) < 2:
        raise ValueError("no lettered options (A., B., ...) found in the prompt")
    if left_out and len(options) == len(LETTERS):
        raise ValueError(
            f"{len(options) + left_out} options, more than the {len(LETTERS)} letters A to Z: they cannot all be posed"
        )
    if left_out:
        raise ValueError(
            f"{left_out} option mark(s) after options A to {LETTERS[len(options) - 1]} are out of letter order: "
            "the options cannot be posed as written"
        )
    if answer not in options:
        raise ValueError(f"gold answer {answer!r} is not one of the option letters {', '.join(options)}")
    return options
