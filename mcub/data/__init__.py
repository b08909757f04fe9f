"""Samples from the authors' question and answer files (local, or fetched from the hub dataset)."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcub.errors import DataError
from mcub.modalities import MODALITIES, PLACEHOLDERS, REFERENCE_KEYS, Modality
from mcub.schema import DataPaths, Sample
from mcub.tasks import TaskSpec

_PLACEHOLDER_PATTERN = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS.values()))
_MODALITY_OF_PLACEHOLDER = {placeholder: modality for modality, placeholder in PLACEHOLDERS.items()}
_OPTION_LINE = re.compile(r"^[ \t]*(?:\(([A-Z])\)|([A-Z])[.):])[ \t]*(\S.*?)[ \t]*$", re.MULTILINE)
_OPTION_INLINE = re.compile(r"(?:^|(?<=\s))(?:\(([A-Z])\)|([A-Z])[.):])\s+")
DEFAULT_PATHS = DataPaths()
_RESERVED_KEYS = {"id", "conversations", "modal_inputs"}


@dataclass(frozen=True)
class Problem:
    """Something wrong in a task's data: the file, the sample ids concerned, and what."""

    file: str
    message: str
    sample_ids: tuple[str, ...] = ()

    def __str__(self) -> str:
        ids = f" [sample {', '.join(self.sample_ids)}]" if self.sample_ids else ""
        return f"{self.file}{ids}: {self.message}"


@dataclass(frozen=True)
class TaskData:
    """A task's samples, the records that could not become samples, and the hashes of its files."""

    task: TaskSpec
    question_file: Path
    answer_file: Path
    question_sha256: str
    answer_sha256: str
    samples: list[Sample]
    record_problems: list[Problem]

    @property
    def problems(self) -> list[Problem]:
        """Every problem: records that are not samples, and samples that cannot be posed."""
        posed = [Problem(str(self.question_file), s.error, (s.id,)) for s in self.samples if s.error]
        return [*self.record_problems, *posed]

    def raise_for_problems(self) -> None:
        if self.problems:
            listing = "\n".join(f"  {problem}" for problem in self.problems)
            raise DataError(f"task {self.task.name}: {len(self.problems)} problem(s) in its data:\n{listing}")


def load_task(task: TaskSpec, paths: DataPaths = DEFAULT_PATHS, answer_file: Path | None = None) -> TaskData:
    """Read a task's question and answer files into Samples; problems with single records are collected.
    `answer_file` replaces the task's own answer file."""
    question_file = locate_file(task, task.questions, paths)
    answer_file = answer_file or locate_file(task, task.answers, paths)
    if not answer_file.is_file():
        raise DataError(f"{answer_file}: answer file not found")
    question_bytes = question_file.read_bytes()
    answer_bytes = answer_file.read_bytes()
    problems: list[Problem] = []
    if task.format == "pointllm":
        samples = _pointllm_samples(task, question_file, question_bytes, paths, problems)
    else:
        questions = _parse_records(question_file, question_bytes)
        answers = _parse_records(answer_file, answer_bytes)
        wanted = {str(record["id"]) for record in questions}
        gold = _gold_answers(task, answer_file, answers, wanted, problems)
        samples = _samples(task, question_file, questions, gold, paths, problems)
    return TaskData(
        task=task,
        question_file=question_file,
        answer_file=answer_file,
        question_sha256=hashlib.sha256(question_bytes).hexdigest(),
        answer_sha256=hashlib.sha256(answer_bytes).hexdigest(),
        samples=samples,
        record_problems=problems,
    )


def count_questions(task: TaskSpec, data_root: Path) -> int | None:
    """The number of records in the task's question file, or None when the file is not on disk."""
    path = task.question_path(data_root)
    if not path.is_file():
        return None
    return len(_parse_records(path, path.read_bytes()))


def locate_file(task: TaskSpec, name: str, paths: DataPaths) -> Path:
    """The local path of one of the task's files, downloading it from the task's hub dataset if allowed."""
    local = task.data_root(paths.data_root) / task.folder / name
    if local.is_file():
        return local
    pointer = f"put a copy there, or pass --data-root pointing at the folder that holds {task.folder}/{name}"
    if task.bundled:
        raise DataError(f"{local}: bundled file of task {task.name} is missing from the installed package")
    if task.hub_dataset is None:
        raise DataError(f"{local}: not found, and task {task.name} has no hub source; {pointer}")
    if not paths.download:
        raise DataError(f"{local}: not found (downloads are off); {pointer}")
    from huggingface_hub import hf_hub_download

    try:
        fetched = hf_hub_download(
            task.hub_dataset,
            task.hub_filename(name),
            repo_type="dataset",
            local_dir=task.data_root(paths.data_root),
        )
    except Exception as error:  # noqa: BLE001 - every hub failure becomes the same actionable message
        raise DataError(
            f"{local}: not found, and fetching {task.hub_filename(name)} from the hub dataset "
            f"{task.hub_dataset} failed ({type(error).__name__}: {error}); {pointer}"
        ) from None
    return Path(fetched)


def resolve_media_path(path: str, data_root: Path, media_root: Path | None) -> Path:
    """Resolve a media path as the authors' files write it (relative to the folder that holds `data/`)."""
    candidate = Path(path)
    if candidate.is_absolute():
        return candidate
    if media_root is not None:
        return media_root / candidate
    bases = (data_root.parent, data_root)
    for base in bases:
        if (base / candidate).exists():
            return base / candidate
    return bases[0] / candidate


def parse_options(prompt: str) -> dict[str, str]:
    """Lettered options from a prompt: one per line ("A. x", "(B) y", "C) z"), else inline; A, B, ... in order."""
    lines = [(m.group(1) or m.group(2), m.group(3)) for m in _OPTION_LINE.finditer(prompt)]
    options = _leading_run(lines)
    if len(options) >= 2:
        return options
    marks = list(_OPTION_INLINE.finditer(prompt))
    inline = []
    for index, mark in enumerate(marks):
        end = marks[index + 1].start() if index + 1 < len(marks) else len(prompt)
        inline.append((mark.group(1) or mark.group(2), prompt[mark.end() : end].strip()))
    return _leading_run(inline)


def _leading_run(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """The options whose letters run A, B, C, ... from the first 'A' on."""
    letters = [letter for letter, _ in pairs]
    if "A" not in letters:
        return {}
    options: dict[str, str] = {}
    for letter, text in pairs[letters.index("A") :]:
        if letter != chr(ord("A") + len(options)):
            break
        options[letter] = text
    return options


def read_records_file(path: Path) -> list[dict[str, Any]]:
    """The records of a question or answer file, as stored (ids keep their JSON type)."""
    return _parse_records(path, path.read_bytes())


def _pointllm_samples(
    task: TaskSpec, path: Path, raw: bytes, paths: DataPaths, problems: list[Problem]
) -> list[Sample]:
    """PointLLM's evaluation file: [{object_id, conversations: [human, gpt]}], the gpt turn the reference; the
    task's own prompt is asked, about the cloud at `point_file` (relative to the data root)."""
    records = _json_array(path, raw)
    data_root = task.data_root(paths.data_root)
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
        point = resolve_media_path(task.point_file.format(object_id=object_id), data_root, paths.media_root)
        meta = {"question_index": index}
        samples.append(Sample(task.name, object_id, task.prompt, (("point", str(point)),), {}, answer, meta))
    return samples


def _json_array(path: Path, raw: bytes) -> list[Any]:
    """A file holding one JSON array; malformed JSON is reported with its line and column."""
    try:
        records = json.loads(raw)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}:{error.colno}: malformed JSON: {error.msg}") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error})") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON array of records, found {type(records).__name__}")
    return records


def _parse_records(path: Path, raw: bytes) -> list[dict[str, Any]]:
    records = _json_array(path, raw)
    for index, record in enumerate(records):
        if not isinstance(record, dict) or "id" not in record:
            raise DataError(f"{path}: record #{index} is not an object with an 'id'")
        if not isinstance(record["id"], (str, int)) or isinstance(record["id"], bool):
            raise DataError(f"{path}: record #{index} has an id of type {type(record['id']).__name__}")
    return records


def _gold_answers(
    task: TaskSpec, path: Path, records: list[dict[str, Any]], wanted: set[str], problems: list[Problem]
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Gold answer and extra fields by string id, for the wanted ids (answer files are shared by tasks)."""
    gold: dict[str, tuple[str, dict[str, Any]]] = {}
    for record in records:
        sample_id = str(record["id"])
        if sample_id not in wanted:
            continue
        try:
            answer = _gold_of(task, record)
        except ValueError as error:
            problems.append(Problem(str(path), f"unreadable answer: {error}", (sample_id,)))
            continue
        if sample_id in gold and gold[sample_id][0] != answer:
            problems.append(
                Problem(
                    str(path), f"id given twice with different answers {gold[sample_id][0]!r}, {answer!r}", (sample_id,)
                )
            )
        extras = {key: value for key, value in record.items() if key not in _RESERVED_KEYS}
        gold[sample_id] = (answer, extras)
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
    path: Path,
    records: list[dict[str, Any]],
    gold: dict[str, tuple[str, dict[str, Any]]],
    paths: DataPaths,
    problems: list[Problem],
) -> list[Sample]:
    counts = Counter(str(record["id"]) for record in records)
    for sample_id, count in counts.items():
        if count > 1:
            problems.append(Problem(str(path), f"id appears {count} times", (sample_id,)))
    samples = []
    for index, record in enumerate(records):
        sample_id = str(record["id"])
        if counts[sample_id] > 1:
            continue
        try:
            samples.append(_sample(task, index, record, gold, paths))
        except ValueError as error:
            problems.append(Problem(str(path), str(error), (sample_id,)))
    return samples


def _sample(
    task: TaskSpec,
    index: int,
    record: dict[str, Any],
    gold: dict[str, tuple[str, dict[str, Any]]],
    paths: DataPaths,
) -> Sample:
    sample_id = str(record["id"])
    prompt = _human_turn(record)
    if sample_id not in gold:
        raise ValueError(f"no answer for this id in {task.answers}")
    answer, answer_extras = gold[sample_id]
    extras = {key: value for key, value in record.items() if key not in _RESERVED_KEYS}
    meta = {**answer_extras, **extras, "question_index": index}
    try:
        media = _media_in_placeholder_order(task, prompt, record.get("modal_inputs", {}), paths)
        options = _options(task, prompt, answer)
    except ValueError as error:
        return Sample(task.name, sample_id, prompt, (), {}, answer, meta, error=str(error))
    return Sample(task.name, sample_id, prompt, media, options, answer, meta)


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
    task: TaskSpec, prompt: str, modal_inputs: Any, paths: DataPaths
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
    order = [_MODALITY_OF_PLACEHOLDER[match.group()] for match in _PLACEHOLDER_PATTERN.finditer(prompt)]
    placed = Counter(order)
    for modality in MODALITIES:
        given = len(files.get(modality, []))
        if placed[modality] != given:
            raise ValueError(
                f"{placed[modality]} {PLACEHOLDERS[modality]} placeholder(s) but {given} {modality} file(s)"
            )
        if given and modality not in task.modalities:
            raise ValueError(f"has {modality} input, which task {task.name} does not declare")
    data_root = task.data_root(paths.data_root)
    taken: Counter[Modality] = Counter()
    media = []
    for modality in order:
        raw = files[modality][taken[modality]]
        taken[modality] += 1
        media.append((modality, str(resolve_media_path(raw, data_root, paths.media_root))))
    return tuple(media)


def _options(task: TaskSpec, prompt: str, answer: str) -> dict[str, str]:
    if task.answer_type == "class":
        return dict(task.options or {})
    if task.answer_type == "text":
        return {}
    options = parse_options(prompt)
    if len(options) < 2:
        raise ValueError("no lettered options (A., B., ...) found in the prompt")
    if answer not in options:
        raise ValueError(f"gold answer {answer!r} is not one of the option letters {', '.join(options)}")
    return options
