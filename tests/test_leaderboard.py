import json
import re

from chromium import chromium_dom

from mcub.data import DataPaths
from mcub.eval import main as eval_main
from mcub.leaderboard import main as leaderboard_main
from mcub.leaderboard import validate_run

HOSTILE_NAME = '<img src=x onerror="document.title=1">random'


def _run(tmp_path, name, seed):
    args = ["--model", "random", "--tasks", "mcub-sample", "--output-dir", str(tmp_path), "--no-progress"]
    assert eval_main([*args, "--num-workers", "0", "--run-name", name, "--seed", str(seed)]) == 0
    return tmp_path / "random" / name


def test_a_genuine_run_is_valid(tmp_path, capsys):
    run = _run(tmp_path, "ok", 0)
    assert validate_run(run, DataPaths()) == []
    assert leaderboard_main(["validate", str(run)]) == 0
    assert "valid submission" in capsys.readouterr().out


def test_an_edited_summary_is_rejected(tmp_path, capsys):
    run = _run(tmp_path, "edited", 0)
    summary = json.loads((run / "summary.json").read_text())
    summary["tasks"]["mcub-sample"]["metrics"]["accuracy"] += 1.0
    (run / "summary.json").write_text(json.dumps(summary))
    assert leaderboard_main(["validate", str(run)]) == 1
    out = capsys.readouterr().out
    assert "rejected: mcub-sample: the summary's metrics differ from those recomputed from the records" in out


def test_a_removed_or_altered_record_is_rejected_with_every_reason(tmp_path):
    run = _run(tmp_path, "cut", 0)
    path = run / "records" / "mcub-sample.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[1]["correct"] = not records[1]["correct"]
    records[2]["surprise"] = "extra field"
    path.write_text("".join(json.dumps(r) + "\n" for r in records[1:]))
    reasons = validate_run(run, DataPaths())
    assert any("1 gold id(s) without a record: mcub-sample-0" in reason for reason in reasons)
    assert any("does not follow from their output: mcub-sample-1" in reason for reason in reasons)
    assert any("metrics differ" in reason for reason in reasons)
    assert any("1 record(s) do not follow the record schema: mcub-sample-2" in reason for reason in reasons)


def test_a_limited_run_or_a_non_run_is_rejected(tmp_path):
    args = ["--model", "random", "--tasks", "mcub-sample", "--output-dir", str(tmp_path), "--no-progress"]
    assert eval_main([*args, "--num-workers", "0", "--run-name", "l", "--limit", "2"]) == 0
    reasons = validate_run(tmp_path / "random" / "l", DataPaths())
    assert "the run was limited to 2 samples per task" in reasons
    assert any("gold id(s) without a record" in reason for reason in reasons)
    assert validate_run(tmp_path, DataPaths()) == [f"{tmp_path}: not a run directory (no summary.json)"]


def test_add_and_build_render_the_right_rows_in_chromium(tmp_path):
    board = tmp_path / "board"
    runs = [_run(tmp_path, f"seed{seed}", seed) for seed in range(3)]
    summary = json.loads((runs[2] / "summary.json").read_text())
    summary["model"]["name"] = HOSTILE_NAME
    (runs[2] / "summary.json").write_text(json.dumps(summary))
    for run in runs:
        assert leaderboard_main(["add", str(run), "--leaderboard", str(board)]) == 0
    assert leaderboard_main(["add", str(runs[0]), "--leaderboard", str(board)]) == 1  # already there
    assert leaderboard_main(["build", "--leaderboard", str(board)]) == 0
    markdown = (board / "README.md").read_text()
    assert "&lt;img src=x" in markdown and "<img" not in markdown
    dom = chromium_dom(board / "index.html")
    body = dom[dom.index("<tbody>") : dom.index("</tbody>")]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    assert len(rows) == 3
    names = [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)[1] for row in rows]
    assert sorted(names) == sorted(["random", "random", '&lt;img src=x onerror="document.title=1"&gt;random'])
    assert "<img" not in body and "<title>MCUB leaderboard</title>" in dom
    scores = [float(re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)[3]) for row in rows]
    assert scores == sorted(scores, reverse=True)
    accuracies = {
        json.loads((run / "summary.json").read_text())["tasks"]["mcub-sample"]["metrics"]["accuracy"] for run in runs
    }
    assert set(scores) == accuracies
