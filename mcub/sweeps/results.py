"""A sweep's results: per point the figures of every reported task, and the selected point. When the task it was
selected on is also reported, its column is marked as selected on the test set: its figure at the chosen point is
optimistic, the others are not chosen on their own items."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pydantic import BaseModel

from mcub.schema import RunSummary
from mcub.sweeps.grid import Axis, Point
from mcub.sweeps.selection import Figure, SelectionError, SelectOn, select_point, task_figures

TEST_SET_MARK = "selected on the test set"
SELECTION_RULE = "the best accuracy; among ties, the first point in grid order"


class Selection(BaseModel):
    """The selected point as sweep.json records it, with every reported figure at that point."""

    on: str
    rule: str = SELECTION_RULE
    point: str
    value: float
    tied: list[str]
    """Every point with the same best value (the first is the one selected)."""
    on_test_set: bool
    at_point: dict[str, dict[str, float | int | None]]


@dataclass(frozen=True)
class SweepResults:
    """The table of a sweep: `columns` maps a figure's label to its value at each point (None where the point's run
    lacks it); `marked` is the reported column the point was selected on, if any."""

    axes: list[Axis]
    points: list[Point]
    columns: dict[str, list[Figure | None]]
    selection: Selection | None = None
    selected: int | None = None
    marked: str | None = None


def sweep_results(
    axes: list[Axis],
    points: list[Point],
    summaries: list[RunSummary],
    reported: list[str],
    select_on: SelectOn | None,
) -> SweepResults:
    """The figures of the `reported` tasks at every point, and the point `select_on` picks."""
    per_point = [task_figures(summary, reported) for summary in summaries]
    labels = list(dict.fromkeys(label for figures in per_point for label in figures))
    columns = {label: [figures.get(label) for figures in per_point] for label in labels}
    if select_on is None:
        return SweepResults(axes, points, columns)
    chosen = [
        select_on.figure(summary, f"point {point.name}") for point, summary in zip(points, summaries, strict=True)
    ]
    index = select_point([figure.value for figure in chosen])
    if index is None:
        raise SelectionError(f"--select-on {select_on}: no point has an accuracy to select on (no items)")
    on_test_set = select_on.task in reported
    marked = None
    if on_test_set:
        marked = f"{select_on.task} ({TEST_SET_MARK})"
        columns = {marked if label == select_on.task else label: values for label, values in columns.items()}
    if select_on.cell is not None or not on_test_set:
        columns[f"{select_on} (selection)"] = list(chosen)
    best = chosen[index].value
    selection = Selection(
        on=str(select_on),
        point=points[index].name,
        value=best,
        tied=[point.name for point, figure in zip(points, chosen, strict=True) if figure.value == best],
        on_test_set=on_test_set,
        at_point={label: asdict(values[index]) for label, values in columns.items() if values[index] is not None},
    )
    return SweepResults(axes, points, columns, selection, index, marked)
