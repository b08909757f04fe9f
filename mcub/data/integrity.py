"""Cross-checks of a task's question file against its answer file, and against the other tasks' question files
that read the same answer file.

Questions are compared by their words: media placeholders (with a modality label before them, "image: <image>")
are removed and whitespace is collapsed, so the same question posed with other inputs (AVQA's seven variants,
MCUB-4 and MCUB-3) compares equal."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

from mcub.data.files import parse_records, read_bytes
from mcub.data.taskdata import Problem
from mcub.errors import DataError
from mcub.modalities import PLACEHOLDERS, REFERENCE_KEYS
from mcub.schema import DataPaths
from mcub.tasks import TaskSpec

MIN_COMPARED_WORDS = 3
"""An answer record's human turn with fewer words (media placeholders aside) is a placeholder ("q"), not a
question, and is not compared."""

_LABELS = "|".join(sorted({*PLACEHOLDERS, *REFERENCE_KEYS}))
_LABELLED_PLACEHOLDER = re.compile(
    rf"(?:\b(?i:{_LABELS})[ \t]*:[ \t]*)?(?:{'|'.join(re.escape(p) for p in PLACEHOLDERS.values())})"
)
_EXCERPT = 30


def question_words(prompt: str) -> str:
    """A human turn without its media placeholders, whitespace collapsed: what two files must agree on."""
    return " ".join(_LABELLED_PLACEHOLDER.sub(" ", prompt).split())


def human_turn_text(record: dict[str, Any]) -> str | None:
    """The text of a record's first turn when it is a human turn, else None."""
    turns = record.get("conversations")
    first = turns[0] if isinstance(turns, list) and turns else None
    if isinstance(first, dict) and first.get("from") == "human" and isinstance(first.get("value"), str):
        return first["value"]
    return None


def question_difference(answered: str | None, asked: str) -> str | None:
    """Where the answer record's question (`answered`) departs from the question file's (`asked`), or None when
    they agree or the answer record's is absent or a placeholder (under MIN_COMPARED_WORDS words)."""
    if answered is None or answered == asked:
        return None
    ours, theirs = question_words(answered), question_words(asked)
    if len(ours.split()) < MIN_COMPARED_WORDS or ours == theirs:
        return None
    at = len(os.path.commonprefix([ours, theirs]))
    start = max(0, at - _EXCERPT)
    return f"from character {at}: {ours[start : at + _EXCERPT]!r} vs {theirs[start : at + _EXCERPT]!r}"


def shared_id_problems(
    task: TaskSpec, question_file: Path, records: list[dict[str, Any]], paths: DataPaths
) -> list[Problem]:
    """Ids of `question_file` that another task's question file reading the same answer file asks with other
    words: the answer file's one gold per id cannot answer both. Only files already on disk are read."""
    others = _sharing_question_files(task, paths)
    asked = _asked(records) if others else {}
    problems = []
    for other in others:
        theirs = _asked_in(other)
        reused = tuple(sample_id for sample_id, words in asked.items() if theirs.get(sample_id, words) != words)
        if reused:
            message = (
                f"{len(reused)} id(s) also in {other} with a different question; both files take their gold "
                f"from {task.answers}, which has one answer per id"
            )
            problems.append(Problem(str(question_file), message, reused))
    return problems


def _sharing_question_files(task: TaskSpec, paths: DataPaths) -> list[Path]:
    """The question files of the other registered tasks that read the task's answer file from the same folder."""
    root = task.data_root(paths.data_root)
    files = {
        root / other.folder / other.questions
        for other in _registered_tasks()
        if other.format == "reference"
        and (other.folder, other.answers) == (task.folder, task.answers)
        and other.questions != task.questions
        and other.data_root(paths.data_root) == root
    }
    return sorted(path for path in files if path.is_file())


@functools.cache
def _registered_tasks() -> tuple[TaskSpec, ...]:
    from mcub.tasks import load_registry

    return tuple(load_registry().tasks.values())


def _asked_in(path: Path) -> dict[str, str]:
    stat = path.stat()
    return _asked_in_version(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _asked_in_version(path: Path, mtime_ns: int, size: int) -> dict[str, str]:
    """The question words by id of one version of a question file (read once per version); a file that cannot be
    read compares as empty here: its own task reports why."""
    try:
        return _asked(parse_records(path, read_bytes(path)))
    except DataError:
        return {}


def _asked(records: list[dict[str, Any]]) -> dict[str, str]:
    asked = {}
    for record in records:
        text = human_turn_text(record)
        if text is not None:
            asked[str(record["id"])] = question_words(text)
    return asked
