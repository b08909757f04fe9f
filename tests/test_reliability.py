"""Reliability under faults: interrupted runs (SIGINT, SIGTERM) end with one line and resume to a whole run, one
writer per run directory, atomic writes that a kill cannot leave half-done, unwritable or full output folders."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcub.results import RecordLog, read_summary, write_atomically
from mcub.run_lock import LOCK_FILE, RunLock, RunLocked

# An `mcub eval` of the random model whose every batch takes DELAY seconds (so that it can be stopped half-way),
# and whose batches after the first wait until the file GATE exists, when one is named (however loaded the machine).
# It takes Ctrl-C as a terminal gives it: a shell starts a background job with SIGINT ignored, which its children
# inherit.
SLOW_EVAL = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from mcub.models.baselines import RandomModel
answer = RandomModel.generate
batches = []
def slow(self, batch, max_new_tokens, stop="eos"):
    time.sleep({delay})
    batches.append(batch)
    deadline = time.monotonic() + 300
    while {gate!r} and len(batches) > 1 and not os.path.exists({gate!r}) and time.monotonic() < deadline:
        time.sleep(0.05)
    return answer(self, batch, max_new_tokens, stop)
RandomModel.generate = slow
from mcub.__main__ import main
sys.exit(main(["eval", *sys.argv[1:]]))
"""


def _slow_eval(tmp_path: Path, *args: str, delay: float = 1.0, gate: Path | None = None) -> subprocess.Popen:
    script = tmp_path / f"slow_eval_{len(list(tmp_path.glob('slow_eval_*.py')))}.py"
    script.write_text(SLOW_EVAL.format(delay=delay, gate=str(gate) if gate else None))
    common = ["--model", "random", "--tasks", "mcub-sample", "--output-dir", str(tmp_path / "runs"), "--no-progress"]
    return subprocess.Popen(
        [sys.executable, str(script), *common, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for_records(records_dir: Path, count: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = sum(len(path.read_text().splitlines()) for path in records_dir.glob("*.jsonl"))
        if lines >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {count} records in {records_dir} after {timeout_s} s")


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "records" / "mcub-sample.jsonl").read_text().splitlines()]


def _eval(tmp_path: Path, *args: str) -> int:
    from mcub.eval import main

    common = ["--model", "random", "--tasks", "mcub-sample", "--output-dir", str(tmp_path / "runs"), "--no-progress"]
    return main([*common, "--num-workers", "0", *args])


@pytest.mark.parametrize(("stop", "code", "word"), [(signal.SIGINT, 130, "interrupted (SIGINT)"),
                                                    (signal.SIGTERM, 143, "terminated (SIGTERM)")])  # fmt: skip
def test_an_interrupted_run_says_what_it_saved_and_resumes_to_a_whole_run(tmp_path, capsys, stop, code, word):
    run_dir = tmp_path / "runs" / "random" / "cut"
    process = _slow_eval(tmp_path, "--run-name", "cut", "--num-workers", "2")
    _wait_for_records(run_dir / "records", 2)
    process.send_signal(stop)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code
    saved = re.fullmatch(
        rf"{re.escape(word)}: (\d) of 5 record\(s\) are saved in {re.escape(str(run_dir))}; continue with: "
        rf"mcub eval --config {re.escape(str(run_dir / 'run.yaml'))} --run-name cut --resume\n",
        err,
    )
    assert saved is not None, err  # one line, no traceback
    assert 2 <= int(saved.group(1)) < 5
    assert _eval(tmp_path, "--config", str(run_dir / "run.yaml"), "--run-name", "cut", "--resume") == 0
    assert _eval(tmp_path, "--run-name", "clean") == 0
    clean = _records(tmp_path / "runs" / "random" / "clean")
    resumed = _records(run_dir)
    assert [(r["id"], r["output"]) for r in resumed] == [(r["id"], r["output"]) for r in clean]
    assert read_summary(run_dir).tasks["mcub-sample"].metrics.n == 5


def test_a_second_writer_is_refused_naming_the_holder_and_the_run_keeps_every_record(tmp_path):
    run_dir = tmp_path / "runs" / "random" / "shared"
    gate = tmp_path / "let-the-first-writer-finish"
    first = _slow_eval(tmp_path, "--run-name", "shared", "--num-workers", "0", delay=0.0, gate=gate)
    _wait_for_records(run_dir / "records", 1)  # the first writer now waits for the gate, holding the run
    second = _slow_eval(tmp_path, "--run-name", "shared", "--num-workers", "0", "--resume", delay=0.0)
    _, second_err = second.communicate(timeout=120)
    gate.touch()
    _, first_err = first.communicate(timeout=120)
    assert second.returncode == 2
    assert re.fullmatch(
        rf"error: {re.escape(str(run_dir))}: in use by pid {first.pid} on host \S+ \(since [\d-]+ [\d:]+\); wait "
        r"for it to finish, or stop it \(one process writes a run; torchrun ranks share one\)\n",
        second_err,
    ), second_err
    assert first.returncode == 0, first_err
    assert len(_records(run_dir)) == 5


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_note(tmp_path, capsys):
    assert _eval(tmp_path, "--run-name", "r") == 0
    run_dir = tmp_path / "runs" / "random" / "r"
    (run_dir / LOCK_FILE).write_text(json.dumps({"pid": 4_000_000, "host": "gone", "since": 0}))  # held by no one
    capsys.readouterr()
    assert _eval(tmp_path, "--run-name", "r", "--resume") == 0
    assert f"note: {run_dir / LOCK_FILE} was left by pid 4000000 on host gone" in capsys.readouterr().err
    with RunLock(run_dir), pytest.raises(RunLocked, match="in use by pid"):
        with RunLock(run_dir):
            pass


def test_a_write_killed_half_way_leaves_the_old_file_and_resume_repairs_the_rest(tmp_path, monkeypatch, capsys):
    assert _eval(tmp_path, "--run-name", "r") == 0
    run_dir = tmp_path / "runs" / "random" / "r"
    before = (run_dir / "summary.json").read_text()
    real_fsync = os.fsync

    def killed(descriptor):  # the process dies after writing part of the new content, before it is renamed in
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(run_dir / "summary.json", "{ half")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert (run_dir / "summary.json").read_text() == before
    assert not list(run_dir.glob(".*.tmp"))  # the temporary file is gone too
    (run_dir / ".summary.json.99999.tmp").write_text("{ half")  # what a SIGKILL at that point leaves
    records = run_dir / "records" / "mcub-sample.jsonl"
    lines = records.read_text().splitlines()
    records.write_text("\n".join(lines[:3]) + "\n" + lines[3][:40])  # and a record line cut short
    capsys.readouterr()
    assert _eval(tmp_path, "--run-name", "r", "--resume") == 0
    assert "mcub-sample.jsonl:4: damaged record" in capsys.readouterr().err
    assert not list(run_dir.glob(".*.tmp"))
    assert [r["id"] for r in _records(run_dir)] == [f"mcub-sample-{i}" for i in range(5)]
    assert json.loads((run_dir / "summary.json").read_text())["tasks"]["mcub-sample"]["metrics"]["n"] == 5


def test_an_output_folder_that_cannot_be_written_is_an_error_before_the_model_loads(tmp_path, capsys, monkeypatch):
    from mcub.models import base

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be built")

    monkeypatch.setattr(base, "build_model", no_model)
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the output folder should be")
    assert _eval(tmp_path, "--run-name", "r") == 2
    run_dir = blocker / "random" / "r"
    assert capsys.readouterr().err == f"error: {run_dir}: the run directory cannot be written (Not a directory)\n"


def test_a_full_disk_ends_with_one_line_naming_the_file_and_keeps_the_records(tmp_path, capsys, monkeypatch):
    class FillsAfterTwoWrites:
        def __init__(self, handle):
            self.handle, self.writes = handle, 0

        def write(self, text):
            self.writes += 1
            if self.writes > 2:
                raise OSError(28, "No space left on device")
            return self.handle.write(text)

        def __getattr__(self, name):
            return getattr(self.handle, name)

    opened = RecordLog.__init__

    def on_a_small_disk(self, path):
        opened(self, path)
        self._handle = FillsAfterTwoWrites(self._handle)

    monkeypatch.setattr(RecordLog, "__init__", on_a_small_disk)
    assert _eval(tmp_path, "--run-name", "r") == 2
    part = tmp_path / "runs" / "random" / "r" / "records" / "mcub-sample.rank0.jsonl"
    assert capsys.readouterr().err.endswith(
        f"error: {part}: cannot write records (No space left on device); the records written before are kept "
        "(a half-written last line is redone): free the space or fix the permissions and --resume\n"
    )
    assert len(part.read_text().splitlines()) == 2
    monkeypatch.undo()
    assert _eval(tmp_path, "--run-name", "r", "--resume") == 0
    assert len(_records(tmp_path / "runs" / "random" / "r")) == 5


def test_a_small_tmpfs_that_fills_up_ends_cleanly_where_one_can_be_mounted(tmp_path, capsys):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("no tmpfs can be mounted here")
    try:
        code = _eval(mount, "--run-name", "r", "--num-workers", "0")
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err
        assert re.search(r"error: .*: cannot write.*\(No space left on device\)", err), err
    finally:
        subprocess.run(["umount", str(mount)], check=True)
