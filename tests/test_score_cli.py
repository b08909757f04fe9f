import json

from conftest import answer, question, write_json

from mcub.score import main as score_main

PROMPT = "<image>\n<audio>\n<video>\n<point>\nWhat do they share?\nA. a dog\nB. rain\nC. music\nD. a car"
MEDIA = {"vision": ["i.jpg"], "audio": ["a.wav"], "video": ["v.mp4"], "point": ["p.npy"]}


def _predictions(path, items):
    path.write_text("".join(json.dumps({"question_id": qid, "text": text}) + "\n" for qid, text in items))
    return path


def test_paper_protocol_reproduces_the_authors_mcub_scorer(data_root, tmp_path, capsys):
    golds = {1: "B", 2: "B", 3: "C", 4: "A", 5: "D", 6: "A"}
    write_json(data_root / "test/MCUB-4.json", [question(i, PROMPT, **MEDIA) for i in golds])
    write_json(data_root / "test/MCUB-answer.json", [answer(i, gold) for i, gold in golds.items()])
    predictions = _predictions(
        tmp_path / "merge.jsonl",
        [(1, "B"), (2, "b"), (3, "(C)"), (4, " A"), (5, "D. a car"), (99, "A"), (1, "C")],
    )
    args = ["--task", "mcub-4", "--predictions", str(predictions), "--data-root", str(data_root), "--no-download"]
    assert score_main(args) == 0
    out, err = capsys.readouterr()
    # the authors' rule: text[:1] == gold, over the 7 prediction lines (unknown id 99 and the repeat of 1 count)
    assert out.splitlines()[0] == "Accuracy: 28.57%"
    # mcub: over the 6 gold items, question 6 missing
    assert "2/6 gold items correct = 33.33%" in out and "missing 1" in out
    assert "1 unknown prediction id(s) (not scored by mcub): 99" in err
    assert "1 duplicate prediction id(s) (not scored by mcub): 1" in err

    assert score_main([*args, "--protocol", "generate"]) == 0
    out, _ = capsys.readouterr()
    assert "5/6 gold items correct = 83.33%" in out  # "b", "(C)", " A" and "D. a car" are all read


def test_paper_protocol_reproduces_the_authors_music_avqa_scorer(data_root, tmp_path, capsys):
    golds = {"q1": "two", "q2": "yes", "q3": "guitar", "q4": "0", "q5": "piano"}
    records = [question(i, "<audio>\nQ?", audio=["a.wav"]) | {"type": '["Audio", "Counting"]'} for i in golds]
    write_json(data_root / "test/music-avqa-test_mm_audio.json", records)
    write_json(data_root / "test/music-avqa-test_mm_answer.json", [answer(i, gold) for i, gold in golds.items()])
    predictions = _predictions(
        tmp_path / "merge.jsonl",
        [("q1", "Two."), ("q2", "Yes, it is."), ("q3", "The guitar"), ("q4", "none"), ("q5", "The piano is playing")],
    )
    args = ["--task", "music-avqa-audio", "--predictions", str(predictions), "--data-root", str(data_root)]
    assert score_main([*args, "--no-download"]) == 0
    out, _ = capsys.readouterr()
    # EvalAI-normalised exact match of the whole output: "2"=="2", "yes it is"!="yes", "guitar", "0"=="0", verbose fails
    assert out.splitlines()[0] == "Accuracy: 60.00%"
    assert "3/5 gold items correct = 60.00%" in out
    assert "type=Audio/Counting: 3/5 = 60.00%" in out


def test_answers_override_and_bad_prediction_file(data_root, tmp_path, capsys):
    write_json(data_root / "test/MCUB-4.json", [question(1, PROMPT, **MEDIA)])
    override = write_json(tmp_path / "my-answers.json", [answer(1, "C")])
    predictions = _predictions(tmp_path / "p.jsonl", [(1, "C")])
    args = ["--task", "mcub-4", "--predictions", str(predictions), "--data-root", str(data_root), "--no-download"]
    assert score_main([*args, "--answers", str(override)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "Accuracy: 100.00%"
    predictions.write_text('{"question_id": 1, "text": "C"}\n{"question_id": 2,\n')
    assert score_main([*args, "--answers", str(override)]) == 2
    assert "p.jsonl:2:" in capsys.readouterr().err
