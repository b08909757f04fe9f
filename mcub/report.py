"""`python -m mcub.report RUN_DIR...`: one table over runs, a row per run and a column per task.

Runs that ran a task under different protocols or on different data never share a column: the column
name then carries the protocol and the first characters of the data hash."""

from __future__ import annotations

import argparse
from pathlib import Path

from mcub.results import RunSummary, read_summary, write_atomically


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
COMBINATION_FAMILIES = ("avqa", "music-avqa")


def plot_runs(run_dirs: list[Path], path: Path):
    """A PNG: accuracy per task with 95% intervals (a bar per run), and AVQA / MUSIC-AVQA accuracy by input
    combination (a line per run and family). Returns the matplotlib figure."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summaries = [read_summary(run_dir) for run_dir in run_dirs]
    labels = [f"{summary.model.name} ({run_dir.name})" for summary, run_dir in zip(summaries, run_dirs, strict=True)]
    tasks = list(dict.fromkeys(task for summary in summaries for task in summary.tasks))
    figure, (by_task, by_combination) = plt.subplots(2, 1, figsize=(max(8.0, 0.7 * len(tasks) + 3), 9))
    width = 0.8 / max(1, len(summaries))
    for position, (summary, label) in enumerate(zip(summaries, labels, strict=True)):
        metrics = [summary.tasks[task].metrics if task in summary.tasks else None for task in tasks]
        heights = [m.accuracy if m and m.accuracy is not None else math.nan for m in metrics]
        below = [h - m.ci_low if m and m.ci_low is not None else 0.0 for h, m in zip(heights, metrics, strict=True)]
        above = [m.ci_high - h if m and m.ci_high is not None else 0.0 for h, m in zip(heights, metrics, strict=True)]
        centres = [index + (position - (len(summaries) - 1) / 2) * width for index in range(len(tasks))]
        by_task.bar(centres, heights, width, yerr=[below, above], capsize=2, label=label)
    by_task.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
    by_task.set_ylabel("accuracy (%), 95% interval")
    by_task.legend(fontsize="small")
    drawn = False
    for summary, label in zip(summaries, labels, strict=True):
        for family in COMBINATION_FAMILIES:
            values = [summary.tasks.get(f"{family}-{combination}") for combination in COMBINATIONS]
            if not any(values):
                continue
            ys = [v.metrics.accuracy if v and v.metrics.accuracy is not None else math.nan for v in values]
            by_combination.plot(range(len(COMBINATIONS)), ys, marker="o", label=f"{label}: {family}")
            drawn = True
    if drawn:
        by_combination.set_xticks(range(len(COMBINATIONS)), COMBINATIONS, rotation=20)
        by_combination.set_ylabel("accuracy (%)")
        by_combination.legend(fontsize="small")
    else:
        by_combination.text(0.5, 0.5, "no AVQA or MUSIC-AVQA tasks in these runs", ha="center", va="center")
        by_combination.set_axis_off()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return figure


def main(argv: list[str] | None = None) -> int:
    from mcub.cli import run_command

    parser = argparse.ArgumentParser(prog="mcub report", description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (each holds summary.json)")
    parser.add_argument("--format", choices=["md", "csv", "html", "latex"], default="md")
    parser.add_argument("--output", type=Path, help="write the table here instead of printing it")
    parser.add_argument("--plot", type=Path, help="also draw accuracy per task and per input combination (PNG)")
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
