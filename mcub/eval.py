"""`python -m mcub.eval`: evaluate a model on MCUB and the auxiliary tasks (job 1)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mcub.data import DataError, count_questions
from mcub.tasks import Registry, load_registry


def build_parser() -> argparse.ArgumentParser:
    from mcub.cli import add_data_arguments

    parser = argparse.ArgumentParser(prog="python -m mcub.eval", description=__doc__)
    parser.add_argument("--list-tasks", action="store_true", help="list every task and group, then exit")
    add_data_arguments(parser)
    return parser


def print_task_list(registry: Registry, data_root: Path, out=None) -> None:
    """Every task with its modalities, files and item count (when its question file is on disk), then groups."""
    out = out or sys.stdout
    print(f"{len(registry.tasks)} tasks (items counted under {data_root}):", file=out)
    for task in registry.tasks.values():
        try:
            count = count_questions(task, data_root)
            items = "not on disk" if count is None else f"{count} items"
        except DataError as error:
            items = f"unreadable: {error}"
        files = f"{task.folder}/{task.questions} + {task.folder}/{task.answers}"
        source = "bundled" if task.bundled else (task.hub_dataset or "local only")
        print(
            f"  {task.name:<32} {'+'.join(task.modalities):<24} {task.answer_type:<6} {task.protocol:<8} "
            f"{items:<12} {files} ({source})",
            file=out,
        )
    print(f"{len(registry.groups)} groups:", file=out)
    for group in registry.groups.values():
        members = [task.name for task in registry.group_tasks(group.name)]
        print(f"  {group.name:<32} {len(members)} tasks: {', '.join(members)}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_tasks:
        print_task_list(load_registry(), args.data_root)
        return 0
    parser.error("model evaluation is not available yet in this version; --list-tasks is")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
