"""`python -m mcub.compare BASE_RUN NEW_RUN`: paired differences per task and group on the same sample ids, with
paired-bootstrap intervals, exact McNemar tests and Holm's correction across tasks (job 3). Exit code 1 when some
task dropped significantly and by more than `--max-drop` points, or when the new run lacks records the base run has
(more than `--max-missing`, by default none, per task; a task of the base run missing whole counts too), so it can
gate a CI job."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mcub.results import RunFiles, write_atomically
from mcub.schema import RecordOutcome
from mcub.stats import PairedDifference, holm, paired_difference


@dataclass
class TaskComparison:
    task: str
    paired: PairedDifference
    holm_p: float
    unpaired: int
    regression: bool
    base_records: int = 0
    missing_in_new: int = 0
    """Sample ids the base run has a record of and the new run has none of."""


@dataclass
class Comparison:
    tasks: list[TaskComparison]
    groups: dict[str, PairedDifference]
    only_in_base: list[str] = field(default_factory=list)
    only_in_new: list[str] = field(default_factory=list)
    without_accuracy: list[str] = field(default_factory=list)
    coverage_failures: list[str] = field(default_factory=list)
    """Why the new run covers less than the base run allows (`max_missing`)."""

    @property
    def regressed(self) -> bool:
        return any(task.regression for task in self.tasks)

    @property
    def failed(self) -> bool:
        """The gate's verdict: a regression, or records missing from the new run."""
        return self.regressed or bool(self.coverage_failures)


def compare_runs(
    base: RunFiles, new: RunFiles, alpha: float, max_drop: float, seed: int, max_missing: float = 0.0
) -> Comparison:
    """Compare on the tasks both runs have; refuse tasks whose protocol or data differ between the runs. Coverage
    fails for a task whose base records the new run lacks in more than `max_missing` (a fraction) of them."""
    both = [task for task in base.summary.tasks if task in new.summary.tasks]
    unjudged = [
        t for t in both if None in (base.summary.tasks[t].metrics.accuracy, new.summary.tasks[t].metrics.accuracy)
    ]
    shared = [task for task in both if task not in unjudged]
    if not shared:
        raise ValueError(f"{base.run_dir} and {new.run_dir} share no task")
    conflicts = []
    for task in shared:
        old, fresh = base.summary.tasks[task], new.summary.tasks[task]
        if old.protocol != fresh.protocol:
            conflicts.append(f"{task}: protocol {old.protocol} vs {fresh.protocol}")
        if (old.question_sha256, old.answer_sha256) != (fresh.question_sha256, fresh.answer_sha256):
            conflicts.append(f"{task}: the task data differ (question/answer file hashes)")
    if conflicts:
        raise ValueError("the runs are not comparable:\n  " + "\n  ".join(conflicts))
    outcomes: dict[str, tuple[list[bool], list[bool]]] = {}
    unpaired: dict[str, int] = {}
    for task in shared:
        old, fresh = base.records[task], new.records[task]
        ids = sorted(set(old) & set(fresh))
        unpaired[task] = len(set(old) ^ set(fresh))
        outcomes[task] = ([bool(old[i].correct) for i in ids], [bool(fresh[i].correct) for i in ids])
    paired = {task: paired_difference(*outcomes[task], seed) for task in shared}
    adjusted = holm([paired[task].p_value for task in shared])
    tasks = [
        TaskComparison(
            task,
            paired[task],
            p,
            unpaired[task],
            paired[task].difference < 0 and p < alpha and -paired[task].difference > max_drop,
            len(base.records[task]),
            len(set(base.records[task]) - set(new.records[task])),
        )
        for task, p in zip(shared, adjusted, strict=True)
    ]
    only_in_base = [task for task in base.summary.tasks if task not in new.summary.tasks]
    coverage = [f"{task}: in the base run only" for task in only_in_base]
    coverage += [
        f"{task.task}: {task.missing_in_new} of the base run's {task.base_records} sample(s) have no record in the "
        f"new run (allowed: {max_missing:.0%})"
        for task in tasks
        if task.missing_in_new > max_missing * task.base_records
    ]
    groups = {}
    for name, group in base.summary.groups.items():
        if name in new.summary.groups and all(task in outcomes for task in group.tasks):
            pooled_base = [flag for task in group.tasks for flag in outcomes[task][0]]
            pooled_new = [flag for task in group.tasks for flag in outcomes[task][1]]
            groups[name] = paired_difference(pooled_base, pooled_new, seed)
    return Comparison(
        tasks,
        groups,
        only_in_base,
        [task for task in new.summary.tasks if task not in base.summary.tasks],
        unjudged,
        coverage,
    )


def _row(name: str, paired: PairedDifference, holm_p: str, verdict: str) -> str:
    base = 100 * paired.base_correct / paired.n if paired.n else 0.0
    new = 100 * paired.new_correct / paired.n if paired.n else 0.0
    return (
        f"| {name} | {paired.n} | {base:.2f} | {new:.2f} | {paired.difference:+.2f} | "
        f"[{paired.ci_low:+.2f}, {paired.ci_high:+.2f}] | {paired.p_value:.4g} | {holm_p} | {verdict} |"
    )


def print_comparison(comparison: Comparison, out=None) -> None:
    out = out or sys.stdout
    print("| task | n | base | new | difference | 95% CI | McNemar p | Holm p | verdict |", file=out)
    print("|---|---:|---:|---:|---:|---|---:|---:|---|", file=out)
    for task in comparison.tasks:
        verdict = "REGRESSION" if task.regression else ("changed" if task.holm_p < 0.05 else "no significant change")
        print(_row(task.task, task.paired, f"{task.holm_p:.4g}", verdict), file=out)
    for name, paired in comparison.groups.items():
        print(_row(f"{name} (pooled)", paired, "-", ""), file=out)
    for label, tasks in (
        ("only in the base run", comparison.only_in_base),
        ("only in the new run", comparison.only_in_new),
    ):
        if tasks:
            print(f"not compared ({label}): {', '.join(tasks)}", file=out)
    unpaired = {task.task: task.unpaired for task in comparison.tasks if task.unpaired}
    if unpaired:
        print(f"ids recorded in one run only (left out): {unpaired}", file=out)
    for failure in comparison.coverage_failures:
        print(f"COVERAGE: {failure}", file=out)


def main(argv: list[str] | None = None) -> int:
    from mcub.cli import USAGE, VERDICT, run_command

    parser = argparse.ArgumentParser(prog="mcub compare", description=__doc__)
    parser.add_argument("base", type=Path, help="the reference run directory")
    parser.add_argument("new", type=Path, help="the run under test")
    parser.add_argument("--alpha", type=float, default=0.05, help="family-wise significance level (Holm)")
    parser.add_argument("--max-drop", type=float, default=0.0, help="points a task may drop without failing")
    parser.add_argument(
        "--max-missing",
        type=float,
        default=0.0,
        help="fraction of a task's base-run samples the new run may lack records of (default 0: any missing fails)",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--json", type=Path, help="write the comparison here")
    args = parser.parse_args(argv)

    def command() -> int:
        base, new = (RunFiles(run_dir, view=RecordOutcome) for run_dir in (args.base, args.new))
        comparison = compare_runs(base, new, args.alpha, args.max_drop, args.seed, args.max_missing)
        print_comparison(comparison)
        if args.json:
            write_atomically(args.json, json.dumps(asdict(comparison), indent=2) + "\n")
        return VERDICT if comparison.failed else 0

    try:
        return run_command(command)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE


if __name__ == "__main__":
    from mcub.cli import exit_now

    exit_now(main())
