"""`mcub <command> ...`: one command line for every tool; `python -m mcub.<module>` runs the same code."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "eval": ("mcub.eval", "evaluate a model on tasks"),
    "score": ("mcub.score", "rescore a finished run, or score a prediction file"),
    "report": ("mcub.report", "one table (or plot) over runs"),
    "compare": ("mcub.compare", "paired regression check of two runs"),
    "reliance": ("mcub.reliance", "a model's accuracy under drop/blank/swap conditions against the unmodified run"),
    "gain": ("mcub.composition_gain", "synergy and interference of a composed model against its experts"),
    "leaderboard": ("mcub.leaderboard", "validate, add and build leaderboard submissions"),
    "data": ("mcub.check", "check task data and media before a long run"),
    "sweep": ("mcub.sweep", "evaluate a grid of model arguments, rerunning only the LLM"),
    "bench": ("mcub.bench", "throughput of the model and the pipeline"),
    "lm-eval": ("mcub.lmeval", "lm-evaluation-harness configs and command line"),
}


def usage() -> str:
    lines = ["usage: mcub <command> [arguments]  (mcub <command> --help for its arguments)", "", "commands:"]
    lines += [f"  {name:<12} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:])


def entry() -> None:
    """The `mcub` console script: `main`, then a quick exit once the output is flushed (`mcub.cli.exit_now`)."""
    from mcub.cli import exit_now

    exit_now(main())


if __name__ == "__main__":
    entry()
