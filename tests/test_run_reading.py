"""Runs read once: a resume leaves an unchanged records file alone and folds new records in as a single run writes
them; projected readers give the full readers' comparisons; the open-answer bootstrap in chunks; media paths
resolved once per distinct path; versions read without importing torch or transformers; the quick exit of the
command-line entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from run_factory import record, write_run

from mcub import scoring
from mcub.compare import compare_runs
from mcub.data import DataPaths, load_task
from mcub.eval import main as eval_main
from mcub.leaderboard import rank_submissions
from mcub.results import (
    RunFiles,
    consolidate_records,
    read_record_file,
    read_records,
    read_summary,
    record_line,
    write_records,
)
from mcub.schema import RecordOutcome
from mcub.tasks import BUNDLED_DATA_ROOT, load_registry


def _eval(tmp_path: Path, *extra: str) -> int:
    common = ["--model", "random", "--tasks", "mcub-sample", "--output-dir", str(tmp_path), "--no-progress"]
    return eval_main([*common, "--num-workers", "0", *extra])


def _summary_figures(run_dir: Path) -> tuple[dict, dict]:
    summary = read_summary(run_dir)
    return {name: task.model_dump() for name, task in summary.tasks.items()}, summary.groups


def _without_timing(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "timing"} for line in path.read_text().splitlines()]


def test_a_resume_with_nothing_new_leaves_the_records_file_as_it_was(tmp_path):
    assert _eval(tmp_path, "--run-name", "r") == 0
    run_dir = tmp_path / "random" / "r"
    path = run_dir / "records" / "mcub-sample.jsonl"
    before, inode, figures = path.read_bytes(), path.stat().st_ino, _summary_figures(run_dir)
    assert _eval(tmp_path, "--run-name", "r", "--resume") == 0
    assert path.read_bytes() == before
    assert path.stat().st_ino == inode  # not rewritten: the same file, not a new one renamed over it
    assert _summary_figures(run_dir) == figures
    assert sorted(p.name for p in path.parent.iterdir()) == ["mcub-sample.jsonl"]  # the empty part file is gone


def test_a_run_made_before_conditions_existed_resumes_and_one_under_conditions_does_not_as_it(tmp_path, capsys):
    assert _eval(tmp_path, "--run-name", "r", "--limit", "3") == 0
    identity_file = tmp_path / "random" / "r" / "run.json"
    identity = json.loads(identity_file.read_text())
    assert identity.pop("conditions") == []
    identity_file.write_text(json.dumps(identity))  # as runs of mcub before conditions recorded it
    assert _eval(tmp_path, "--run-name", "r", "--limit", "3", "--resume") == 0
    assert _eval(tmp_path, "--run-name", "r", "--limit", "3", "--resume", "--condition", "drop:audio") == 2
    assert "conditions: [] then, ['drop:audio'] now" in capsys.readouterr().err


def test_a_resume_that_adds_records_gives_what_a_single_run_gives(tmp_path):
    assert _eval(tmp_path, "--run-name", "whole") == 0
    assert _eval(tmp_path, "--run-name", "cut") == 0
    whole, cut = (tmp_path / "random" / name / "records" / "mcub-sample.jsonl" for name in ("whole", "cut"))
    lines = cut.read_text().splitlines(keepends=True)
    cut.write_text(lines[0] + lines[2] + lines[4])  # samples 1 and 3 are redone, between the others
    assert _eval(tmp_path, "--run-name", "cut", "--resume") == 0
    assert _without_timing(cut) == _without_timing(whole)
    kept = cut.read_text().splitlines(keepends=True)
    assert [kept[0], kept[2], kept[4]] == [lines[0], lines[2], lines[4]]  # the records kept keep their bytes
    figures = _summary_figures(tmp_path / "random" / "whole")
    assert _summary_figures(tmp_path / "random" / "cut") == figures


def test_folding_part_files_writes_what_rewriting_every_record_writes(tmp_path):
    records = [record("t", index, index % 3 == 0) for index in range(6)]
    write_records(tmp_path / "t.jsonl", [records[i] for i in (0, 2, 4)])
    part = tmp_path / "t.rank1.jsonl"
    part.write_text(record_line(records[5]) + record_line(records[1]) + '{"id": "3", "half')
    folded, notes = consolidate_records(tmp_path, "t")
    assert notes == [f"{part}:3: damaged record (17 bytes) dropped; its sample is redone"]
    write_records(tmp_path / "today.jsonl", [records[i] for i in (0, 2, 4, 5, 1)])
    assert (tmp_path / "t.jsonl").read_bytes() == (tmp_path / "today.jsonl").read_bytes()
    assert sorted(folded.records) == ["0", "1", "2", "4", "5"] and not part.exists()
    again, notes = consolidate_records(tmp_path, "t", folded)
    assert again is folded and notes == []


def test_a_record_whose_text_holds_a_line_separator_is_read_back(tmp_path):
    separated = record("t", 0, True).model_copy(update={"output": "A\u2028B\x85C\x1c"})
    write_records(tmp_path / "t.jsonl", [separated, record("t", 1, False)])
    records, damaged = read_records(tmp_path / "t.jsonl")
    assert damaged == [] and records["0"] == separated and len(records) == 2
    assert read_record_file(tmp_path / "t.jsonl").lines["0"] + "\n" == record_line(separated)


def test_projected_readers_compare_and_rank_as_the_full_readers(tmp_path):
    rng = np.random.default_rng(3)
    outcomes = {task: [bool(flag) for flag in rng.random(60) < 0.6] for task in ("a", "b")}
    base = write_run(tmp_path / "base", outcomes, groups={"ab": ["a", "b"]})
    drops = {task: [flag and rng.random() < 0.7 for flag in flags] for task, flags in outcomes.items()}
    new = write_run(tmp_path / "new", drops, model="n", groups={"ab": ["a", "b"]})
    full = [RunFiles(base), RunFiles(new)]
    projected = [RunFiles(base, view=RecordOutcome), RunFiles(new, view=RecordOutcome)]
    assert all(isinstance(r, RecordOutcome) for run in projected for r in run.records["a"].values())
    assert asdict(compare_runs(*projected, 0.05, 0.0, 0)) == asdict(compare_runs(*full, 0.05, 0.0, 0))
    ranks = [[(e.model, e.rank, e.tied_with_previous) for e in rank_submissions(runs)[0]] for runs in (full, projected)]
    assert ranks[0] == ranks[1]


def test_the_chunked_open_answer_bootstrap_is_bit_identical_to_drawing_every_resample_at_once(monkeypatch):
    values = np.random.default_rng(1).random(1_001).round(3).tolist()
    rng = np.random.default_rng(7)
    array = np.asarray(values)
    means = array[rng.integers(0, len(array), size=(scoring.BOOTSTRAP_RESAMPLES, len(array)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    expected = (round(float(array.mean()), 4), round(float(low), 4), round(float(high), 4))
    for chunk_items in (1, 3 * 1_001, 7 * 1_001 + 5, 1 << 22):
        monkeypatch.setattr(scoring, "BOOTSTRAP_CHUNK_ITEMS", chunk_items)
        score = scoring.mean_score(values, 7)
        assert (score.mean, score.ci_low, score.ci_high) == expected and score.n == 1_001


def test_media_paths_are_resolved_once_per_distinct_path_from_one_listing_per_folder(tmp_path, monkeypatch):
    import shutil

    from mcub.data import files

    data = tmp_path / "data"
    shutil.copytree(BUNDLED_DATA_ROOT, data)
    question_file = data / "test" / "mcub-sample.json"
    answer_file = data / "test" / "mcub-sample-answer.json"
    questions, answers = json.loads(question_file.read_text()), json.loads(answer_file.read_text())
    question_file.write_text(json.dumps([{**q, "id": f"{q['id']}-{k}"} for k in range(40) for q in questions]))
    answer_file.write_text(json.dumps([{**a, "id": f"{a['id']}-{k}"} for k in range(40) for a in answers]))
    task = load_registry().tasks["mcub-sample"]
    listed, resolved = [], []
    scandir, resolution = os.scandir, files.MediaPaths._resolution
    monkeypatch.setattr(files.os, "scandir", lambda folder: listed.append(Path(folder)) or scandir(folder))
    monkeypatch.setattr(
        files.MediaPaths, "_resolution", lambda self, path: resolved.append(path) or resolution(self, path)
    )
    data_task = load_task(task, DataPaths(data_root=data))
    assert len(data_task.samples) == 200
    assert len(resolved) == 20 and len(set(resolved)) == 20  # 5 items x 4 media files, each resolved once
    assert listed == [tmp_path / "data" / "sample"]  # under the data root's parent, as the authors' paths say
    assert data_task.samples[-1].media[0] == ("image", str(data / "sample" / "image-4.png"))


def test_a_listed_name_that_is_a_broken_link_or_missing_resolves_as_a_stat_would(tmp_path):
    from mcub.data.files import MediaPaths

    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "x.wav").write_bytes(b"1")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.wav").symlink_to(tmp_path / "gone.wav")  # broken: the data root's copy is taken
    (tmp_path / "sub" / "y.wav").symlink_to(root / "sub" / "x.wav")
    paths = MediaPaths(root, None)
    assert paths.resolve("sub/x.wav") == root / "sub" / "x.wav"
    assert paths.resolve("sub/y.wav") == tmp_path / "sub" / "y.wav"
    assert paths.resolve("none/z.wav") == tmp_path / "none" / "z.wav"


def test_reading_versions_imports_neither_torch_nor_transformers():
    code = (
        "import sys\nfrom mcub.results import environment\nenvironment = environment()\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules), environment.torch is not None, "
        "environment.gpu)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["[]", "True", "None"]


def test_a_model_that_computes_with_no_torch_runs_and_resumes_without_importing_it(tmp_path):
    code = (
        "import sys\nfrom mcub import EvalRequest, evaluate\n"
        f"request = EvalRequest(model='random', tasks=['mcub-sample'], output_dir={str(tmp_path)!r}, run_name='r', "
        "progress=False)\nfirst = evaluate(request)\nagain = evaluate(request.model_copy(update={'resume': True}))\n"
        "print('torch' in sys.modules, first.settings.device, first.settings.dtype, "
        "again.tasks['mcub-sample'].metrics == first.tasks['mcub-sample'].metrics)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert result.stdout.split() == ["False", "cpu", "float32", "True"], result.stderr


@pytest.mark.parametrize("entry", [["-m", "mcub.compare"], ["-m", "mcub", "compare"]])
def test_the_command_line_exits_quickly_with_its_code_and_all_its_output(tmp_path, entry):
    base = write_run(tmp_path / "base", {"a": [True] * 40})
    new = write_run(tmp_path / "new", {"a": [False] * 40})
    report = tmp_path / "comparison.json"
    result = subprocess.run(
        [sys.executable, *entry, str(base), str(new), "--json", str(report)], capture_output=True, text=True
    )
    assert result.returncode == 1, result.stderr  # a regression
    assert "| a | 40 | 100.00 | 0.00 | -100.00 |" in result.stdout and result.stdout.endswith("\n")
    assert json.loads(report.read_text())["tasks"][0]["regression"] is True
