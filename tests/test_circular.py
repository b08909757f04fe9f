"""CircularEval: the rotated prompts, options and gold letters a model receives (a recording adapter), the circular
and original-order accuracies of an always-"A" and an oracle adapter, the `paper` first-character scoring under the
rotated gold, refusals, resuming and rescoring a circular run, and the metrics of incomplete items."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from conftest import AVQA_VIDEO_AUDIO, write_avqa
from recording_model import register_recording_model, run_recording
from run_factory import record
from sample_builder import ITEMS, QUESTION

from mcub.conditions import ConditionError, apply_conditions, parse_condition
from mcub.conditions.circular import circular_samples, split_rotation_id
from mcub.data import load_task
from mcub.evaluation import score_run
from mcub.leaderboard import validate_run
from mcub.report import report_frame
from mcub.results import RunFileError, summary_table
from mcub.schema import DataPaths, Sample
from mcub.scoring import task_metrics
from mcub.tasks import BUNDLED_DATA_ROOT, load_registry

PLACEHOLDER_LINES = "image: <image>\naudio: <audio>\nvideo: <video>\npoint: <point>\n"
AVQA = AVQA_VIDEO_AUDIO
AVQA_OPTIONS = ["a dog", "a car", "rain", "a bell"]


@pytest.fixture
def recording(monkeypatch, tmp_path):
    register_recording_model(monkeypatch, tmp_path)


def sample_prompt(options: list[str]) -> str:
    lettered = "\n".join(f"{'ABCD'[k]}. {text}" for k, text in enumerate(options))
    return f"{PLACEHOLDER_LINES}{QUESTION}\n{lettered}"


def rotated(options: list[str], rotation: int) -> list[str]:
    return options[rotation:] + options[:rotation]


def write_inline_avqa(data_root: Path, count: int = 2) -> Path:
    """A hand-made AVQA task (video+audio) whose options are inline after the question: `(A) a dog (B) a car ...`."""
    inline = " ".join(f"({'ABCD'[k]}) {text}" for k, text in enumerate(AVQA_OPTIONS))
    return write_avqa(data_root, [f"<video>\n<audio>\nWhat makes the sound? {inline}"] * count, "BD"[:count])


def sample_task_samples() -> list[Sample]:
    registry = load_registry()
    return load_task(registry.tasks["mcub-sample"]).samples


# --- rotations ----------------------------------------------------------------------------------------------


def test_every_rotation_moves_the_options_in_the_prompt_and_the_gold_with_its_text():
    registry = load_registry()
    samples = sample_task_samples()
    rotations = apply_conditions([parse_condition("circular")], registry.tasks["mcub-sample"], samples, seed=3)
    assert [sample.id for sample in rotations] == [f"{sample_id}@r{r}" for sample_id, _, _ in ITEMS for r in range(4)]
    for index, ((item, options, gold), original) in enumerate(zip(ITEMS, samples, strict=True)):
        for r in range(4):
            sample = rotations[4 * index + r]
            texts = rotated(options, r)
            assert sample.prompt == sample_prompt(texts)
            assert sample.options == dict(zip("ABCD", texts, strict=True))
            assert sample.options[sample.answer] == options["ABCD".index(gold)]  # the gold letter moved with its text
            assert sample.media == original.media and sample.task == original.task
            assert sample.meta["condition"] == {"spec": "circular", "seed": 3, "item": item,
                                                "circular": {"rotation": r, "of": 4}}  # fmt: skip
            assert sample.meta["question_index"] == original.meta["question_index"]
        assert rotations[4 * index].prompt == original.prompt  # rotation 0 is the item as posed
    assert split_rotation_id("mcub-sample-3@r2") == ("mcub-sample-3", 2)


def test_inline_and_parenthesised_options_are_rewritten_where_they_stand():
    prompt = "<audio>\nWhich? (A) a dog (B) a car (C) rain, said the man"
    sample = Sample("t", "7", prompt, (("audio", "a.wav"),), {"A": "a dog", "B": "a car", "C": "rain, said the man"},
                    "B", {"question_index": 0})  # fmt: skip
    rotations = circular_samples([sample])
    assert [(s.id, s.answer, s.prompt) for s in rotations] == [
        ("7@r0", "B", prompt),
        ("7@r1", "A", "<audio>\nWhich? (A) a car (B) rain, said the man (C) a dog"),
        ("7@r2", "C", "<audio>\nWhich? (A) rain, said the man (B) a dog (C) a car"),
    ]
    lines = Sample("t", "8", "Q?\n  A) x \nB) y\n", (), {"A": "x", "B": "y"}, "A", {"question_index": 1})
    assert [s.prompt for s in circular_samples([lines])] == ["Q?\n  A) x \nB) y\n", "Q?\n  A) y \nB) x\n"]


def test_an_item_whose_options_are_not_in_its_prompt_is_an_error_naming_task_and_id():
    moved = Sample("t", "9", "Q?\nA. x\nB. y", (), {"A": "x", "B": "z"}, "A", {"question_index": 0})
    message = "task t, sample 9: its options A. x, B. z are not those its prompt poses (A. x, B. y), so they cannot"
    with pytest.raises(ConditionError, match=re.escape(message)):
        circular_samples([moved])
    marks = Sample("t", "10", "Q? (A) x (B) see (C) y", (), {"A": "x", "B": "see (C) y"}, "A", {"question_index": 0})
    with pytest.raises(ConditionError, match="task t, sample 10: its options"):
        circular_samples([marks])


def test_an_unposed_sample_stays_one_error_sample_and_its_item_is_wrong():
    broken = Sample("t", "5", "Q?", (), {}, "B", {"question_index": 0}, error="1 <audio> placeholder(s) but 0 files")
    (only,) = circular_samples([broken])
    assert (only.id, only.error, only.meta["condition"]["circular"]) == ("5@r0", broken.error, {"rotation": 0, "of": 1})


def test_tasks_without_lettered_options_in_the_prompt_are_refused_with_the_reason():
    registry = load_registry()
    circular = parse_condition("circular")
    assert circular.refusal(registry.tasks["music-avqa-audio"], []) == (
        "CircularEval rotates lettered options in the prompt, and task music-avqa-audio has open answers"
    )
    assert circular.refusal(registry.tasks["modelnet40"], []) == (
        "CircularEval rotates lettered options in the prompt, and task modelnet40 has class options that its prompt "
        "does not list"
    )
    with pytest.raises(ConditionError, match="condition circular does not apply to task music-avqa-audio: "):
        apply_conditions([circular], registry.tasks["music-avqa-audio"], [], seed=0)


def test_circular_comes_last_so_that_every_rotation_of_an_item_poses_the_same_inputs():
    from mcub.conditions import canonical_specs
    from mcub.request import EvalRequest, RequestError

    assert canonical_specs(["drop:audio", "swap:video", "circular"]) == ["drop:audio", "swap:video", "circular"]
    with pytest.raises(ConditionError, match=r"condition circular comes last \(here swap:video\+drop:audio follows"):
        canonical_specs(["circular", "swap:video", "drop:audio"])
    with pytest.raises(RequestError, match="condition circular comes last"):
        EvalRequest.build({"model": "random", "conditions": ["circular", "noise:audio=10"]}, "--condition")


# --- runs ---------------------------------------------------------------------------------------------------


def test_an_always_a_model_has_circular_accuracy_0_and_the_paper_score_follows_the_rotated_gold(recording, tmp_path):
    summary, received, run = run_recording(tmp_path, "always-a", ["mcub-sample"], ["circular"])
    records = run.records["mcub-sample"]
    assert len(records) == len(received) == 20
    for item, options, gold in ITEMS:
        for r in range(4):
            sample_id = f"{item}@r{r}"
            got = records[sample_id]
            assert received[sample_id].prompt == sample_prompt(rotated(options, r))
            assert got.options == dict(zip("ABCD", rotated(options, r), strict=True))
            assert got.gold == "ABCD"[("ABCD".index(gold) - r) % 4]
            assert (got.output, got.extracted, got.extraction) == ("A", "A", "first-character")
            assert got.correct is (r == "ABCD".index(gold))  # "A" is right only where the gold text sits at A
            assert got.condition == "circular" and got.meta["condition"]["circular"] == {"rotation": r, "of": 4}
    metrics = summary.tasks["mcub-sample"].metrics
    assert (metrics.n, metrics.correct, metrics.accuracy) == (20, 5, 25.0)  # every rotated sample
    assert metrics.circular.model_dump() == {"n": 5, "correct": 0, "accuracy": 0.0, "ci_low": 0.0, "ci_high": 0.0,
                                             "rotations": 20, "incomplete": 0}  # fmt: skip
    assert (metrics.original_order.n, metrics.original_order.correct) == (5, 2)  # items 0 and 4 have gold A
    # every item sits once at every gold letter: right 5 of 5 at A, 0 of 15 elsewhere; chi-square 20 on 3 df
    bias = metrics.position_bias
    assert bias.gold == {letter: 5 for letter in "ABCD"} and bias.answered["A"] == 20
    assert (bias.statistic, bias.df) == (20.0, 3)
    assert bias.p_value == pytest.approx(math.erfc(math.sqrt(10)) + math.sqrt(40 / math.pi) * math.exp(-10), rel=1e-5)
    assert bias.p_value < 0.001
    table = summary_table(summary)
    assert "| mcub-sample | 5 | 20 | 0.00 | [0.00, 0.00] | 40.00 | " in table
    frame = report_frame([run.run_dir], numeric=True)
    assert frame.loc[frame.index[0], "mcub-sample circular acc"] == 0.0


def test_an_oracle_has_circular_accuracy_100(recording, tmp_path):
    summary, _, run = run_recording(tmp_path, "oracle", ["mcub-sample"], ["circular"], model_args={"answer": "gold"})
    metrics = summary.tasks["mcub-sample"].metrics
    assert (metrics.circular.n, metrics.circular.correct, metrics.circular.accuracy) == (5, 5, 100.0)
    assert (metrics.original_order.accuracy, metrics.accuracy) == (100.0, 100.0)
    assert metrics.position_bias.p_value is None  # every record right: no table to test
    assert all(r.output == r.gold and r.correct for r in run.records["mcub-sample"].values())


def test_a_hand_made_avqa_task_with_inline_options_is_rotated_in_place(recording, tmp_path, data_root):
    write_inline_avqa(data_root)
    summary, received, run = run_recording(tmp_path, "avqa", [AVQA], ["circular"], data_root=data_root,
                                           download=False, model_args={"answer": "gold"})  # fmt: skip
    assert sorted(received) == [f"{item}@r{r}" for item in ("100", "101") for r in range(4)]
    inline = " ".join(f"({'ABCD'[k]}) {text}" for k, text in enumerate(rotated(AVQA_OPTIONS, 1)))
    assert received["101@r1"].prompt == f"<video>\n<audio>\nWhat makes the sound? {inline}"
    assert received["101@r1"].media == [("video", str(data_root / "avqa-media" / "v1.mp4")),
                                        ("audio", str(data_root / "avqa-media" / "a1.wav"))]  # fmt: skip
    assert [run.records[AVQA][f"101@r{r}"].gold for r in range(4)] == ["D", "C", "B", "A"]
    assert summary.tasks[AVQA].metrics.circular.accuracy == 100.0


def test_circular_composes_with_drop_in_the_order_given(recording, tmp_path):
    summary, received, run = run_recording(tmp_path, "both", ["mcub-sample"], ["drop:audio", "circular"])
    options = ITEMS[2][1]
    expected = sample_prompt(rotated(options, 3)).replace("audio: <audio>\n", "audio:\n")
    assert received["mcub-sample-2@r3"].prompt == expected
    assert [m for m, _ in received["mcub-sample-2@r3"].media] == ["image", "video", "point"]
    got = run.records["mcub-sample"]["mcub-sample-2@r3"]
    assert got.condition == "drop:audio+circular" and got.gold == "D"
    assert set(got.meta["condition"]) == {"spec", "seed", "item", "drop:audio", "circular"}
    assert summary.tasks["mcub-sample"].metrics.circular.n == 5


def test_a_circular_run_resumes_rescores_and_validates_with_the_same_figures(recording, tmp_path):
    summary, _, run = run_recording(tmp_path, "r", ["mcub-sample"], ["circular"])
    path = run.run_dir / "records" / "mcub-sample.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:6]))  # a run stopped after six of its twenty rotated samples
    resumed, received, run = run_recording(tmp_path, "r", ["mcub-sample"], ["circular"], resume=True)
    assert len(received) == 14 and len(run.records["mcub-sample"]) == 20
    assert resumed.tasks["mcub-sample"].metrics == summary.tasks["mcub-sample"].metrics
    with pytest.raises(RunFileError, match=re.escape("conditions: ['circular'] then, [] now")):
        run_recording(tmp_path, "r", ["mcub-sample"], [], resume=True)
    paths = DataPaths(data_root=BUNDLED_DATA_ROOT)
    rescored, _ = score_run(run.run_dir, paths)
    assert rescored.tasks["mcub-sample"].metrics == summary.tasks["mcub-sample"].metrics
    # the leaderboard refuses conditioned runs, and finds nothing else: the records and metrics check out
    assert validate_run(run.run_dir, paths) == [
        "the run was made under the condition(s) circular; the leaderboard takes runs of the tasks as they are"
    ]


# --- metrics ------------------------------------------------------------------------------------------------


def rotation_record(item: str, rotation: int, correct: bool, of: int = 3, error: str | None = None):
    meta = {"condition": {"spec": "circular", "seed": 0, "item": item, "circular": {"rotation": rotation, "of": of}}}
    return record("t", rotation, correct).model_copy(
        update={"id": f"{item}@r{rotation}", "condition": "circular", "error": error, "meta": meta}
    )


def test_a_missing_or_error_rotation_makes_its_item_wrong_and_is_counted():
    records = [
        *(rotation_record("x", r, True) for r in range(3)),  # right under every rotation
        rotation_record("y", 0, True), rotation_record("y", 1, True),  # rotation 2 has no record
        rotation_record("z", 0, True), rotation_record("z", 1, True, error="media error: z.wav: no such file"),
        rotation_record("z", 2, True),
        rotation_record("w", 0, False), rotation_record("w", 1, True), rotation_record("w", 2, True),
    ]  # fmt: skip
    gold_ids = [f"{item}@r{r}" for item in "xyzw" for r in range(3)]
    metrics = task_metrics(gold_ids, {r.id: r for r in records}, [], seed=0)
    assert (metrics.circular.n, metrics.circular.correct, metrics.circular.incomplete) == (4, 1, 2)
    assert metrics.circular.rotations == 12
    assert (metrics.original_order.n, metrics.original_order.correct) == (4, 3)
    # an item cut by --limit (its records name 3 rotations, 2 are among the gold ids) is incomplete, never right
    cut = task_metrics(["x@r0", "x@r1"], {r.id: r for r in records[:2]}, [], seed=0)
    assert (cut.circular.correct, cut.circular.incomplete, cut.circular.rotations) == (0, 1, 3)


def test_records_without_the_circular_condition_have_no_circular_metrics():
    metrics = task_metrics(["0", "1"], {"0": record("t", 0, True), "1": record("t", 1, False)}, [], seed=0)
    assert metrics.circular is None and metrics.original_order is None
    with pytest.raises(ConditionError, match="sample id 'plain' is not a CircularEval id"):
        task_metrics(["plain"], {"plain": rotation_record("x", 0, True).model_copy(update={"id": "plain"})}, [], 0)
