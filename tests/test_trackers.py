"""`mcub eval --log wandb[:PROJECT]` and `--log trackio[:PROJECT]`, end to end and offline: W&B in offline mode (its
run file read back record by record), Trackio in its local store; and no tracker imported unless asked for."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcub.eval import main as eval_main
from mcub.results import RunFiles
from mcub.tracking import RECORD_COLUMNS, RESULT_COLUMNS, Tracker, metric_values

ROOT = Path(__file__).resolve().parent.parent
EVAL = ["--model", "random", "--tasks", "mcub-sample", "--no-progress", "--num-workers", "0"]


def _eval_in_subprocess(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`mcub eval` in a fresh interpreter, which then prints the trackers it has imported."""
    code = ("import sys; from mcub.eval import main; code = main(sys.argv[1:]); "
            "print('imported:', sorted({'wandb', 'trackio'} & set(sys.modules))); sys.exit(code)")  # fmt: skip
    argv = [sys.executable, "-c", code, *EVAL, "--output-dir", str(tmp_path / "runs"), "--run-name", "r", *extra]
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})},
                          timeout=600)  # fmt: skip


@pytest.mark.parametrize(
    ("text", "tracker"),
    [("wandb", Tracker("wandb", "mcub")), ("wandb:ablations", Tracker("wandb", "ablations")),
     ("trackio:mcub-ci", Tracker("trackio", "mcub-ci"))],
)  # fmt: skip
def test_a_tracker_is_a_name_and_an_optional_project(text, tracker):
    assert Tracker.parse(text) == tracker


@pytest.mark.parametrize(("text", "message"), [("tensorboard", "the trackers are wandb, trackio"),
                                               ("wandb:", "the project after ':' is empty")])  # fmt: skip
def test_an_unknown_tracker_is_a_usage_error_before_anything_runs(tmp_path, capsys, text, message):
    assert eval_main([*EVAL, "--output-dir", str(tmp_path), "--log", text]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_tracker_that_is_not_installed_is_named_before_the_run(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "wandb" else real(name, *args))
    assert eval_main([*EVAL, "--output-dir", str(tmp_path), "--log", "wandb"]) == 2
    assert "--log wandb: wandb is not installed (pip install 'mcub[wandb]')" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_plain_run_imports_no_tracker(tmp_path):
    done = _eval_in_subprocess(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "imported: []" in done.stdout
    assert RunFiles(tmp_path / "runs" / "random" / "r").summary.tasks["mcub-sample"].metrics.n == 5


def _wandb_records(path: Path):
    """The protobuf records of a W&B run file (LevelDB log format: a 7-byte file header, then 32 KiB blocks of
    records, each a 7-byte header (checksum, length, type) and its data; a record may span blocks)."""
    from wandb.proto import wandb_internal_pb2

    data, position, pending, block = path.read_bytes(), 7, b"", 32768
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:
            position += left
            continue
        length, kind = int.from_bytes(data[position + 4 : position + 6], "little"), data[position + 6]
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last part of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_offline_logs_the_settings_metrics_table_and_records(tmp_path):
    pytest.importorskip("wandb")
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wb"), "WANDB_SILENT": "true"}
    (tmp_path / "wb").mkdir()
    done = _eval_in_subprocess(tmp_path, "--log", "wandb:mcub-test", env=env)
    assert done.returncode == 0, done.stderr
    run = RunFiles(tmp_path / "runs" / "random" / "r")
    (run_file,) = (tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb")
    records = list(_wandb_records(run_file))
    (started,) = [record.run for record in records if record.WhichOneof("record_type") == "run"]
    config = {item.key: json.loads(item.value_json) for item in started.config.update}
    assert (started.project, started.display_name) == ("mcub-test", "random/r")
    assert (config["model"], config["settings/seed"], config["tasks"]) == ("random", 0, "mcub-sample")
    history = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
               for record in records if record.WhichOneof("record_type") == "history"
               for item in record.history.item}  # fmt: skip
    expected = metric_values(run.summary)
    assert expected["mcub-sample/accuracy"] == run.summary.tasks["mcub-sample"].metrics.accuracy
    assert {key: history[key] for key in expected} == expected
    files = run_file.parent / "files"
    results = json.loads((files / history["results/path"]).read_text())
    m = run.summary.tasks["mcub-sample"].metrics
    assert results == {"columns": RESULT_COLUMNS, "data": [["mcub-sample", "paper", 5, m.accuracy, m.ci_low, m.ci_high,
                                                             0, 0, 0]]}  # fmt: skip
    logged = json.loads((files / history["records/path"]).read_text())
    assert logged["columns"] == RECORD_COLUMNS
    stored = run.records["mcub-sample"]
    assert [row[1] for row in logged["data"]] == sorted(stored, key=lambda i: stored[i].question_index)
    for task, sample_id, gold, output, extracted, extraction, correct, error in logged["data"]:
        record = stored[sample_id]
        assert (task, gold, output, extracted, extraction, correct, error) == (
            "mcub-sample", record.gold, record.output, record.extracted, record.extraction,
            str(record.correct).lower(), "")  # fmt: skip
    assert "imported: ['wandb']" in done.stdout


def test_trackio_logs_to_its_local_store(tmp_path):
    pytest.importorskip("trackio")
    done = _eval_in_subprocess(tmp_path, "--log", "trackio:mcub-test", env={"TRACKIO_DIR": str(tmp_path / "store")})
    assert done.returncode == 0, done.stderr
    code = ("import json, sys; from trackio.sqlite_storage import SQLiteStorage; "
            "print(json.dumps({'runs': SQLiteStorage.get_runs('mcub-test'), "
            "'logs': SQLiteStorage.get_logs('mcub-test', 'random/r'), "
            "'config': SQLiteStorage.get_run_config('mcub-test', 'random/r')}, default=str))")  # fmt: skip
    stored = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TRACKIO_DIR": str(tmp_path / "store")})  # fmt: skip
    assert stored.returncode == 0, stored.stderr
    logged = json.loads(stored.stdout)
    assert logged["runs"] == ["random/r"]
    run = RunFiles(tmp_path / "runs" / "random" / "r")
    expected = metric_values(run.summary)
    (step,) = logged["logs"]
    assert {key: step[key] for key in expected} == expected
    m = run.summary.tasks["mcub-sample"].metrics
    assert step["results"]["_value"] == [dict(zip(RESULT_COLUMNS, ["mcub-sample", "paper", 5, m.accuracy, m.ci_low,
                                                                    m.ci_high, 0, 0, 0], strict=True))]  # fmt: skip
    assert [row["id"] for row in step["records"]["_value"]] == [f"mcub-sample-{index}" for index in range(5)]
    assert (logged["config"]["model"], logged["config"]["tasks"]) == ("random", "mcub-sample")


def test_a_failed_logging_says_the_run_is_saved(tmp_path, capsys, monkeypatch):
    wandb = pytest.importorskip("wandb")

    def refuse(**settings):
        raise ConnectionError("no route to the W&B server")

    monkeypatch.setattr(wandb, "init", refuse)
    assert eval_main([*EVAL, "--output-dir", str(tmp_path), "--run-name", "r", "--log", "wandb"]) == 2
    run_dir = tmp_path / "random" / "r"
    assert (f"--log wandb: the run is saved in {run_dir}, but logging it failed (ConnectionError: no route to the "
            "W&B server)") in capsys.readouterr().err  # fmt: skip
    assert RunFiles(run_dir).summary.tasks["mcub-sample"].metrics.n == 5
