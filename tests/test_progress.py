"""The run-level progress display: one line per task in a log, a bar on a terminal, nothing under --no-progress."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

from mcub.eval import main as eval_main
from mcub.runner.progress import RunProgress, duration


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _records(errors: int, total: int) -> dict:
    return {str(i): SimpleNamespace(error="media error: x" if i < errors else None) for i in range(total)}


def _drive(progress: RunProgress, clock: Clock) -> None:
    """Task a: 4 samples in two batches over 2 s, one error; task b: 2 samples run (4 resumed) over 2 s."""
    for _ in range(2):
        with progress.batch([object(), object()]):
            clock.now += 1.0
    progress.task_done("a", _records(1, 4))
    with progress.batch([object(), object()]):
        clock.now += 2.0
    progress.task_done("b", _records(0, 6))


def test_a_log_gets_one_line_per_task_with_rate_eta_and_errors():
    stream, clock = io.StringIO(), Clock()
    with RunProgress({"a": 4, "b": 6}, stream=stream, interactive=False, clock=clock) as progress:
        assert not progress.task_bars
        _drive(progress, clock)
    assert stream.getvalue().splitlines() == [
        "[1/2] a: 4 sample(s) in 2s, 1 error(s); run: 4/10 samples, 2.0 samples/s, ETA 3s, 1 error so far",
        "[2/2] b: 2 sample(s) in 2s (4 already recorded), 0 error(s); run: 10/10 samples, 1.5 samples/s, ETA 0s, "
        "1 error so far",
    ]


def test_a_terminal_gets_a_run_bar_and_task_bars():
    stream, clock = io.StringIO(), Clock()
    with RunProgress({"a": 4, "b": 6}, stream=stream, interactive=True, clock=clock) as progress:
        assert progress.task_bars
        _drive(progress, clock)
    shown = stream.getvalue()
    last = shown.replace("\n", "\r").split("\r")
    final = [frame for frame in last if frame.strip()][-1]
    assert final.startswith("run: 100%|") and final.endswith(
        "10/10 samples, tasks 2/2, 1.5 samples/s, ETA 0s, 1 error so far"
    )
    assert "tasks 1/2, 2.0 samples/s, ETA 3s, 1 error so far" in shown
    assert "[1/2]" not in shown


def test_no_progress_shows_nothing():
    stream, clock = io.StringIO(), Clock()
    with RunProgress({"a": 4, "b": 6}, enabled=False, stream=stream, interactive=True, clock=clock) as progress:
        assert not progress.task_bars
        _drive(progress, clock)
    assert stream.getvalue() == ""
    assert progress.errors == 1 and progress.accounted == 10


def test_duration():
    assert [duration(s) for s in (0.4, 42, 185, 7620)] == ["0s", "42s", "3m05s", "2h07m"]


def test_an_evaluation_logs_one_line_per_task_and_is_quiet_under_no_progress(tmp_path, capsys):
    args = ["--model", "random", "--tasks", "mcub-sample", "--output-dir", str(tmp_path), "--num-workers", "0"]
    assert eval_main([*args, "--run-name", "shown"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("[")]
    assert len(lines) == 1 and "%|" not in err  # stderr is not a terminal here: no bars
    pattern = r"\[1/1\] mcub-sample: 5 sample\(s\) in \d+s, 0 error\(s\); run: 5/5 samples, [\d.]+ samples/s, ETA 0s, "
    assert re.fullmatch(pattern + "0 errors so far", lines[0]), lines[0]
    assert eval_main([*args, "--run-name", "quiet", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "[1/1]" not in err and "%|" not in err
