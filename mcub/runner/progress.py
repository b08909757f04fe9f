"""The run-level progress display, beside each task's bar: tasks done / to do, samples/s, ETA and errors so far. On an
interactive stream it is a bar updated after every batch; in a log (a stream that is not a TTY) it is one line per
finished task, and the tasks' own bars are off; under `--no-progress` it shows nothing."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h07m`."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class RunProgress:
    """Progress over a run's tasks (`totals`: each task's number of samples, in run order)."""

    def __init__(
        self,
        totals: Mapping[str, int],
        enabled: bool = True,
        stream: TextIO | None = None,
        interactive: bool | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.totals = dict(totals)
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.clock = clock
        self.started = self.task_started = clock()
        self.tasks_done = 0
        self.accounted = 0
        """Samples of finished tasks (resumed ones included) and those run so far in the current task."""
        self.ran = 0
        """Samples run in this process (the rate's numerator)."""
        self.task_ran = 0
        self.errors = 0
        self.bar = None
        if enabled and self.interactive:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc="run", unit="sample", file=self.stream, dynamic_ncols=True,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n}/{total} samples{postfix}")  # fmt: skip
            self.bar.set_postfix_str(self.status(), refresh=True)

    @property
    def total(self) -> int:
        return sum(self.totals.values())

    @property
    def task_bars(self) -> bool:
        """Whether each task shows its own bar (on an interactive stream only)."""
        return self.enabled and self.interactive

    def rate(self) -> float | None:
        """Samples per second run so far (None before any)."""
        elapsed = self.clock() - self.started
        return self.ran / elapsed if self.ran and elapsed > 0 else None

    def eta(self) -> float | None:
        rate = self.rate()
        return (self.total - self.accounted) / rate if rate else None

    def status(self) -> str:
        """`tasks 1/3, 12.5 samples/s, ETA 1m20s, 0 errors so far`."""
        rate, eta = self.rate(), self.eta()
        speed = f"{rate:.1f} samples/s" if rate is not None else "- samples/s"
        left = f"ETA {duration(eta)}" if eta is not None else "ETA -"
        errors = f"{self.errors} error{'' if self.errors == 1 else 's'} so far"
        return f"tasks {self.tasks_done}/{len(self.totals)}, {speed}, {left}, {errors}"

    @contextmanager
    def batch(self, items: list[Any]) -> Iterator[None]:
        """Around each batch (runner.loop's `around_batch`): its samples count once it is answered."""
        yield
        self.ran += len(items)
        self.task_ran += len(items)
        self.accounted += len(items)
        if self.bar is not None:
            self.bar.set_postfix_str(self.status(), refresh=False)
            self.bar.update(len(items))

    def task_done(self, task: str, records: Mapping[str, Any] | None) -> None:
        """A task finished with `records` (its record file's, by id; each with an `error`)."""
        task_errors = sum(record.error is not None for record in (records or {}).values())
        self.errors += task_errors
        self.tasks_done += 1
        before = self.accounted - self.task_ran
        self.accounted = before + self.totals[task]
        now = self.clock()
        if self.bar is not None:
            self.bar.update(self.accounted - self.bar.n)
            self.bar.set_postfix_str(self.status(), refresh=True)
        elif self.enabled:
            resumed = self.totals[task] - self.task_ran
            kept = f" ({resumed} already recorded)" if resumed > 0 else ""
            print(
                f"[{self.tasks_done}/{len(self.totals)}] {task}: {self.task_ran} sample(s) in "
                f"{duration(now - self.task_started)}{kept}, {task_errors} error(s); run: {self.accounted}/"
                f"{self.total} samples, {self.status().split(', ', 1)[1]}",
                file=self.stream,
                flush=True,
            )
        self.task_started, self.task_ran = now, 0

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.bar is not None:
            self.bar.close()
