"""Run conditions: the exact prompt and media the model receives under each condition (a recording adapter), what
each records (seed, donor, permutation), refusals, and resumes that keep conditions apart."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import answer, question, write_json
from recording_model import register_recording_model, run_recording

from mcub.conditions import CONDITIONS, ConditionError, parse_condition
from mcub.conditions.inputs import remove_placeholders
from mcub.errors import RunError
from mcub.media import synthetic
from mcub.request import EvalRequest, RequestError
from mcub.results import RunFileError
from mcub.tasks import BUNDLED_DATA_ROOT

SAMPLE_DATA = BUNDLED_DATA_ROOT
AVQA = "avqa-video+audio"


@pytest.fixture
def recording(monkeypatch, tmp_path):
    register_recording_model(monkeypatch, tmp_path)


def sample_prompt(index: int, options: list[str]) -> str:
    from sample_builder import ITEMS, QUESTION

    lettered = "\n".join(f"{'ABCD'[k]}. {text}" for k, text in enumerate(ITEMS[index][1]))
    return f"{options[0]}{QUESTION}\n{lettered}" if options else lettered


def write_avqa(data_root: Path, count: int = 3) -> Path:
    """A hand-made AVQA task (the video+audio file): `count` questions, each on its own video and audio."""
    media = data_root / "avqa-media"
    media.mkdir(parents=True, exist_ok=True)
    questions, answers = [], []
    for index in range(count):
        video = synthetic.write_video(media / f"v{index}.mp4", 10 + index, 32, 24, 10)
        audio = synthetic.write_audio(media / f"a{index}.wav", 0.5 + 0.1 * index, 16_000, 1, 300.0 * (index + 1))
        prompt = f"<video>\n<audio>\nWhat makes the sound {index}?\nA. a dog\nB. a car\nC. rain\nD. a bell"
        questions.append(question(100 + index, prompt, video=[str(video)], audio=[str(audio)]))
        answers.append(answer(100 + index, "ABCD"[index % 4]))
    write_json(data_root / "test" / "avqa-test_mm_video+audio.json", questions)
    write_json(data_root / "test" / "avqa-test_mm_answer.json", answers)
    return data_root


# --- the registry and parsing -------------------------------------------------------------------------------


def test_specs_are_parsed_into_canonical_conditions():
    assert parse_condition("drop:audio").spec == "drop:audio"
    assert parse_condition(" drop:image ").spec == "drop:image"
    assert parse_condition("circular").spec == "circular"
    assert {"drop", "circular"} <= set(CONDITIONS)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("zap:audio", "unknown condition 'zap:audio': the kind 'zap' is not one of "),
        ("drop:smell", "condition 'drop:smell': drop takes a modality (image, video, audio, point), not 'smell'"),
        ("drop", "condition 'drop': drop takes a modality (image, video, audio, point), not None"),
        ("circular:2", "condition 'circular:2': circular takes no argument"),
    ],
)
def test_unknown_kinds_and_bad_arguments_are_refused_naming_the_spec(spec, message):
    with pytest.raises(ConditionError) as raised:
        parse_condition(spec)
    assert str(raised.value).startswith(message)
    assert ", ".join(sorted(CONDITIONS)) in str(raised.value)


def test_a_request_keeps_canonical_specs_and_refuses_bad_ones():
    request = EvalRequest(model="random", conditions=["drop:audio", " drop:video"])
    assert request.conditions == ["drop:audio", "drop:video"]
    with pytest.raises(RequestError, match=r"conditions: unknown condition 'nope'"):
        EvalRequest.build({"model": "random", "conditions": ["nope"]}, "the command line")
    with pytest.raises(RequestError, match="condition drop:audio is given more than once"):
        EvalRequest.build({"model": "random", "conditions": ["drop:audio", "drop:audio"]}, "x.yaml")


def test_the_condition_flag_is_repeatable_and_kept_in_order():
    from mcub.eval import build_parser, request_values

    args = build_parser().parse_args(["--model", "random", "--condition", "swap:video", "--condition", "drop:audio"])
    values, _ = request_values(args)
    assert values["conditions"] == ["swap:video", "drop:audio"]


# --- drop ---------------------------------------------------------------------------------------------------


def test_removing_placeholders_keeps_every_other_character():
    assert remove_placeholders("<video>\n<audio>\nWhat?\nA. x", "audio") == "<video>\nWhat?\nA. x"
    assert remove_placeholders("image: <image>\naudio: <audio>\nQ", "audio") == "image: <image>\naudio:\nQ"
    assert remove_placeholders("Hear <audio> and <audio>, then say.", "audio") == "Hear and , then say."
    assert remove_placeholders("<image><audio> Q\n\nA. x", "audio") == "<image>Q\n\nA. x"
    assert remove_placeholders("Q?\n  <audio> <audio>  \nA. x", "audio") == "Q?\nA. x"
    assert remove_placeholders("<audio>", "audio") == ""


def test_drop_removes_the_placeholder_and_its_input_from_what_the_model_receives(recording, tmp_path):
    summary, received, run = run_recording(tmp_path, "drop", ["mcub-sample"], ["drop:audio"])
    assert len(received) == 5
    for index in range(5):
        item = received[f"mcub-sample-{index}"]
        lines = ["image: <image>\n", "audio:\n", "video: <video>\n", "point: <point>\n"]
        assert item.prompt == sample_prompt(index, ["".join(lines)])
        assert item.media == [(m, str(SAMPLE_DATA / "sample" / f"{m}-{index}.{ext}"))
                              for m, ext in (("image", "png"), ("video", "mp4"), ("point", "npy"))]  # fmt: skip
        assert [p["modality"] for p in run.records["mcub-sample"][f"mcub-sample-{index}"].media] == [
            "image", "video", "point"]  # fmt: skip
    record = run.records["mcub-sample"]["mcub-sample-2"]
    assert record.condition == "drop:audio" and record.error is None
    assert record.meta["condition"] == {
        "spec": "drop:audio",
        "seed": 0,
        "item": "mcub-sample-2",
        "drop:audio": {"removed": [str(SAMPLE_DATA / "sample" / "audio-2.wav")]},
    }
    assert summary.settings.conditions == ["drop:audio"]
    assert summary.tasks["mcub-sample"].metrics.n == 5 and "audio" not in summary.tasks["mcub-sample"].media


def test_drop_on_a_hand_made_avqa_task(recording, tmp_path, data_root):
    write_avqa(data_root)
    _, received, run = run_recording(tmp_path, "drop-avqa", [AVQA], ["drop:video"], data_root=data_root,
                                     download=False)  # fmt: skip
    assert received["101"].prompt == "<audio>\nWhat makes the sound 1?\nA. a dog\nB. a car\nC. rain\nD. a bell"
    assert received["101"].media == [("audio", str(data_root / "avqa-media" / "a1.wav"))]
    assert received["101"].tensors[0]["waveform"].shape == (int(0.6 * 16_000),)
    assert {record.condition for record in run.records[AVQA].values()} == {"drop:video"}


def test_a_task_without_the_modality_is_refused_before_any_weight_is_read(recording, tmp_path, data_root, monkeypatch):
    from mcub.models import base

    write_avqa(data_root)
    monkeypatch.setattr(base, "build_model", lambda *args: pytest.fail("the model was built"))
    refusal = f"cannot run {AVQA}: condition drop:image does not apply to task {AVQA}: task {AVQA} has no image input"
    with pytest.raises(RunError, match=re.escape(refusal)):
        run_recording(tmp_path, "refused", [AVQA], ["drop:image"], data_root=data_root, download=False)


# --- resuming ----------------------------------------------------------------------------------------------


def test_a_resume_under_other_conditions_is_refused_and_the_same_conditions_resume(recording, tmp_path, capsys):
    _, _, run = run_recording(tmp_path, "r", ["mcub-sample"], ["drop:audio"])
    path = run.run_dir / "records" / "mcub-sample.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    other = lines[1].replace('"condition": "drop:audio"', '"condition": "drop:video"')
    assert other != lines[1]
    path.write_text(lines[0] + other)  # a run stopped after two records, one of them made under other conditions
    with pytest.raises(RunFileError, match=r"cannot resume a run started with other settings \(conditions: "
                                           r"\['drop:audio'\] then, \['drop:video'\] now"):  # fmt: skip
        run_recording(tmp_path, "r", ["mcub-sample"], ["drop:video"], resume=True)
    with pytest.raises(RunFileError, match=r"conditions: \['drop:audio'\] then, \[\] now"):
        run_recording(tmp_path, "r", ["mcub-sample"], [], resume=True)
    capsys.readouterr()
    _, received, run = run_recording(tmp_path, "r", ["mcub-sample"], ["drop:audio"], resume=True)
    assert "1 record(s) made under other conditions than drop:audio are redone" in capsys.readouterr().err
    assert sorted(received) == [f"mcub-sample-{index}" for index in range(1, 5)]  # the missing and the other one
    assert {record.condition for record in run.records["mcub-sample"].values()} == {"drop:audio"}
    assert len(run.records["mcub-sample"]) == 5
