"""`python -m mcub.report RUN_DIR...`: one table over runs, a row per run and a column per task.

Runs that ran a task under different protocols or on different data never share a column: the column
name then carries the protocol and the first characters of the data hash."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mcub.results import RunSummary, read_summary


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
    """A pandas DataFrame: index = runs, columns = tasks; cells "acc [low, high]", or numbers when `numeric`."""
    import pandas as pd

    summaries = [read_summary(run_dir) for run_dir in run_dirs]
    columns = task_columns(summaries)
    rows = {}
    for run_dir, summary in zip(run_dirs, summaries, strict=True):
        row = {}
        for name, task in summary.tasks.items():
            label = columns[(name, task.protocol, task.question_sha256 + task.answer_sha256)]
            m = task.metrics
            if numeric:
                row.update({f"{label} acc": m.accuracy, f"{label} ci_low": m.ci_low, f"{label} ci_high": m.ci_high})
            else:
                row[label] = "-" if m.accuracy is None else f"{m.accuracy:.2f} [{m.ci_low:.2f}, {m.ci_high:.2f}]"
        rows[f"{summary.model.get('name', '?')} ({run_dir.name})"] = row
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcub.report", description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (each holds summary.json)")
    parser.add_argument("--format", choices=["md", "csv", "html", "latex"], default="md")
    parser.add_argument("--output", type=Path, help="write the table here instead of printing it")
    args = parser.parse_args(argv)
    try:
        text = render(report_frame(args.runs, numeric=args.format == "csv"), args.format)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
