"""`mcub eval` (`python -m mcub.eval`): evaluate a model on MCUB and the auxiliary tasks (job 1)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, get_args

from mcub.cli import (
    DONE,
    add_data_arguments,
    add_media_limit_argument,
    add_scorer_arguments,
    judge_values,
    media_limit_values,
    run_command,
    split_names,
)
from mcub.data import DataError, count_questions
from mcub.tasks import Registry, load_registry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcub eval", description=__doc__)
    add_request_arguments(parser)
    parser.add_argument("--output-dir", type=Path, help="runs go to DIR/<model>/<run-name> (default: results)")
    parser.add_argument("--run-name", help="the run directory's name (default: the start time)")
    parser.add_argument("--resume", action="store_true", help="continue the latest run of this model (or --run-name)")
    parser.add_argument("--list-tasks", action="store_true", help="list every task and group, then exit")
    parser.add_argument("--list-models", action="store_true", help="list every model id, then exit")
    return parser


def add_request_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of a request that say what to run and how, but not where its run directory is (`mcub sweep` gives
    them to every point)."""
    from mcub.protocols import PROTOCOLS
    from mcub.request import Dtype

    parser.add_argument("--config", type=Path, help="a YAML request (the fields of a run's run.yaml); flags win")
    parser.add_argument("--model", help="a model id from models/*.yaml (see --list-models)")
    parser.add_argument(
        "--tasks", help="task and group names, comma-separated (default: every task the model can take)"
    )
    add_data_arguments(parser)
    parser.set_defaults(data_root=None)
    parser.add_argument("--protocol", choices=list(PROTOCOLS), help="override every task's protocol")
    add_scorer_arguments(parser)
    parser.add_argument("--batch-size", help="samples per batch (default 1), or `auto`: the largest that fits")
    parser.add_argument("--num-workers", type=int, help="DataLoader workers decoding media (default 2)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    parser.add_argument(
        "--dtype",
        choices=get_args(Dtype),
        help="auto (default: the model's 16-bit dtype on CUDA, float32 elsewhere), a torch dtype, or fp8: the "
        "prefill's linear layers in FP8, the rest in bfloat16 (ModelCompose models; emulated without Hopper)",
    )
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--limit", type=int, help="only the first N samples of each task")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--strict", action="store_true", help="abort on the first data, media or model error")
    parser.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE", help="override a model argument"
    )
    add_media_limit_argument(parser)
    parser.add_argument(
        "--condition",
        action="append",
        default=[],
        metavar="SPEC",
        help="a run condition (drop:M, blank:M, swap:M, shuffle-order, noise:audio=SNR_DB, circular); repeatable, "
        "applied in the order given",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--log",
        metavar="TRACKER[:PROJECT]",
        help="log the finished run to wandb or trackio (optional extras; default project: mcub)",
    )


FLAG_FIELDS = ("model", "output_dir", "run_name", "protocol", "batch_size", "num_workers", "device", "dtype",
               "max_new_tokens", "limit", "seed", "data_root", "media_root", "log")  # fmt: skip


def request_values(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The request's values: the --config file's, with the flags given laid over them (those of `parser`'s flags that
    `args` has); and where they came from."""
    from mcub.models.base import merge_args, parse_model_args
    from mcub.request import EvalRequest

    values = EvalRequest.read_yaml(args.config) if args.config else {}
    values |= {name: getattr(args, name) for name in FLAG_FIELDS if getattr(args, name, None) is not None}
    if args.tasks:
        values["tasks"] = split_names(args.tasks)
    for flag, field, value in (("no_download", "download", False), ("no_progress", "progress", False),
                               ("resume", "resume", True), ("strict", "strict", True)):  # fmt: skip
        if getattr(args, flag, False):
            values[field] = value
    if args.media_limit:
        values["media_limits"] = {**(values.get("media_limits") or {}), **media_limit_values(args.media_limit)}
    if args.condition:
        values["conditions"] = args.condition
    if args.model_arg:
        values["model_args"] = merge_args(values.get("model_args") or {}, parse_model_args(args.model_arg))
    scoring = dict(values.get("scoring") or {})
    if args.embedder:
        scoring["embedder"] = args.embedder
    judge = judge_values(args)
    if judge is not None:
        scoring["judge"] = judge
    if scoring:
        values["scoring"] = scoring
    return values, str(args.config) if args.config else "the command line"


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


def print_model_list(out=None) -> None:
    from mcub.models.base import load_model_specs

    out = out or sys.stdout
    for spec in load_model_specs().values():
        print(f"  {spec.name:<16} {'+'.join(spec.modalities):<24} {spec.description}", file=out)
        for component in spec.components():
            print(f"  {'':<16} {'':<24} {component}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_tasks:
        from mcub.schema import DEFAULT_DATA_ROOT

        print_task_list(load_registry(), args.data_root or DEFAULT_DATA_ROOT)
        return DONE
    if args.list_models:
        print_model_list()
        return DONE
    if not args.model and not args.config:
        parser.error("--model is required (see --list-models), or --config FILE")
    return run_command(lambda: _evaluate(args))


def _evaluate(args: argparse.Namespace) -> int:
    from mcub.evaluation import run
    from mcub.request import EvalRequest
    from mcub.results import summary_table

    values, source = request_values(args)
    summary, run_dir = run(EvalRequest.build(values, source))
    if summary is not None:
        print(summary_table(summary))
        print(f"\nrun directory: {run_dir}")
    return DONE


if __name__ == "__main__":
    from mcub.cli import exit_now

    exit_now(main())
