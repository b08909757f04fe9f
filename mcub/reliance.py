"""`mcub reliance` (`python -m mcub.reliance`): how much a model relies on each input. For a model and tasks, the
accuracy under each run condition (drop, blank, swap, ...) against the unmodified run, paired per sample with the
figures of `mcub compare` (paired-bootstrap interval, exact McNemar test), as one table and one plot.

`mcub reliance BASE_RUN COND_RUN...` reads existing runs; `mcub reliance --model M --tasks T --conditions
drop:audio,blank:image` runs the runs that are missing (under `--run-dir-base DIR/<model>/reliance-<conditions>`,
resumed where a run was cut short; a finished run with the same settings is read, not run again) and reads them."""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mcub.cli import DONE, run_command, split_names
from mcub.errors import McubError

RUN_PREFIX = "reliance-"


class RelianceError(McubError):
    """The runs of a reliance report cannot be compared (other models, no shared task)."""


@dataclass
class RelianceRow:
    """One task under one condition against the unmodified run: `mcub compare`'s paired figures for that pair."""

    task: str
    condition: str
    run_dir: str
    n: int
    base_accuracy: float
    accuracy: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    unpaired: int
    """Sample ids recorded in one of the two runs only (left out of the pairing)."""


@dataclass
class Reliance:
    model: str
    base_run: str
    base_condition: str
    rows: list[RelianceRow]
    not_applicable: dict[str, dict[str, str]] = field(default_factory=dict)
    """By condition, the tasks it was not run on and why (the condition does not apply to them)."""


def reliance_of_runs(base_dir: Path, condition_dirs: list[Path], seed: int = 0) -> Reliance:
    """Each conditioned run against the base run, task by task, with `mcub compare`'s code (`compare_runs`)."""
    from mcub.compare import compare_runs
    from mcub.conditions import condition_label
    from mcub.results import RunFiles
    from mcub.schema import RecordOutcome

    base = RunFiles(base_dir, view=RecordOutcome)
    rows = []
    for run_dir in condition_dirs:
        conditioned = RunFiles(run_dir, view=RecordOutcome)
        ours, theirs = base.summary.model, conditioned.summary.model
        if (ours.name, ours.args) != (theirs.name, theirs.args):
            raise RelianceError(
                f"{run_dir} is a run of model {theirs.name} {theirs.args}, {base_dir} of {ours.name} {ours.args}: a "
                "reliance report compares one model under conditions"
            )
        try:
            comparison = compare_runs(base, conditioned, alpha=0.05, max_drop=0.0, seed=seed, max_missing=1.0)
        except ValueError as error:
            raise RelianceError(str(error)) from None
        label = condition_label(conditioned.summary.settings.conditions)
        for compared in comparison.tasks:
            paired = compared.paired
            rows.append(
                RelianceRow(
                    task=compared.task,
                    condition=label,
                    run_dir=str(run_dir),
                    n=paired.n,
                    base_accuracy=_percent(paired.base_correct, paired.n),
                    accuracy=_percent(paired.new_correct, paired.n),
                    difference=paired.difference,
                    ci_low=paired.ci_low,
                    ci_high=paired.ci_high,
                    p_value=paired.p_value,
                    unpaired=compared.unpaired,
                )
            )
    label = condition_label(base.summary.settings.conditions)
    return Reliance(base.summary.model.name, str(base_dir), label, rows)


def _percent(correct: int, n: int) -> float:
    return round(100 * correct / n, 4) if n else 0.0


def reliance_run_name(specs: list[str]) -> str:
    """The run directory name of the reliance run under `specs` (`reliance-default`, `reliance-drop_audio`)."""
    from mcub.conditions import condition_label

    return RUN_PREFIX + re.sub(r"[^A-Za-z0-9.+-]", "_", condition_label(specs))


def run_reliance(request, conditions: list[str], log=None) -> Reliance:
    """Run (or read) the base run of `request` (under its own conditions) and one run per condition (the request's
    conditions, then it) on the request's tasks that the condition applies to; the report of them."""
    from mcub.conditions import ConditionError, canonical_specs, condition_task
    from mcub.data import load_task
    from mcub.tasks import load_registry

    if not request.tasks:
        raise RelianceError("a reliance run needs --tasks")
    registry = load_registry()
    tasks = registry.resolve(request.tasks)
    base_dir = _ensure_run(request, request.conditions, [task.name for task in tasks], log)
    dirs, not_applicable = [], {}
    for spec in canonical_specs(conditions):
        specs = canonical_specs([*request.conditions, spec])
        applicable = []
        for task in tasks:
            try:
                condition_task(load_task(task, request.data_paths), specs, request.seed)
            except ConditionError as error:
                not_applicable.setdefault(spec, {})[task.name] = str(error)
                continue
            applicable.append(task.name)
        if applicable:
            dirs.append(_ensure_run(request, specs, applicable, log))
    report = reliance_of_runs(base_dir, dirs, request.seed)
    report.not_applicable = not_applicable
    return report


def _ensure_run(request, specs: list[str], tasks: list[str], log) -> Path:
    """The run directory of the request under `specs` on `tasks`: read when finished with the same settings and every
    task, else run (resumed when it was started)."""
    from mcub.evaluation import identity, plan_run, run
    from mcub.results import IDENTITY_FILE, check_identity, read_summary
    from mcub.tasks import load_registry

    name = reliance_run_name(specs)
    run_dir = request.output_dir / request.model / name
    conditioned = request.model_copy(update={"conditions": specs, "tasks": tasks, "run_name": name,
                                             "resume": (run_dir / IDENTITY_FILE).is_file()})  # fmt: skip
    log = log or (lambda message: print(message, file=sys.stderr))
    if conditioned.resume and (run_dir / "summary.json").is_file():
        check_identity(run_dir, identity(conditioned, plan_run(conditioned, load_registry(), lambda _: None)))
        if set(tasks) <= set(read_summary(run_dir).tasks):
            log(f"reading {run_dir} (finished with these settings)")
            return run_dir
    log(f"running {request.model} under {', '.join(specs) or 'no condition'} into {run_dir}")
    return run(conditioned, log)[1]


def print_reliance(report: Reliance, out=None) -> None:
    out = out or sys.stdout
    print(f"model {report.model}; unmodified run ({report.base_condition}): {report.base_run}", file=out)
    print("| task | condition | n | unmodified | under condition | difference | 95% CI | McNemar p |", file=out)
    print("|---|---|---:|---:|---:|---:|---|---:|", file=out)
    for row in report.rows:
        print(
            f"| {row.task} | {row.condition} | {row.n} | {row.base_accuracy:.2f} | {row.accuracy:.2f} | "
            f"{row.difference:+.2f} | [{row.ci_low:+.2f}, {row.ci_high:+.2f}] | {row.p_value:.4g} |",
            file=out,
        )
    unpaired = {f"{row.task} {row.condition}": row.unpaired for row in report.rows if row.unpaired}
    if unpaired:
        print(f"ids recorded in one run only (left out): {unpaired}", file=out)
    for spec, tasks in report.not_applicable.items():
        for task, reason in tasks.items():
            print(f"not run: {task} under {spec}: {reason}", file=out)


def plot_reliance(report: Reliance, path: Path):
    """The paired differences (points, with their 95% intervals) per task, a bar per condition, into a PNG at
    `path`; returns the matplotlib figure (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(row.task for row in report.rows))
    conditions = list(dict.fromkeys(row.condition for row in report.rows))
    width = 0.8 / max(1, len(conditions))
    figure, axes = plt.subplots(figsize=(max(5.0, 1.2 * len(tasks) * max(1, len(conditions)) + 2), 4.2))
    for offset, condition in enumerate(conditions):
        rows = {row.task: row for row in report.rows if row.condition == condition}
        places = [index + (offset - (len(conditions) - 1) / 2) * width for index, task in enumerate(tasks)
                  if task in rows]  # fmt: skip
        shown = [rows[task] for task in tasks if task in rows]
        errors = [[row.difference - row.ci_low for row in shown], [row.ci_high - row.difference for row in shown]]
        axes.bar(places, [row.difference for row in shown], width, yerr=errors, capsize=3, label=condition)
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.set_xticks(range(len(tasks)), tasks, rotation=20, ha="right", fontsize=8)
    axes.set_ylabel("accuracy difference (points)")
    axes.set_title(f"{report.model}: each condition against the unmodified run (95% paired intervals)", fontsize=9)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return figure


def build_parser() -> argparse.ArgumentParser:
    from mcub.eval import add_request_arguments

    parser = argparse.ArgumentParser(prog="mcub reliance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("runs", nargs="*", type=Path, help="BASE_RUN COND_RUN...: read these runs (no --model)")
    parser.add_argument("--conditions", help="with --model: the conditions, comma-separated (drop:audio,blank:image)")
    parser.add_argument("--run-dir-base", type=Path, help="with --model: runs go to DIR/<model>/reliance-<conditions> "
                        "(default: results)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--plot", type=Path, help="draw the paired differences into this PNG")
    add_request_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.runs and (args.model or args.config):
        parser.error("give either runs to read (BASE_RUN COND_RUN...) or --model with --conditions, not both")
    if not args.runs and not (args.model or args.config):
        parser.error("give BASE_RUN COND_RUN... or --model M --tasks T --conditions C1,C2")
    if args.runs and len(args.runs) < 2:
        parser.error("give the unmodified run and at least one conditioned run")
    if not args.runs and not args.conditions:
        parser.error("--conditions is required with --model")

    def command() -> int:
        report = _report(args)
        print_reliance(report)
        if args.json:
            from mcub.results import write_atomically

            write_atomically(args.json, json.dumps(asdict(report), indent=2) + "\n")
        if args.plot and report.rows:
            import matplotlib.pyplot as plt

            plt.close(plot_reliance(report, args.plot))
        return DONE

    return run_command(command)


def _report(args: argparse.Namespace) -> Reliance:
    if args.runs:
        return reliance_of_runs(args.runs[0], args.runs[1:], args.seed or 0)
    from mcub.eval import request_values
    from mcub.request import EvalRequest

    values, source = request_values(args)
    if args.run_dir_base is not None:
        values["output_dir"] = args.run_dir_base
    return run_reliance(EvalRequest.build(values, source), split_names(args.conditions))


if __name__ == "__main__":
    from mcub.cli import exit_now

    exit_now(main())
