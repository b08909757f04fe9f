"""`python -m mcub.data check`: read every question and answer file of some tasks and decode every media
file they reference, in parallel, and report every problem with the file and the sample ids that use it."""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from mcub.data import DataPaths, Problem, load_task
from mcub.errors import McubError, MediaError
from mcub.media.limits import DEFAULT_LIMITS, MediaLimits
from mcub.modalities import MODALITIES, Modality
from mcub.tasks import TaskSpec


@dataclass
class CheckReport:
    """What a check found: samples and questions without an answer per task, media files per modality (all and
    decoded), problems."""

    samples: dict[str, int] = field(default_factory=dict)
    unanswered: dict[str, int] = field(default_factory=dict)
    media_files: Counter = field(default_factory=Counter)
    media_decoded: Counter = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)


def check_tasks(
    tasks: list[TaskSpec],
    paths: DataPaths,
    workers: int,
    progress: bool = True,
    limits: MediaLimits = DEFAULT_LIMITS,
) -> CheckReport:
    report = CheckReport()
    users: dict[tuple[Modality, str], list[str]] = defaultdict(list)
    for task in tasks:
        try:
            data = load_task(task, paths)
        except McubError as error:
            report.problems.append(Problem(task.name, str(error)))
            continue
        report.samples[task.name] = len(data.samples)
        report.unanswered[task.name] = len(data.unanswered)
        report.problems.extend(data.problems)
        for sample in data.samples:
            for modality, path in sample.media:
                users[(modality, path)].append(f"{task.name}:{sample.id}")
    for modality, _ in users:
        report.media_files[modality] += 1
    for (modality, path), reason in _decode_all(list(users), workers, progress, limits):
        if reason is None:
            report.media_decoded[modality] += 1
        else:
            report.problems.append(Problem(path, reason, tuple(users[(modality, path)])))
    return report


def _decode_all(media: list[tuple[Modality, str]], workers: int, progress: bool, limits: MediaLimits):
    """Yield ((modality, path), None or the reason it failed) for every file, as decoding completes."""
    from tqdm import tqdm

    from mcub.media import load_media

    def decode(item: tuple[Modality, str]) -> str | None:
        try:
            load_media(*item, limits=limits)
        except MediaError as error:
            return error.reason
        except Exception as error:  # noqa: BLE001 - any decoder failure is a problem to report, not a crash
            return f"{type(error).__name__}: {error}"
        return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(decode, item): item for item in media}
        bar = tqdm(as_completed(futures), total=len(futures), desc="decoding media", unit="file", disable=not progress)
        for future in bar:
            yield futures[future], future.result()


def print_report(report: CheckReport, out=None) -> None:
    out = out or sys.stdout
    for task, count in report.samples.items():
        unanswered = report.unanswered.get(task, 0)
        left_out = f", {unanswered} question(s) without an answer left out" if unanswered else ""
        print(f"{task}: {count} samples{left_out}", file=out)
    for modality in MODALITIES:
        if report.media_files[modality]:
            print(
                f"{modality}: {report.media_files[modality]} files, {report.media_decoded[modality]} decoded",
                file=out,
            )
    if report.problems:
        print(f"{len(report.problems)} problem(s):", file=out)
        for problem in report.problems:
            print(f"  {problem}", file=out)
    else:
        print("no problems", file=out)


def main(argv: list[str] | None = None) -> int:
    import os

    from mcub.cli import (
        DONE,
        VERDICT,
        add_data_arguments,
        add_media_limit_argument,
        data_paths,
        media_limit_values,
        run_command,
        split_names,
    )
    from mcub.tasks import load_registry

    parser = argparse.ArgumentParser(prog="mcub data", description="Check task data before a long run.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="read every question file and decode every media file of some tasks")
    check.add_argument("--tasks", required=True, help="task and group names, comma-separated")
    add_data_arguments(check)
    check.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding threads")
    add_media_limit_argument(check)
    check.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    def command() -> int:
        tasks = load_registry().resolve(split_names(args.tasks))
        limits = MediaLimits.from_values(media_limit_values(args.media_limit))
        report = check_tasks(tasks, data_paths(args), args.workers, not args.no_progress, limits)
        print_report(report)
        return VERDICT if report.problems else DONE

    return run_command(command)
