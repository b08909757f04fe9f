"""Data that cannot lie: ambiguous gold, answer files that pose other questions, ids reused across the question
files of one answer file, options past Z, questions without answers, files that are not readable files."""

import json
import os
import shutil

import pytest
from conftest import answer, question, write_json

import mcub
from mcub.data import DataPaths, load_task, parse_options
from mcub.errors import DataError
from mcub.results import RunFiles
from mcub.tasks import BUNDLED_DATA_ROOT, load_registry

TASKS = load_registry().tasks
QUESTION = "Which of these attributes is common among the inputs?\nA. A dog\nB. Street scenes\nC. Rain\nD. Music"
MCUB4_PROMPT = f"image: <image>\naudio: <audio>\nvideo: <video>\npoint: <point>\n{QUESTION}"
MCUB4_MEDIA = {"vision": ["i.jpg"], "audio": ["a.wav"], "video": ["v.mp4"], "point": ["p.npy"]}
MCUB3_PROMPT = f"image: <image>\naudio: <audio>\nvideo: <video>\n{QUESTION}"
MCUB3_MEDIA = {"vision": ["i.jpg"], "audio": ["a.wav"], "video": ["v.mp4"]}


def load(name, root, **kwargs):
    return load_task(TASKS[name], DataPaths(data_root=root, download=False, **kwargs))


def mcub4(data_root, questions, answers):
    write_json(data_root / "test/MCUB-4.json", questions)
    answer_file = write_json(data_root / "test/MCUB-answer.json", answers)
    return load("mcub-4", data_root), answer_file


def asked(sample_id, human, gold):
    """An answer record whose human turn is `human`."""
    record = answer(sample_id, gold)
    record["conversations"][0]["value"] = human
    return record


# --- 1. an id given twice in the answer file ------------------------------------------------------------------


def test_conflicting_golds_make_an_error_sample_that_stays_in_the_task(data_root):
    data, answer_file = mcub4(
        data_root,
        [question(1, MCUB4_PROMPT, **MCUB4_MEDIA), question(2, MCUB4_PROMPT, **MCUB4_MEDIA)],
        [answer(1, "A"), answer(2, "C"), answer("1", "B")],
    )
    ambiguous, fine = data.samples
    message = "ambiguous gold: MCUB-answer.json gives this id different answers, 'A' (record #0), 'B' (record #2)"
    assert (ambiguous.id, ambiguous.error, ambiguous.answer, ambiguous.options) == ("1", message, "", {})
    assert (fine.id, fine.error, fine.answer) == ("2", None, "C")
    assert data.record_problems == []
    assert [str(p) for p in data.problems] == [f"{answer_file} [sample 1]: {message}"]


def test_a_repeated_gold_is_noted_and_kept(data_root):
    data, answer_file = mcub4(data_root, [question(1, MCUB4_PROMPT, **MCUB4_MEDIA)], [answer(1, "A"), answer("1", "A")])
    [sample] = data.samples
    assert (sample.answer, sample.error) == ("A", None)
    assert [str(p) for p in data.problems] == [
        f"{answer_file} [sample 1]: id given 2 times with the same answer, 'A' (record #0), 'A' (record #1)"
    ]


def test_the_ambiguous_gold_is_an_error_record_counted_in_n(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(BUNDLED_DATA_ROOT, root)
    answers_path = root / "test" / "mcub-sample-answer.json"
    answers = json.loads(answers_path.read_text())
    answers.append(answer("mcub-sample-1", "C"))
    answers_path.write_text(json.dumps(answers))
    request = mcub.EvalRequest(model="random", tasks=["mcub-sample"], data_root=root, download=False,
                               output_dir=tmp_path / "runs", run_name="r", num_workers=0, progress=False)  # fmt: skip
    summary = mcub.evaluate(request)
    records = RunFiles(tmp_path / "runs" / "random" / "r").records["mcub-sample"]
    assert records["mcub-sample-1"].error == (
        "data error: ambiguous gold: mcub-sample-answer.json gives this id different answers, "
        "'B' (record #1), 'C' (record #5)"
    )
    assert records["mcub-sample-1"].correct is False and records["mcub-sample-1"].gold == ""
    metrics = summary.tasks["mcub-sample"].metrics
    assert (metrics.n, metrics.errors) == (5, 1)
    assert [record.error for name, record in records.items() if name != "mcub-sample-1"] == [None] * 4


# --- 2. an answer record that poses another question ----------------------------------------------------------


def test_an_answer_record_with_another_question_is_a_problem(data_root):
    other = MCUB4_PROMPT.replace("C. Rain", "C. Snow")
    data, answer_file = mcub4(data_root, [question(1, MCUB4_PROMPT, **MCUB4_MEDIA)], [asked(1, other, "A")])
    assert [str(p) for p in data.problems] == [
        f"{answer_file} [sample 1]: its question differs from the one in MCUB-4.json from character 83: "
        "' A. A dog B. Street scenes C. Snow D. Music' vs ' A. A dog B. Street scenes C. Rain D. Music'"
    ]
    assert data.samples[0].error is None


@pytest.mark.parametrize(
    "human",
    [
        "q",  # the placeholder the tests and some converters write
        "<image>\n<audio> question",  # under three words once the media placeholders are removed
        f"<video>\n<audio>\n  {QUESTION.replace(chr(10), '  ')}",  # the same words, other inputs and whitespace
        MCUB4_PROMPT,
    ],
)
def test_placeholder_or_equal_answer_questions_are_not_flagged(data_root, human):
    data, _ = mcub4(data_root, [question(1, MCUB4_PROMPT, **MCUB4_MEDIA)], [asked(1, human, "A")])
    assert data.problems == []


# --- 3. ids reused across the question files of one answer file ----------------------------------------------


def test_an_id_asked_differently_by_two_question_files_of_one_answer_file(data_root):
    other = MCUB3_PROMPT.replace("A dog", "A cat")
    write_json(
        data_root / "test/MCUB-4.json",
        [question(1, MCUB4_PROMPT, **MCUB4_MEDIA), question(2, MCUB4_PROMPT, **MCUB4_MEDIA)],
    )
    write_json(data_root / "test/MCUB-3-image-audio-video.json", [question(1, other, **MCUB3_MEDIA)])
    write_json(data_root / "test/MCUB-answer.json", [answer(1, "A"), answer(2, "B")])
    mcub3_file, mcub4_file = data_root / "test/MCUB-3-image-audio-video.json", data_root / "test/MCUB-4.json"
    shared = "both files take their gold from MCUB-answer.json, which has one answer per id"
    assert [str(p) for p in load("mcub-4", data_root).record_problems] == [
        f"{mcub4_file} [sample 1]: 1 id(s) also in {mcub3_file} with a different question; {shared}"
    ]
    assert [str(p) for p in load("mcub-3-image-audio-video", data_root).record_problems] == [
        f"{mcub3_file} [sample 1]: 1 id(s) also in {mcub4_file} with a different question; {shared}"
    ]


def test_avqa_variants_share_ids_with_the_same_question(data_root):
    question_text = "What makes the sound? (A) a car (B) a dog (C) a cat (D) a bell"
    write_json(data_root / "test/avqa-test_mm_audio.json", [question(12, f"<audio>\n{question_text}", audio=["a"])])
    write_json(data_root / "test/avqa-test_mm_image.json", [question(12, f"<image>\n{question_text}", vision=["i"])])
    write_json(data_root / "test/avqa-test_mm_answer.json", [asked(12, f"<video>\n{question_text}", "C")])
    assert load("avqa-audio", data_root).problems == load("avqa-image", data_root).problems == []


def test_an_answer_file_given_instead_is_not_checked_against_other_tasks(data_root):
    write_json(data_root / "test/MCUB-4.json", [question(1, MCUB4_PROMPT, **MCUB4_MEDIA)])
    write_json(data_root / "test/MCUB-3-image-audio-video.json", [question(1, "other words here", **MCUB3_MEDIA)])
    own = write_json(data_root / "mine.json", [answer(1, "A")])
    assert load_task(TASKS["mcub-4"], DataPaths(data_root=data_root, download=False), own).problems == []


# --- 4. more options than letters ----------------------------------------------------------------------------


def lettered(count, mark=lambda k: chr(ord("A") + k)):
    return "<point>\nWhich?\n" + "\n".join(f"{mark(k)}. option {k}" for k in range(count))


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (lettered(27), "27 options, more than the 26 letters A to Z: they cannot all be posed"),
        (lettered(28, lambda k: "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[k] if k < 26 else "A" + "AB"[k - 26]), "28 options, more"),
        (
            "<point>\nWhich?\nA. red\nB. blue\nD. grey",
            "1 option mark(s) after options A to B are out of letter order: the options cannot be posed as written",
        ),
    ],
)
def test_options_that_cannot_all_be_posed_make_an_error_sample(data_root, prompt, message):
    write_json(data_root / "test/MCUB-4.json", [question("o", prompt, point=["p.npy"])])
    write_json(data_root / "test/MCUB-answer.json", [answer("o", "A")])
    data = load("mcub-4", data_root)
    [sample] = data.samples
    assert sample.error.startswith(message) and sample.options == {}
    assert [str(p) for p in data.problems] == [f"{data.question_file} [sample o]: {sample.error}"]


def test_parse_options_stops_at_z():
    options = parse_options(lettered(27))
    assert len(options) == 26 and list(options)[-1] == "Z" and options["Z"] == "option 25"


# --- 5. questions without an answer --------------------------------------------------------------------------


def test_questions_without_an_answer_are_named_and_counted(data_root):
    data, _ = mcub4(
        data_root,
        [question(i, MCUB4_PROMPT, **MCUB4_MEDIA) for i in range(14)],
        [answer(0, "A"), answer(5, "B")],
    )
    missing = tuple(str(i) for i in range(14) if i not in (0, 5))
    assert data.unanswered == missing and [s.id for s in data.samples] == ["0", "5"]
    assert data.unanswered_note == (
        "task mcub-4: 12 question(s) without an answer in MCUB-answer.json are left out: "
        "ids 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, ... (2 more)"
    )
    assert [str(p) for p in data.problems] == [
        f"{data.question_file} [sample {i}]: no answer for this id in MCUB-answer.json" for i in missing
    ]


def test_eval_prints_the_note_of_questions_without_an_answer(tmp_path, capsys):
    data_root = tmp_path / "data"
    shutil.copytree(BUNDLED_DATA_ROOT, data_root)
    answers = data_root / "test" / "mcub-sample-answer.json"
    records = json.loads(answers.read_text())
    answers.write_text(json.dumps([r for r in records if str(r["id"]) != "mcub-sample-3"]))
    request = mcub.EvalRequest(model="random", tasks=["mcub-sample"], data_root=data_root, download=False,
                               output_dir=tmp_path / "runs", run_name="r", num_workers=0, progress=False)  # fmt: skip
    assert mcub.evaluate(request).tasks["mcub-sample"].metrics.n == 4
    assert (
        "task mcub-sample: 1 question(s) without an answer in mcub-sample-answer.json are left out: ids mcub-sample-3"
        in capsys.readouterr().err
    )


def test_no_note_when_every_question_has_an_answer(data_root):
    data, _ = mcub4(data_root, [question(1, MCUB4_PROMPT, **MCUB4_MEDIA)], [answer(1, "A")])
    assert (data.unanswered, data.unanswered_note) == ((), None)


# --- 6. a data-root file that is not a readable regular file -------------------------------------------------


def _not_a_file(path, kind):
    if kind == "broken symlink":
        path.symlink_to(path.parent / "gone.json")
        return f"{path}: a broken symbolic link (to {path.parent / 'gone.json'}: No such file or directory)"
    if kind == "fifo":
        os.mkfifo(path)
        return f"{path}: a FIFO (named pipe), not a regular file"
    path.mkdir()
    return f"{path}: a directory, not a regular file"


@pytest.mark.parametrize("kind", ["broken symlink", "fifo", "directory"])
@pytest.mark.parametrize("name", ["mcub-sample.json", "mcub-sample-answer.json"])
def test_a_bundled_task_never_falls_back_past_a_file_that_is_not_readable(tmp_path, name, kind):
    root = tmp_path / "data"
    shutil.copytree(BUNDLED_DATA_ROOT / "test", root / "test")
    (root / "test" / name).unlink()
    message = _not_a_file(root / "test" / name, kind)
    with pytest.raises(DataError) as error:
        load("mcub-sample", root)
    assert str(error.value) == f"{message}; nothing else is read in its place"


def test_a_hub_task_is_not_downloaded_past_a_fifo(data_root, monkeypatch):
    import huggingface_hub

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    message = _not_a_file(data_root / "test" / "MCUB-4.json", "fifo")
    with pytest.raises(DataError) as error:
        load_task(TASKS["mcub-4"], DataPaths(data_root=data_root))
    assert str(error.value) == f"{message}; nothing else is read in its place"


def test_an_unreadable_question_file_is_named(data_root, monkeypatch):
    path = write_json(data_root / "test/MCUB-4.json", [])
    readable = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: p != path and readable(p, mode))
    with pytest.raises(DataError) as error:
        load("mcub-4", data_root)
    assert str(error.value) == f"{path}: not readable (permission denied); nothing else is read in its place"


def test_an_answer_file_given_as_a_fifo_is_named(data_root):
    write_json(data_root / "test/MCUB-4.json", [question(1, MCUB4_PROMPT, **MCUB4_MEDIA)])
    message = _not_a_file(data_root / "answers.json", "fifo")
    with pytest.raises(DataError) as error:
        load_task(TASKS["mcub-4"], DataPaths(data_root=data_root, download=False), data_root / "answers.json")
    assert str(error.value) == f"{message}; nothing else is read in its place"
