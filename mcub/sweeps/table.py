"""The table of a sweep (pandas): a row per point in grid order, the axes' values, each reported figure with its
95% interval, and which point was selected; as CSV (numbers) and markdown (with the selection spelled out)."""

from __future__ import annotations

from mcub.sweeps.results import TEST_SET_MARK, SweepResults


def sweep_frame(results: SweepResults, numeric: bool):
    """A DataFrame indexed by point name; cells `value [low, high]`, or with `numeric` three number columns per
    figure (`LABEL`, `LABEL ci_low`, `LABEL ci_high`)."""
    import pandas as pd

    rows = {}
    for index, point in enumerate(results.points):
        row = {axis.key: point.values[axis.key] for axis in results.axes}
        for label, figures in results.columns.items():
            figure = figures[index]
            if numeric:
                row |= {label: None, f"{label} ci_low": None, f"{label} ci_high": None}
                if figure is not None:
                    row |= {label: figure.value, f"{label} ci_low": figure.low, f"{label} ci_high": figure.high}
            else:
                row[label] = "-" if figure is None else figure.cell()
        if results.selection is not None:
            mark = TEST_SET_MARK if results.selection.on_test_set else "selected"
            row["selection"] = mark if index == results.selected else ""
        rows[point.name] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "point"
    return frame


def sweep_markdown(results: SweepResults) -> str:
    """The markdown table, then the selection: the point, its rule, and every reported figure at that point."""
    lines = [sweep_frame(results, numeric=False).to_markdown()]
    selection = results.selection
    if selection is not None:
        lines += ["", f"Selected on {selection.on} ({selection.rule}): {selection.point}, {selection.value:.2f}."]
        if len(selection.tied) > 1:
            lines.append(f"Tied with it: {', '.join(selection.tied[1:])}.")
        if selection.on_test_set:
            lines.append(
                f"{selection.on} is also reported: its figure at this point was {TEST_SET_MARK} and is optimistic."
            )
        lines += ["", "At the selected point:"]
        lines += [f"- {label}: {results.columns[label][results.selected].cell()}" for label in selection.at_point]
    return "\n".join(lines)
