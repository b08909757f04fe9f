"""`mcub reliance`: its figures are `mcub compare`'s on the same pairs; it runs the missing runs of a model under
each condition (and reads the finished ones), and reads existing runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import AVQA_VIDEO_AUDIO, write_avqa
from recording_model import RecordingModel, register_recording_model
from run_factory import write_run

from mcub.compare import compare_runs
from mcub.reliance import main, reliance_of_runs, reliance_run_name
from mcub.results import RunFiles
from mcub.schema import RecordOutcome


def _conditioned(run_dir: Path, conditions: list[str]) -> Path:
    """Mark a factory-made run as made under `conditions` (its summary's settings)."""
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text())
    summary["settings"]["conditions"] = conditions
    path.write_text(json.dumps(summary))
    return run_dir


def test_the_report_s_figures_are_those_of_compare_on_the_same_pairs(tmp_path):
    base = write_run(tmp_path / "base", {"t1": [True] * 30 + [False] * 10, "t2": [True, False] * 20})
    dropped = _conditioned(
        write_run(tmp_path / "drop", {"t1": [True] * 12 + [False] * 28, "t2": [False, True] * 20}), ["drop:audio"]
    )
    blanked = _conditioned(
        write_run(tmp_path / "blank", {"t1": [False] * 5 + [True] * 25 + [False] * 10, "t2": [True] * 40}),
        ["blank:image"],
    )
    report = reliance_of_runs(base, [dropped, blanked], seed=7)
    assert [(row.task, row.condition) for row in report.rows] == [
        ("t1", "drop:audio"), ("t2", "drop:audio"), ("t1", "blank:image"), ("t2", "blank:image")]  # fmt: skip
    rows = {(row.task, row.condition): row for row in report.rows}
    for run_dir, label in ((dropped, "drop:audio"), (blanked, "blank:image")):
        comparison = compare_runs(RunFiles(base, view=RecordOutcome), RunFiles(run_dir, view=RecordOutcome),
                                  alpha=0.05, max_drop=0.0, seed=7)  # fmt: skip
        for compared in comparison.tasks:
            row, paired = rows[(compared.task, label)], compared.paired
            assert (row.n, row.difference, row.ci_low, row.ci_high, row.p_value) == (
                paired.n, paired.difference, paired.ci_low, paired.ci_high, paired.p_value)  # fmt: skip
            assert row.base_accuracy == 100 * paired.base_correct / paired.n
            assert row.accuracy == 100 * paired.new_correct / paired.n
    assert (rows[("t1", "drop:audio")].base_accuracy, rows[("t1", "drop:audio")].accuracy) == (75.0, 30.0)
    assert rows[("t1", "drop:audio")].difference == -45.0 and rows[("t2", "blank:image")].difference == 50.0
    assert rows[("t1", "drop:audio")].p_value == pytest.approx(2 * 0.5**18)  # 18 right only unmodified, 0 the other way
    assert rows[("t2", "drop:audio")].p_value == 1.0  # 20 discordant pairs each way
    assert report.base_condition == "default"


def test_the_report_refuses_runs_of_another_model(tmp_path):
    base = write_run(tmp_path / "base", {"t": [True, False]})
    other = write_run(tmp_path / "other", {"t": [True, True]}, model="n")
    assert main([str(base), str(other)]) == 2


def test_reliance_runs_the_missing_runs_and_reads_the_finished_ones(monkeypatch, tmp_path, capsys):
    register_recording_model(monkeypatch, tmp_path)
    out = tmp_path / "reliance"
    flags = ["--model", "recording", "--tasks", "mcub-sample", "--conditions", "drop:audio,blank:audio,swap:audio,"
             "drop:point", "--model-arg", "answer=gold-if-audio", "--num-workers", "0", "--no-progress",
             "--run-dir-base", str(out), "--json", str(tmp_path / "report.json"),
             "--plot", str(tmp_path / "r.png")]  # fmt: skip
    assert main(flags) == 0
    assert sorted(path.name for path in (out / "recording").iterdir()) == [
        "reliance-blank_audio", "reliance-default", "reliance-drop_audio", "reliance-drop_point",
        "reliance-swap_audio"]  # fmt: skip
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {row["condition"]: row for row in report["rows"]}
    # gold letters A B C D A: answering "A" without audio is right on 2 of 5
    assert {c: (r["base_accuracy"], r["accuracy"]) for c, r in rows.items()} == {
        "drop:audio": (100.0, 40.0), "blank:audio": (100.0, 40.0), "swap:audio": (100.0, 100.0),
        "drop:point": (100.0, 100.0)}  # fmt: skip
    assert rows["drop:audio"]["p_value"] == pytest.approx(0.25) and rows["drop:audio"]["difference"] == -60.0
    for condition, row in rows.items():
        compared = compare_runs(RunFiles(out / "recording" / "reliance-default", view=RecordOutcome),
                                RunFiles(Path(row["run_dir"]), view=RecordOutcome), 0.05, 0.0, 0).tasks[0]  # fmt: skip
        assert (row["difference"], row["ci_low"], row["ci_high"], row["p_value"]) == (
            compared.paired.difference,
            compared.paired.ci_low,
            compared.paired.ci_high,
            compared.paired.p_value,
        )
        assert Path(row["run_dir"]).name == reliance_run_name([condition])
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert "| mcub-sample | drop:audio | 5 | 100.00 | 40.00 | -60.00 |" in table

    RecordingModel.received = []
    assert main(flags) == 0
    assert RecordingModel.received == []  # every run was finished: read, not run again
    assert "reading " in capsys.readouterr().err
    assert main([*flags[:-4], "--limit", "2", "--json", str(tmp_path / "other.json")]) == 2
    assert "cannot resume a run started with other settings (limit: None then, 2 now)" in capsys.readouterr().err


def test_a_condition_that_does_not_apply_to_a_task_is_listed_not_run(monkeypatch, tmp_path, capsys, data_root):
    register_recording_model(monkeypatch, tmp_path)
    write_avqa(data_root, ["<video>\n<audio>\nWhat makes the sound?\nA. a dog\nB. a car"] * 2, "AB")
    flags = ["--model", "recording", "--tasks", f"mcub-sample,{AVQA_VIDEO_AUDIO}", "--conditions", "drop:image",
             "--num-workers", "0", "--no-progress", "--run-dir-base", str(tmp_path / "r"), "--data-root",
             str(data_root), "--no-download"]  # fmt: skip
    assert main(flags) == 0
    out = capsys.readouterr().out
    assert "| mcub-sample | drop:image | 5 |" in out
    task = AVQA_VIDEO_AUDIO
    assert f"not run: {task} under drop:image: condition drop:image does not apply to task {task}: " in out
    assert f"| {task} | drop:image" not in out
