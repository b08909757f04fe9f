"""`python -m mcub.report RUN_DIR...`: one table over runs, a row per run and a column per task.

Runs that ran a task under different protocols or on different data never share a column: the column
name then carries the protocol and the first characters of the data hash."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from mcub.errors import RunError
from mcub.results import RunSummary, read_summary, write_atomically
from mcub.tasks import Registry, load_registry


def task_columns(summaries: list[RunSummary]) -> dict[tuple[str, str, str], str]:
    """A column name per (task, protocol, data hash): the task name alone when all runs agree on it."""
    variants: dict[str, set[tuple[str, str]]] = {}
    for summary in summaries:
        for name, task in summary.tasks.items():
            variants.setdefault(name, set()).add((task.protocol, task.question_sha256 + task.answer_sha256))
    columns = {}
    for name, kinds in variants.items():
        for protocol, data_hash in sorted(kinds):
            label = name if len(kinds) == 1 else f"{name} [{protocol}, data {data_hash[:8]}]"
            columns[(name, protocol, data_hash)] = label
    return columns


def report_frame(run_dirs: list[Path], numeric: bool):
    """A pandas DataFrame: index = runs, columns = tasks (and `<task> circular`, the CircularEval accuracy, for a
    rotated task); cells "acc [low, high]", or numbers when `numeric`."""
    import pandas as pd

    summaries = [read_summary(run_dir) for run_dir in run_dirs]
    columns = task_columns(summaries)
    rows = {}
    for run_dir, summary in zip(run_dirs, summaries, strict=True):
        row = {}
        for name, task in summary.tasks.items():
            label = columns[(name, task.protocol, task.question_sha256 + task.answer_sha256)]
            cells = {label: task.metrics}
            if task.metrics.circular is not None:
                cells[f"{label} circular"] = task.metrics.circular
            for column, m in cells.items():
                if numeric:
                    row.update({f"{column} acc": m.accuracy, f"{column} ci_low": m.ci_low,
                                f"{column} ci_high": m.ci_high})  # fmt: skip
                else:
                    row[column] = "-" if m.accuracy is None else f"{m.accuracy:.2f} [{m.ci_low:.2f}, {m.ci_high:.2f}]"
        rows[f"{summary.model.name} ({run_dir.name})"] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "run"
    return frame


def render(frame, fmt: str) -> str:
    if fmt == "md":
        return frame.to_markdown()
    if fmt == "csv":
        return frame.to_csv()
    if fmt == "html":
        return frame.to_html(escape=True, na_rep="-")
    return frame.to_latex(escape=True, na_rep="-")


COMBINATIONS = ("audio", "image", "video", "image+audio", "image+video", "video+audio", "video+image+audio")
COMBINATION_FAMILIES = {"avqa": "AVQA", "music-avqa": "MUSIC-AVQA"}
FONTS = {"font.size": 11, "axes.titlesize": 13, "axes.labelsize": 11, "xtick.labelsize": 10, "ytick.labelsize": 10,
         "legend.fontsize": 10}  # fmt: skip
PANEL_HEIGHT = 3.6
"""Inches per panel (and one for the legend above them); the width grows with the bars of the widest panel."""
LEGEND_COLUMNS = 3
MAX_BAR = 0.3
"""The widest bar, in categories (a panel of one or two categories keeps slim bars)."""


@dataclass(frozen=True)
class Panel:
    """One axes of the plot: a title and its bars' categories, as (task, tick label)."""

    title: str
    categories: tuple[tuple[str, str], ...]


def plot_panels(summaries: list[RunSummary], registry: Registry) -> list[Panel]:
    """The panels with data: accuracy per task; MCUB by modality subset (its tasks' modalities); AVQA and MUSIC-AVQA
    by input combination. A category is kept when some run has an accuracy for it, a panel when it keeps one."""
    scored = {
        name for summary in summaries for name, task in summary.tasks.items() if task.metrics.accuracy is not None
    }
    tasks = [task for task in dict.fromkeys(t for summary in summaries for t in summary.tasks) if task in scored]
    mcub = [(name, "+".join(spec.modalities)) for name, spec in registry.tasks.items()
            if spec.family == "mcub" and name in scored]  # fmt: skip
    panels = [Panel("accuracy per task", tuple((task, task) for task in tasks)),
              Panel("MCUB by modality subset", tuple(mcub))]  # fmt: skip
    for family, label in COMBINATION_FAMILIES.items():
        present = [(f"{family}-{c}", c) for c in COMBINATIONS if f"{family}-{c}" in scored]
        panels.append(Panel(f"{label} by input combination", tuple(present)))
    return [panel for panel in panels if panel.categories]


def plot_runs(run_dirs: list[Path], path: Path):
    """A PNG with a panel per view that has data (`plot_panels`): a bar per run and category at its accuracy, with
    its 95% interval, fonts and figure size set for reading at the written size. Returns the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summaries = [read_summary(run_dir) for run_dir in run_dirs]
    panels = plot_panels(summaries, load_registry())
    if not panels:
        raise RunError(f"nothing to plot: no task of {', '.join(map(str, run_dirs))} has an accuracy")
    labels = [f"{summary.model.name} ({run_dir.name})" for summary, run_dir in zip(summaries, run_dirs, strict=True)]
    widest = max(len(panel.categories) for panel in panels)
    width = min(30.0, max(8.0, 2.0 + widest * (0.3 * len(summaries) + 0.4)))
    legend_rows = -(-len(labels) // LEGEND_COLUMNS)
    height = PANEL_HEIGHT * len(panels) + 0.5 + 0.3 * legend_rows
    with plt.rc_context(FONTS):
        figure, axes = plt.subplots(len(panels), 1, figsize=(width, height), squeeze=False, layout="constrained")
        for ax, panel in zip(axes[:, 0], panels, strict=True):
            _draw_panel(ax, panel, summaries, labels, width)
        handles, names = axes[0, 0].get_legend_handles_labels()
        figure.legend(handles, names, loc="outside upper center", ncol=min(len(labels), LEGEND_COLUMNS))
        figure.savefig(path, dpi=120)
    return figure


def _draw_panel(ax, panel: Panel, summaries: list[RunSummary], labels: list[str], width: float) -> None:
    """A bar per run and category at its accuracy (NaN where the run lacks it), whiskers over its 95% interval; tick
    labels slanted when they would not fit the figure's `width` (inches) side by side."""
    import math

    bar = min(0.8 / len(summaries), MAX_BAR)
    for position, (summary, label) in enumerate(zip(summaries, labels, strict=True)):
        metrics = [summary.tasks[task].metrics if task in summary.tasks else None for task, _ in panel.categories]
        heights = [m.accuracy if m and m.accuracy is not None else math.nan for m in metrics]
        below = [h - m.ci_low if m and m.ci_low is not None else 0.0 for h, m in zip(heights, metrics, strict=True)]
        above = [m.ci_high - h if m and m.ci_high is not None else 0.0 for h, m in zip(heights, metrics, strict=True)]
        centres = [index + (position - (len(summaries) - 1) / 2) * bar for index in range(len(heights))]
        ax.bar(centres, heights, bar, yerr=[below, above], capsize=3, label=label)
    ticks = [tick for _, tick in panel.categories]
    slanted = max(len(tick) for tick in ticks) * len(ticks) > 8 * width
    ax.set_xticks(range(len(ticks)), ticks, rotation=30 if slanted else 0, ha="right" if slanted else "center")
    ax.set_xlim(-0.5, len(ticks) - 0.5)
    ax.set_ylim(0, 105)
    ax.set_title(panel.title)
    ax.set_ylabel("accuracy (%), 95% CI")


def main(argv: list[str] | None = None) -> int:
    from mcub.cli import run_command

    parser = argparse.ArgumentParser(prog="mcub report", description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (each holds summary.json)")
    parser.add_argument("--format", choices=["md", "csv", "html", "latex"], default="md")
    parser.add_argument("--output", type=Path, help="write the table here instead of printing it")
    parser.add_argument(
        "--plot",
        type=Path,
        help="also draw accuracy per task, per MCUB modality subset, per AVQA / MUSIC-AVQA input combination (PNG)",
    )
    args = parser.parse_args(argv)

    def command() -> int:
        text = render(report_frame(args.runs, numeric=args.format == "csv"), args.format)
        if args.plot:
            plot_runs(args.runs, args.plot)
        if args.output:
            write_atomically(args.output, text + "\n")
        else:
            print(text)
        return 0

    return run_command(command)


if __name__ == "__main__":
    from mcub.cli import exit_now

    exit_now(main())
