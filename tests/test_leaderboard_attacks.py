"""A leaderboard that cannot be faked: each hostile edit of a genuine run is rejected with its exact reason, `add`
copies only the run's own regular files, and no submitted string forges markup."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mcub.data import DataPaths
from mcub.eval import main as eval_main
from mcub.leaderboard import Rejected, add_run, build, validate_run
from mcub.results import write_summary
from mcub.schema import RunSummary
from mcub.scoring import task_metrics


def _run(tmp_path: Path, name: str = "r") -> Path:
    args = ["--model", "random", "--tasks", "mcub-sample", "--output-dir", str(tmp_path), "--no-progress"]
    assert eval_main([*args, "--num-workers", "0", "--run-name", name]) == 0
    return tmp_path / "random" / name


def _edit_records(run: Path, edit) -> None:
    """Rewrite every record with `edit(record)`, and the summary's metrics to agree with them (as a forger would)."""
    path = run / "records" / "mcub-sample.jsonl"
    records = [edit(json.loads(line)) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    summary = RunSummary.model_validate_json((run / "summary.json").read_text())
    from mcub.schema import Record

    typed = {r["id"]: Record.model_validate(r) for r in records}
    task = summary.tasks["mcub-sample"]
    task.metrics = task_metrics(list(typed), typed, [], summary.settings.seed)
    write_summary(run, summary)


def _reasons(run: Path) -> list[str]:
    return validate_run(run, DataPaths())


def test_relabelling_records_as_loglik_with_the_gold_winning_is_rejected(tmp_path):
    run = _run(tmp_path)

    def as_loglik(record):
        logliks = {key: (0.0 if key == record["gold"] else -5.0) for key in record["options"]}
        return {**record, "protocol": "loglik", "output": None, "option_logliks": logliks, "extracted": record["gold"],
                "extraction": "loglik-argmax", "correct": True, "decoding": {"kind": "loglik",
                "continuations": "option-key"}}  # fmt: skip

    _edit_records(run, as_loglik)
    ids = ", ".join(f"mcub-sample-{i}" for i in range(5))
    assert f"mcub-sample: 5 record(s) were not made under the task's protocol paper: {ids}" in _reasons(run)


def test_relabelling_records_as_open_with_no_metrics_is_rejected(tmp_path):
    run = _run(tmp_path)
    _edit_records(run, lambda r: {**r, "protocol": "open", "correct": None, "scores": {}, "extraction": "open"})
    reasons = _reasons(run)
    assert any(
        reason.startswith("mcub-sample: 5 record(s) were not made under the task's protocol paper")
        for reason in reasons
    )


def test_records_on_other_data_options_or_gold_are_rejected(tmp_path):
    run = _run(tmp_path)

    def tampered(record):
        if record["id"] == "mcub-sample-0":
            record["question_sha256"] = "0" * 64
        if record["id"] == "mcub-sample-1":
            record["options"] = {**record["options"], "A": "something else"}
        if record["id"] == "mcub-sample-2":
            record["gold"] = record["output"][:1]
        return record

    _edit_records(run, tampered)
    reasons = _reasons(run)
    assert "mcub-sample: 1 record(s) made on other task data than the task files: mcub-sample-0" in reasons
    assert "mcub-sample: 1 record(s) whose options are not the task's: mcub-sample-1" in reasons
    assert any(r.startswith("mcub-sample: ") and "gold or score does not follow" in r and "mcub-sample-2" in r
               for r in reasons)  # fmt: skip


def test_a_stale_extracted_answer_is_rejected(tmp_path):
    run = _run(tmp_path)
    _edit_records(run, lambda r: {**r, "extracted": r["gold"], "correct": True})
    assert any("gold or score does not follow from their output" in reason for reason in _reasons(run))


def test_an_invented_group_or_task_is_rejected(tmp_path):
    run = _run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    summary["groups"]["mcub-easy"] = {
        "tasks": ["mcub-sample", "mcub-made-up"],
        "micro": {"n": 1, "correct": 1, "accuracy": 100.0, "ci_low": 100.0, "ci_high": 100.0},
        "macro": {"n": 1, "correct": 1, "accuracy": 100.0, "ci_low": 100.0, "ci_high": 100.0},
    }
    (run / "summary.json").write_text(json.dumps(summary))
    reasons = _reasons(run)
    assert "group mcub-easy: not a group of this mcub" in reasons
    assert "group mcub-easy: task mcub-made-up is not in the run" in reasons


def test_a_run_on_edited_questions_is_rejected_even_with_the_summary_hashes_reset(tmp_path):
    import shutil

    from mcub.tasks import BUNDLED_DATA_ROOT

    data = tmp_path / "data"
    shutil.copytree(BUNDLED_DATA_ROOT, data)
    questions = data / "test" / "mcub-sample.json"
    questions.write_text(questions.read_text().replace("in common", "in common (hint: the answer is A)"))
    args = ["--model", "random", "--tasks", "mcub-sample", "--output-dir", str(tmp_path), "--no-progress"]
    assert eval_main([*args, "--num-workers", "0", "--run-name", "e", "--data-root", str(data), "--no-download"]) == 0
    run = tmp_path / "random" / "e"
    genuine = json.loads((_run(tmp_path, "g") / "summary.json").read_text())["tasks"]["mcub-sample"]
    summary = json.loads((run / "summary.json").read_text())
    for key in ("question_sha256", "answer_sha256"):
        summary["tasks"]["mcub-sample"][key] = genuine[key]
    (run / "summary.json").write_text(json.dumps(summary))
    assert any("record(s) made on other task data than the task files" in reason for reason in _reasons(run))


def test_add_copies_only_the_run_s_regular_files_and_refuses_links(tmp_path):
    run = _run(tmp_path)
    secret = tmp_path / "secret.key"
    secret.write_text("sk-do-not-copy")
    board = tmp_path / "board"
    os.symlink(secret, run / "records" / "notes.txt")
    with pytest.raises(Rejected, match=r"records/notes.txt is a symbolic link"):
        add_run(run, DataPaths(), board)
    (run / "records" / "notes.txt").unlink()
    os.symlink(run, run / "loop")
    with pytest.raises(Rejected, match=r"loop is a symbolic link"):
        add_run(run, DataPaths(), board)
    (run / "loop").unlink()
    (run / "extra.txt").write_text("not a run file")
    target = add_run(run, DataPaths(), board)
    copied = sorted(str(path.relative_to(target)) for path in target.rglob("*"))
    assert copied == ["records", "records/mcub-sample.jsonl", "run.json", "run.yaml", "summary.json", "table.md"]
    assert not any(path.is_symlink() for path in target.rglob("*"))


def test_a_model_name_with_a_newline_or_markup_forges_no_line(tmp_path):
    run = _run(tmp_path)
    summary = RunSummary.model_validate_json((run / "summary.json").read_text())
    summary.model.name = "evil\n| 1 | forged | x | 100.00 |\n<script>alert(1)</script>"
    write_summary(run, summary)
    board = tmp_path / "board"
    add_run(run, DataPaths(), board)
    build(board)
    markdown = (board / "README.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(rows) == 2  # the header and the one submission
    assert "forged" in rows[1] and "<script>" not in markdown
    assert "<script>alert" not in (board / "index.html").read_text()


def test_a_task_name_protocol_or_adapter_with_markup_forges_no_page_element(tmp_path):
    from run_factory import write_run

    task, protocol = "<img src=x onerror=alert(2)>", '"><svg onload=alert(3)>'
    board = tmp_path / "board"
    run = write_run(board / "submissions" / "evil", {task: [True, False]}, protocol=protocol)
    summary = RunSummary.model_validate_json((run / "summary.json").read_text())
    summary.model.adapter = "<b onmouseover=alert(4)>"
    write_summary(run, summary)
    build(board)
    page = (board / "index.html").read_text()
    assert "<img" not in page and "<svg onload" not in page and "<b " not in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page  # the task's column header, escaped
    assert '<option value="&quot;&gt;&lt;svg onload=alert(3)&gt;">' in page  # the protocol filter
    assert '<td data-protocols="&quot;&gt;&lt;svg onload=alert(3)&gt;">' in page
    assert '<td data-family="baseline">baseline</td>' in page  # the family is derived, never the adapter's text
