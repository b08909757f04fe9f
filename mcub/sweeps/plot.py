"""The plot of a sweep (matplotlib, Agg): one panel per reported figure that some point has, each marking the
selected point: lines with their 95% interval band over one axis, a heatmap (each cell annotated with its value
and interval) over two, and the points in grid order with interval bars over more."""

from __future__ import annotations

import math
from pathlib import Path

from mcub.sweeps.results import TEST_SET_MARK, SweepResults
from mcub.sweeps.selection import Figure

COLUMNS = 3


def plot_sweep(results: SweepResults, path: Path):
    """Draw the sweep into a PNG at `path` and return the matplotlib figure (the caller closes it); None, and nothing
    written, when no point has any figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {
        label: figures
        for label, figures in results.columns.items()
        if any(figure is not None and figure.value is not None for figure in figures)
    }
    if not panels:
        return None
    width, height = _panel_size(results)
    columns = min(COLUMNS, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, grid = plt.subplots(rows, columns, figsize=(width * columns, height * rows + 0.6), squeeze=False)
    cells = [axes for row in grid for axes in row]
    for axes in cells[len(panels) :]:
        figure.delaxes(axes)
    draw = {1: _lines, 2: _heatmap}.get(len(results.axes), _in_grid_order)
    for axes, (label, figures) in zip(cells, panels.items(), strict=False):
        draw(axes, results, figures)
        axes.set_title(label.replace(f" ({TEST_SET_MARK})", f"\n({TEST_SET_MARK})"), fontsize=10,
                       color="firebrick" if label == results.marked else "black")  # fmt: skip
    if results.selection is not None:
        selection = results.selection
        where = f" ({TEST_SET_MARK})" if selection.on_test_set else ""
        figure.suptitle(f"selected on {selection.on}{where}, marked in red:\n{selection.point}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return figure


def _panel_size(results: SweepResults) -> tuple[float, float]:
    if len(results.axes) == 1:
        return 5.0, 3.6
    if len(results.axes) == 2:
        first, second = results.axes
        return max(4.5, 1.15 * len(second.values) + 2.5), max(3.2, 0.7 * len(first.values) + 1.8)
    return max(5.0, 0.35 * len(results.points) + 2.0), 4.5


def _values(figures: list[Figure | None]) -> tuple[list[float], list[float], list[float]]:
    """Values, lower and upper interval ends, NaN where a point has none."""

    def pick(figure: Figure | None, name: str) -> float:
        value = getattr(figure, name) if figure is not None else None
        return math.nan if value is None else value

    return tuple([pick(figure, name) for figure in figures] for name in ("value", "low", "high"))  # type: ignore[return-value]


def _numeric(values: tuple) -> bool:
    return all(isinstance(value, int | float) and not isinstance(value, bool) for value in values)


def _lines(axes, results: SweepResults, figures: list[Figure | None]) -> None:
    [axis] = results.axes
    xs = list(axis.values) if _numeric(axis.values) else list(range(len(axis.values)))
    values, low, high = _values(figures)
    axes.plot(xs, values, marker="o")
    axes.fill_between(xs, low, high, alpha=0.2, label="95% interval")
    axes.set_xticks(xs, axis.labels)
    if results.selected is not None:
        axes.plot([xs[results.selected]], [values[results.selected]], marker="*", markersize=14, color="firebrick",
                  linestyle="none", label="selected")  # fmt: skip
    axes.set_xlabel(axis.key)
    axes.set_ylabel("percent")
    axes.legend(fontsize="small")


def _heatmap(axes, results: SweepResults, figures: list[Figure | None]) -> None:
    import numpy as np
    from matplotlib.patches import Rectangle

    first, second = results.axes
    values, low, high = (np.array(column).reshape(len(first.values), len(second.values)) for column in _values(figures))
    image = axes.imshow(values, cmap="viridis", aspect="auto")
    axes.figure.colorbar(image, ax=axes, label="percent")
    axes.set_xticks(range(len(second.labels)), second.labels)
    axes.set_yticks(range(len(first.labels)), first.labels)
    axes.set_xlabel(second.key)
    axes.set_ylabel(first.key)
    finite = values[np.isfinite(values)]
    middle = (finite.min() + finite.max()) / 2
    for (row, column), value in np.ndenumerate(values):
        text = "-" if math.isnan(value) else f"{value:.1f}\n[{low[row, column]:.0f}, {high[row, column]:.0f}]"
        colour = "white" if math.isnan(value) or value <= middle else "black"
        axes.text(column, row, text, ha="center", va="center", fontsize=8, color=colour)
    if results.selected is not None:
        row, column = divmod(results.selected, len(second.values))
        axes.add_patch(Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="firebrick", linewidth=2.5))


def _in_grid_order(axes, results: SweepResults, figures: list[Figure | None]) -> None:
    values, low, high = _values(figures)
    xs = range(len(values))
    below = [v - lo for v, lo in zip(values, low, strict=True)]
    above = [hi - v for v, hi in zip(values, high, strict=True)]
    axes.errorbar(xs, values, yerr=[below, above], marker="o", linestyle="none", capsize=2)
    if results.selected is not None:
        axes.plot([results.selected], [values[results.selected]], marker="*", markersize=14, color="firebrick")
    axes.set_xticks(list(xs), [point.name for point in results.points], rotation=90, fontsize=7)
    axes.set_ylabel("percent")
