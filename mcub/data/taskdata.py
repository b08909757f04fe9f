"""What reading a task's data gives: its samples, and every problem found, each with its file and sample ids."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mcub.errors import DataError
from mcub.schema import Sample
from mcub.tasks import TaskSpec

_LISTED_IDS = 10


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
    """A task's samples, the hashes of its files, and its problems: `record_problems` (records that are not
    samples, and notes on records that are), `sample_problems` (why each error sample cannot be posed; each
    such sample counts in the denominator and is recorded as an error), `unanswered` (the ids of questions
    without an answer, left out of the denominator; each is also a record problem)."""

    task: TaskSpec
    question_file: Path
    answer_file: Path
    question_sha256: str
    answer_sha256: str
    samples: list[Sample]
    record_problems: list[Problem]
    sample_problems: list[Problem]
    unanswered: tuple[str, ...]

    @property
    def problems(self) -> list[Problem]:
        return [*self.record_problems, *self.sample_problems]

    @property
    def unanswered_note(self) -> str | None:
        """One line for the console when some questions have no answer (None when every question has one)."""
        if not self.unanswered:
            return None
        listed = ", ".join(self.unanswered[:_LISTED_IDS])
        more = f", ... ({len(self.unanswered) - _LISTED_IDS} more)" if len(self.unanswered) > _LISTED_IDS else ""
        return (
            f"task {self.task.name}: {len(self.unanswered)} question(s) without an answer in {self.answer_file.name} "
            f"are left out: ids {listed}{more}"
        )

    def raise_for_problems(self) -> None:
        if self.problems:
            listing = "\n".join(f"  {problem}" for problem in self.problems)
            raise DataError(f"task {self.task.name}: {len(self.problems)} problem(s) in its data:\n{listing}")
