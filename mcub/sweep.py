"""`mcub sweep` (`python -m mcub.sweep`): evaluate a model at every point of a grid over its arguments (composition
coefficients, a method's arguments), only the LLM rerunning per point; one table and one plot over the points,
and with --select-on the best point on a task and every other task there."""

from __future__ import annotations

import argparse
from pathlib import Path

from mcub.cli import DONE, run_command
from mcub.eval import add_request_arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcub sweep", description=__doc__)
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=VALUES",
        help="an axis: a --model-arg key and its values, start:stop:step (stop included, decimal) or v1,v2,...; "
        "several --grid flags make the cartesian product",
    )
    parser.add_argument(
        "--select-on",
        metavar="TASK[:FIELD=VALUE]",
        help="select the point with the best accuracy on TASK (or one cell of its breakdown); ties: the first point "
        "in grid order; run with the points when not among --tasks",
    )
    parser.add_argument("--out", type=Path, help="the sweep directory (default: results/sweeps/<model>/<keys>)")
    add_request_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.model and not args.config:
        parser.error("--model is required (see mcub eval --list-models), or --config FILE")
    if not args.grid:
        parser.error("give at least one --grid KEY=VALUES")
    return run_command(lambda: _sweep(args))


def _sweep(args: argparse.Namespace) -> int:
    from mcub.eval import request_values
    from mcub.request import EvalRequest
    from mcub.sweeps.grid import parse_axis
    from mcub.sweeps.run import MANIFEST, plan_sweep, run_sweep
    from mcub.sweeps.selection import SelectOn
    from mcub.sweeps.table import sweep_markdown

    axes = [parse_axis(text) for text in args.grid]
    select_on = SelectOn.parse(args.select_on) if args.select_on else None
    values, source = request_values(args)
    plan = plan_sweep(EvalRequest.build(values, source), axes, args.out, select_on)
    results, _ = run_sweep(plan)
    print(sweep_markdown(results))
    print(f"\nsweep directory: {plan.directory} ({MANIFEST}, table.csv, table.md, plot.png; runs/)")
    return DONE


if __name__ == "__main__":
    raise SystemExit(main())
