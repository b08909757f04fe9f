"""Open-answer point-cloud tasks: PointLLM's file format, judge-free metrics checked by hand, end to end."""

import json

import numpy as np
import pytest
from conftest import write_json, write_objaverse

from mcub.data import DataPaths, load_task
from mcub.eval import main as eval_main
from mcub.open_metrics import bleu1, embedder, open_scores, rouge_l
from mcub.tasks import load_registry

TASKS = load_registry().tasks


def test_bleu1_by_hand():
    # candidate "the cat sat on the mat" vs reference "the cat is on the mat": clipped unigram matches
    # the x2, cat, on, mat = 5 of 6 candidate words; equal lengths, no brevity penalty
    assert bleu1("The cat sat on the mat.", "the cat is on the mat") == pytest.approx(100 * 5 / 6)
    # a 2-word candidate against a 4-word reference: precision 1, brevity penalty exp(1 - 4/2)
    assert bleu1("red chair", "a red wooden chair") == pytest.approx(100 * np.exp(-1))
    assert bleu1("", "a chair") == 0.0


def test_rouge_l_by_hand():
    # LCS of "a red wooden chair" and "a small red chair" is "a red chair": P = R = 3/4
    assert rouge_l("a red wooden chair", "a small red chair") == pytest.approx(75.0)
    # LCS 2 ("red chair") of 2 and 5 words: P = 1, R = 0.4, F = 2 * 0.4 / 1.4
    assert rouge_l("red chair", "it is a red chair") == pytest.approx(100 * 0.8 / 1.4)
    assert rouge_l("table", "chair") == 0.0


def test_sentence_bert_similarity_and_classes():
    encoder = embedder()
    assert encoder.similarity("a wooden chair", "a wooden chair") == pytest.approx(100.0, abs=1e-3)
    assert encoder.similarity("a cat", "a kitten") > encoder.similarity("a cat", "quantum chromodynamics") + 30
    classes = {"0": "airplane", "8": "chair", "33": "table", "37": "vase"}
    scores = open_scores("This is a chair with four legs.", "8", classes, ["class_named", "class_nearest"], encoder)
    assert scores == {"class_named": 100.0, "class_nearest": 100.0}
    scores = open_scores("A flying machine with wings.", "8", classes, ["class_named", "class_nearest"], encoder)
    assert scores == {"class_named": 0.0, "class_nearest": 0.0}


def test_pointllm_format_is_read_with_the_tasks_prompt(data_root):
    write_objaverse(data_root, ["abc123", "def456"])
    data = load_task(TASKS["objaverse-cap"], DataPaths(data_root=data_root, download=False))
    assert data.problems == []
    first = data.samples[0]
    assert (first.id, first.prompt, first.answer) == (
        "abc123",
        "<point>\nCaption this 3D model in detail.",
        "A small model of object abc123.",
    )
    assert first.media == (("point", str(data_root / "objaverse_data" / "abc123_8192.npy")),)
    assert (
        load_task(TASKS["objaverse-cls"], DataPaths(data_root=data_root, download=False)).samples[1].prompt
        == "<point>\nWhat is this?"
    )


def test_pointllm_format_problems(data_root):
    path = data_root / "anno_data" / "PointLLM_brief_description_val_200_GT.json"
    turn = [{"from": "gpt", "value": "x"}]
    write_json(
        path,
        [{"conversations": turn}, {"object_id": "a", "conversations": turn}, {"object_id": "a", "conversations": turn}],
    )
    problems = [
        str(p) for p in load_task(TASKS["objaverse-cap"], DataPaths(data_root=data_root, download=False)).problems
    ]
    assert any("record #0 has no object_id" in p for p in problems)
    assert any("[sample a]: object_id appears 2 times" in p for p in problems)


def test_tiny_damc_on_objaverse_captioning_end_to_end(data_root, tmp_path):
    write_objaverse(data_root, ["abc123", "def456", "ghi789"])
    cache = tmp_path / "cache"
    args = ["--model", "tiny-damc", "--model-arg", f"cache_dir={cache}", "--tasks", "objaverse-cap", "--no-progress"]
    args += [
        "--data-root",
        str(data_root),
        "--no-download",
        "--output-dir",
        str(tmp_path / "runs"),
        "--num-workers",
        "0",
    ]
    assert eval_main([*args, "--max-new-tokens", "8", "--run-name", "cap"]) == 0
    run = tmp_path / "runs" / "tiny-damc" / "cap"
    records = [json.loads(line) for line in (run / "records" / "objaverse-cap.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["correct"] is None and r["extraction"] == "open" for r in records)
    assert all(set(r["scores"]) == {"sbert", "bleu1", "rouge_l"} for r in records)
    for record in records:
        assert record["scores"]["bleu1"] == pytest.approx(bleu1(record["output"].strip(), record["gold"]))
    metrics = json.loads((run / "summary.json").read_text())["tasks"]["objaverse-cap"]["metrics"]
    assert metrics["accuracy"] is None and metrics["n"] == 3
    for name in ("sbert", "bleu1", "rouge_l"):
        mean = sum(r["scores"][name] for r in records) / 3
        assert metrics["scores"][name]["mean"] == pytest.approx(mean, abs=1e-3)
