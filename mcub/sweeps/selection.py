"""What a sweep reports per point and how it picks one: each task's figures (accuracy with its 95% interval, or
the open-answer scores of a task without right or wrong), read from the points' summaries, and `--select-on
TASK[:FIELD=VALUE]`: the point with the best accuracy on a task (or on one cell of its breakdown). Ties go to the
first point in grid order."""

from __future__ import annotations

from dataclasses import dataclass

from mcub.errors import McubError
from mcub.schema import Accuracy, MeanScore, RunSummary


class SelectionError(McubError):
    """The selection cannot be made as asked."""


@dataclass(frozen=True)
class Figure:
    """A figure of one point: a percentage over `n` items with its 95% interval (None where n is 0)."""

    value: float | None
    low: float | None
    high: float | None
    n: int

    @classmethod
    def of(cls, metric: Accuracy | MeanScore) -> Figure:
        value = metric.accuracy if isinstance(metric, Accuracy) else metric.mean
        return cls(value, metric.ci_low, metric.ci_high, metric.n)

    def cell(self) -> str:
        """`value [low, high]` in points, `-` when there is none."""
        return "-" if self.value is None else f"{self.value:.2f} [{self.low:.2f}, {self.high:.2f}]"


def task_figures(summary: RunSummary, tasks: list[str]) -> dict[str, Figure]:
    """Per task of `tasks` that the run holds, its accuracy (column `TASK`), or for open answers without right or
    wrong each score (`TASK SCORE`)."""
    figures = {}
    for task in tasks:
        if task not in summary.tasks:
            continue
        metrics = summary.tasks[task].metrics
        if metrics.accuracy is None and metrics.scores:
            figures |= {f"{task} {name}": Figure.of(score) for name, score in metrics.scores.items()}
        else:
            figures[task] = Figure.of(metrics)
    return figures


@dataclass(frozen=True)
class SelectOn:
    """`--select-on TASK[:FIELD=VALUE]`: a task's accuracy, or that of one cell of its breakdown."""

    task: str
    cell: tuple[str, str] | None = None

    @classmethod
    def parse(cls, text: str) -> SelectOn:
        task, sep, cell = text.partition(":")
        field, equals, value = cell.partition("=")
        if not task.strip() or (sep and not (equals and field.strip() and value.strip())):
            raise SelectionError(f"--select-on {text!r}: not TASK or TASK:FIELD=VALUE (a cell of its breakdown)")
        return cls(task.strip(), (field.strip(), value.strip()) if sep else None)

    def __str__(self) -> str:
        return self.task if self.cell is None else f"{self.task}:{self.cell[0]}={self.cell[1]}"

    def figure(self, summary: RunSummary, where: str) -> Figure:
        """The selection figure of one point's run (`where` names it in errors)."""
        if self.task not in summary.tasks:
            raise SelectionError(f"{where}: no task {self.task} to select on (it was not run)")
        metrics = summary.tasks[self.task].metrics
        if self.cell is None:
            if metrics.accuracy is None and metrics.n:
                raise SelectionError(f"{where}: task {self.task} has no accuracy (open answers) to select on")
            return Figure.of(metrics)
        field, label = self.cell
        cells = metrics.breakdown.get(field, {})
        if label not in cells:
            known = ", ".join(f"{name}={cell}" for name, values in metrics.breakdown.items() for cell in values)
            raise SelectionError(f"{where}: task {self.task} has no breakdown cell {field}={label}; "
                                 f"it has {known or 'no breakdown'}")  # fmt: skip
        return Figure.of(cells[label])


def select_point(values: list[float | None]) -> int | None:
    """The index of the best value; the first in grid order among ties; None when no point has a value."""
    scored = [value for value in values if value is not None]
    if not scored:
        return None
    return values.index(max(scored))
