import json
import shutil
import subprocess
import sys
from pathlib import Path

from sample_builder import build_sample

from mcub.check import main as check_main
from mcub.eval import main as eval_main
from mcub.tasks import BUNDLED_DATA_ROOT


def test_data_check_passes_on_the_bundled_sample(capsys):
    assert check_main(["check", "--tasks", "mcub-sample", "--no-progress", "--no-download"]) == 0
    out = capsys.readouterr().out
    assert "mcub-sample: 5 samples" in out and "no problems" in out
    for modality in ("image", "video", "audio", "point"):
        assert f"{modality}: 5 files, 5 decoded" in out


def test_data_check_names_a_truncated_mp4_and_a_missing_answer(tmp_path, capsys):
    copy = tmp_path / "data"
    shutil.copytree(BUNDLED_DATA_ROOT, copy)
    video = copy / "sample" / "video-2.mp4"
    video.write_bytes(video.read_bytes()[:1500])
    answers_path = copy / "test" / "mcub-sample-answer.json"
    answers = [record for record in json.loads(answers_path.read_text()) if record["id"] != "mcub-sample-3"]
    answers_path.write_text(json.dumps(answers))

    code = check_main(["check", "--tasks", "mcub-sample", "--data-root", str(copy), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    assert "2 problem(s)" in out
    assert f"{copy / 'test' / 'mcub-sample.json'} [sample mcub-sample-3]: no answer for this id" in out
    assert f"{video} [sample mcub-sample:mcub-sample-2]: undecodable video" in out


def test_data_check_names_ambiguous_gold_another_question_and_unanswered_ids(tmp_path, capsys):
    copy = tmp_path / "data"
    shutil.copytree(BUNDLED_DATA_ROOT, copy)
    answers_path = copy / "test" / "mcub-sample-answer.json"
    answers = [record for record in json.loads(answers_path.read_text()) if record["id"] != "mcub-sample-3"]
    answers[2]["conversations"][0]["value"] = answers[2]["conversations"][0]["value"].replace("clock", "bomb")
    answers.append({**answers[1], "conversations": [answers[1]["conversations"][0], {"from": "gpt", "value": "D"}]})
    answers_path.write_text(json.dumps(answers))

    code = check_main(["check", "--tasks", "mcub-sample", "--data-root", str(copy), "--no-progress"])
    out = capsys.readouterr().out.splitlines()
    questions = copy / "test" / "mcub-sample.json"
    assert code == 1
    assert "mcub-sample: 4 samples, 1 question(s) without an answer left out" in out
    assert out[out.index("3 problem(s):") :] == [
        "3 problem(s):",
        f"  {answers_path} [sample mcub-sample-2]: its question differs from the one in mcub-sample.json from "
        "character 86: '. A thunderstorm B. A ticking bomb C. A synthetic test signa' vs "
        "'. A thunderstorm B. A ticking clock C. A synthetic test sign'",
        f"  {questions} [sample mcub-sample-3]: no answer for this id in mcub-sample-answer.json",
        f"  {answers_path} [sample mcub-sample-1]: ambiguous gold: mcub-sample-answer.json gives this id different "
        "answers, 'B' (record #1), 'D' (record #4)",
    ]


def test_data_check_names_a_question_file_that_is_a_fifo(tmp_path, capsys):
    import os

    copy = tmp_path / "data"
    shutil.copytree(BUNDLED_DATA_ROOT / "test", copy / "test")
    questions = copy / "test" / "mcub-sample.json"
    questions.unlink()
    os.mkfifo(questions)
    code = check_main(["check", "--tasks", "mcub-sample", "--data-root", str(copy), "--no-progress"])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out == [
        "1 problem(s):",
        f"  mcub-sample: {questions}: a FIFO (named pipe), not a regular file; nothing else is read in its place",
    ]


def test_data_check_reports_a_missing_question_file_and_goes_on(tmp_path, capsys):
    code = check_main(
        ["check", "--tasks", "avqa-audio,mcub-sample", "--data-root", str(tmp_path), "--no-download", "--no-progress"]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "avqa-audio: " in out and "avqa-test_mm_audio.json: not found (downloads are off)" in out
    assert "mcub-sample: 5 samples" in out


def test_list_tasks_lists_everything_without_importing_torch():
    script = (
        "import sys; from mcub.eval import main; main(['--list-tasks']); "
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, 'heavy import'"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("24 tasks")
    assert any(line.split()[:2] == ["mcub-sample", "image+video+audio+point"] and "5 items" in line for line in lines)
    assert "4 groups:" in lines
    assert any(line.split()[:3] == ["mcub", "5", "tasks:"] for line in lines)


def test_list_tasks_counts_items_of_local_data(tmp_path, capsys):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "MCUB-4.json").write_text(json.dumps([{"id": i} for i in range(7)]))
    assert eval_main(["--list-tasks", "--data-root", str(tmp_path)]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.split()[:1] == ["mcub-4"])
    assert "7 items" in line


def test_committed_sample_matches_its_builder(tmp_path):
    build_sample(tmp_path)
    for name in ("mcub-sample.json", "mcub-sample-answer.json"):
        assert (tmp_path / "test" / name).read_text() == (BUNDLED_DATA_ROOT / "test" / name).read_text()
    committed = sorted(path.name for path in (BUNDLED_DATA_ROOT / "sample").iterdir())
    assert committed == sorted(path.name for path in (tmp_path / "sample").iterdir())
    for name in committed:
        if not name.endswith(".mp4"):
            assert (tmp_path / "sample" / name).read_bytes() == (BUNDLED_DATA_ROOT / "sample" / name).read_bytes(), name


def test_python_dash_m_mcub_data_check_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mcub.data", "check", "--tasks", "mcub-sample", "--no-progress"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
    )
    assert result.returncode == 0, result.stderr
    assert "no problems" in result.stdout
