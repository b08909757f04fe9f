"""Shared-prefix reuse: rows sharing a prefix (text, media blocks and routes alike) prefill it once and branch its
KV cache; logits, option log-likelihoods and greedy tokens equal those of the unshared path (fp32, CPU)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import answer, question, write_json
from test_routed_lora import HIDDEN, ROUTES, random_adapters, tiny_llama

from mcub.eval import main as eval_main
from mcub.media import load_media
from mcub.models.base import Runtime
from mcub.models.modelcompose.arguments import ModelComposeArguments
from mcub.models.modelcompose.llm import ComposedLM, Span
from mcub.models.modelcompose.lora import LANGUAGE, Route, RoutingState, install_routed_lora
from mcub.models.modelcompose.model import ModelComposeModel
from mcub.models.modelcompose.prefix import (
    MIN_SHARED_POSITIONS,
    PrefixGroup,
    common_positions,
    pack_shared,
    shared_prefixes,
    split_spans,
)
from mcub.models.modelcompose.tiny import tiny_damc_layout, write_tiny_expert
from mcub.models.modelcompose.tokenization import load_chunk_tokenizer
from mcub.prompts import vicuna_v1
from mcub.schema import Sample, SharedPrefix
from mcub.tasks import BUNDLED_DATA_ROOT

SAMPLE_MEDIA = BUNDLED_DATA_ROOT / "sample"

NAIVEMC_ROUTES = {LANGUAGE: ROUTES[LANGUAGE], "image": Route(ROUTES[LANGUAGE].adapters), "audio": ROUTES["audio"]}


def composed(routes):
    llama = tiny_llama()
    state = RoutingState()
    install_routed_lora(llama.model.layers, random_adapters(llama), routes, state)
    return ComposedLM(llama, state)


def blocks(seed):
    generator = torch.Generator().manual_seed(seed)
    image = Span("image", embeddings=torch.randn(9, HIDDEN, generator=generator), source=("image-0.png", "clip"))
    audio = Span("audio", embeddings=torch.randn(4, HIDDEN, generator=generator), source=("audio-0.wav", "beats"))
    return image, audio


def batch_rows():
    """Three questions on the same image and audio (one a copy of the image block: same source, another tensor),
    two on the image alone, and one sharing nothing."""
    image, audio = blocks(seed=3)
    copied = Span("image", embeddings=image.embeddings.clone(), source=image.source)
    system = Span(LANGUAGE, token_ids=(1, 5, 9, 3, 11))
    return [
        [system, image, Span(LANGUAGE, (29, 13)), audio, Span(LANGUAGE, (4, 8, 2, 17, 60))],
        [system, copied, Span(LANGUAGE, (29, 13)), audio, Span(LANGUAGE, (4, 8, 31))],
        [system, image, Span(LANGUAGE, (29, 13)), audio, Span(LANGUAGE, (40, 41, 42, 43, 44, 45, 46))],
        [Span(LANGUAGE, (1, 5, 9)), image, Span(LANGUAGE, (7,))],
        [Span(LANGUAGE, (1, 5, 9)), image, Span(LANGUAGE, (8, 8))],
        [Span(LANGUAGE, (2, 3, 4, 6, 7))],
    ]


def test_grouping_by_shared_positions():
    rows = batch_rows()
    assert common_positions(rows[0], rows[1]) == 5 + 9 + 2 + 4 + 2
    assert common_positions(rows[0], rows[2]) == 5 + 9 + 2 + 4
    assert common_positions(rows[0], rows[3]) == 3
    other_image = Span("image", embeddings=rows[0][1].embeddings, source=None)
    assert common_positions(rows[0], [rows[0][0], other_image]) == 5 + 9  # the same tensor
    assert common_positions(rows[0], [rows[0][0], Span("audio", embeddings=rows[0][1].embeddings)]) == 5  # route
    unknown = Span("image", embeddings=rows[0][1].embeddings.clone())
    assert common_positions(rows[0], [rows[0][0], unknown]) == 5  # no source: only itself
    assert common_positions(rows[3], rows[4]) == 3 + 9
    # rows 3 and 4 share 3 positions with the first group: joining it would leave the group less to share
    assert shared_prefixes(rows, min_positions=3) == [PrefixGroup((0, 1, 2), 20), PrefixGroup((3, 4), 12)]
    assert shared_prefixes(rows, min_positions=13) == [PrefixGroup((0, 1, 2), 20)]
    assert shared_prefixes(rows, min_positions=21) == [PrefixGroup((0, 1), 22)]
    assert shared_prefixes(rows, min_positions=23) == []
    assert shared_prefixes([rows[0], rows[3]], min_positions=3) == [PrefixGroup((0, 1), 3)]
    # a prefix leaves each row a position of its own
    assert shared_prefixes([rows[0], rows[0]], min_positions=8) == [PrefixGroup((0, 1), 24)]


def test_spans_split_at_any_position():
    row = batch_rows()[0]
    head, tail = split_spans(row, 7)
    assert [len(s) for s in head] == [5, 2] and [len(s) for s in tail] == [7, 2, 4, 5]
    assert torch.equal(torch.cat([head[1].embeddings, tail[0].embeddings]), row[1].embeddings)
    assert head[1].source != tail[0].source and head[1].source is not None
    assert split_spans(row, 0) == ([], list(row))


@pytest.mark.parametrize("routes", [ROUTES, NAIVEMC_ROUTES], ids=["damc", "naivemc"])
@pytest.mark.parametrize("min_positions", [13, 3], ids=["one-group", "two-groups"])
def test_shared_prefill_equals_the_unshared_one(routes, min_positions):
    model = composed(routes)
    rows = batch_rows()
    groups = shared_prefixes(rows, min_positions)
    shared = pack_shared(model, rows, groups)
    dense = model.pack(rows)
    width = shared.suffixes.embeddings.shape[1]
    # a row in no group prefills all but the longest suffix of a group's row (7) with the prefixes (row 5 is shorter:
    # it runs whole), so the cache is as wide as the longest input
    assert width == 7
    assert shared.offsets.tolist() == ([20, 20, 20, 6, 7, 0] if min_positions == 13 else [20, 20, 20, 12, 12, 0])
    assert shared.shared.tolist() == [1, 1, 1, 1, 1, 0]
    assert shared.prefixes.embeddings.shape[1] + width == dense.embeddings.shape[1]
    reused, unshared = model.prefill_logits(shared), model.prefill_logits(dense)
    for row, spans in enumerate(rows):
        own = sum(map(len, spans)) - int(shared.offsets[row])
        assert torch.allclose(reused[row, width - own :], unshared[row, -own:], atol=1e-5, rtol=0)
    alone = [model.prefill_logits(model.pack([spans]))[0, -1] for spans in rows]
    assert torch.allclose(reused[:, -1], torch.stack(alone), atol=1e-5, rtol=0)


@pytest.mark.parametrize("routes", [ROUTES, NAIVEMC_ROUTES], ids=["damc", "naivemc"])
def test_shared_greedy_tokens_and_option_logprobs_equal_the_unshared_ones(routes):
    model = composed(routes)
    rows = batch_rows()
    shared = pack_shared(model, rows, shared_prefixes(rows, min_positions=3))
    generated = model.generate(shared, 6, eos_id=-1)
    assert generated == model.generate(model.pack(rows), 6, eos_id=-1)
    assert len({token for tokens in generated for token in tokens}) > 3
    for spans, tokens in zip(rows, generated, strict=True):  # greedy on the branched cache = re-running it all
        extended = list(spans)
        for expected in tokens:
            assert int(model.prefill_logits(model.pack([extended]))[0, -1].argmax()) == expected
            extended.append(Span(LANGUAGE, token_ids=(expected,)))
    options = [[(5,), (9, 3), (7, 7, 2)], [(1,)], [(2, 4), (6,)], [(8, 1, 1, 1)], [(3,), (4,)], [(5,), (6, 1)]]
    reused = model.continuation_logprobs(pack_shared(model, rows, shared_prefixes(rows, 3)), options)
    unshared = model.continuation_logprobs(model.pack(rows), options)
    for mine, theirs in zip(reused, unshared, strict=True):
        assert mine == pytest.approx(theirs, abs=1e-5, rel=0)
    # the reference: each option's tokens appended to the prompt, in one forward pass of its own
    for row, spans in enumerate(rows):
        for option, tokens in enumerate(options[row]):
            logits = model.prefill_logits(model.pack([[*spans, Span(LANGUAGE, tokens)]]))[0]
            logprobs = torch.log_softmax(logits[-len(tokens) - 1 : -1], dim=-1)
            expected = sum(float(logprobs[step, token]) for step, token in enumerate(tokens))
            assert reused[row][option] == pytest.approx(expected, abs=1e-5, rel=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny DAMC's files, and NaiveMC image and audio experts beside them."""
    layout = tiny_damc_layout(tmp_path_factory.mktemp("cache") / "tiny-damc")
    naivemc = tmp_path_factory.mktemp("naivemc")
    for seed, modality in enumerate(("image", "audio")):
        write_tiny_expert(naivemc / modality, modality, "naivemc", seed=seed)
    return layout | {"naivemc": {modality: str(naivemc / modality) for modality in ("image", "audio")}}


def tiny_model(tiny, composition, **more):
    """The tiny image and audio experts composed by `composition`, with `more` ModelComposeArguments."""
    experts = {"image": tiny["experts"]["image"], "audio": tiny["experts"]["audio"]}
    if composition == "naivemc":
        experts = {modality: tiny["naivemc"][modality] for modality in experts}
    arguments = ModelComposeArguments(
        base=tiny["base"], encoders=tiny["encoders"], experts=experts, composition=composition, **more
    )
    return ModelComposeModel(Runtime(), arguments)


QUESTIONS = (
    "Which attribute do all of these inputs have in common?",
    "Which attribute do all of these inputs share?",
    "What makes the sound?",
    "How many instruments are playing?",
)


def questions_on_shared_media(model):
    """Four questions on one image and one audio clip, and one on other media."""
    samples, media = [], []
    for index, (text, image) in enumerate([(q, 0) for q in QUESTIONS] + [(QUESTIONS[0], 1)]):
        files = (
            ("image", str(SAMPLE_MEDIA / f"image-{image}.png")),
            ("audio", str(SAMPLE_MEDIA / f"audio-{image}.wav")),
        )
        prompt = f"image: <image>\naudio: <audio>\n{text}\nA. A dog\nB. Rain"
        samples.append(
            Sample("t", str(index), prompt, files, {"A": "A dog", "B": "Rain"}, "A", {"question_index": index})
        )
        media.append([load_media(m, path, model.media_preprocessing[m]) for m, path in files])
    return samples, media


def expected_shared_positions(tokenizer, prompts, block_positions):
    """The positions rendered prompts have in common, counted from their token ids and the positions of their media
    blocks (one list per prompt, in placeholder order)."""
    rows = []
    for prompt, positions in zip(prompts, block_positions, strict=True):
        blocks = iter(positions)
        rows.append([t if isinstance(t, int) else (t, next(blocks)) for t in tokenizer.encode_prompt(prompt)])
    shared = 0
    for column in zip(*rows, strict=False):
        if len(set(column)) > 1:
            break
        shared += column[0][1] if isinstance(column[0], tuple) else 1
    return shared


@pytest.mark.parametrize("composition", ["damc", "naivemc"])
def test_the_model_shares_prefixes_and_answers_as_without(tiny, composition):
    model = tiny_model(tiny, composition)
    samples, media = questions_on_shared_media(model)
    prepared = model.prepare(samples, media)
    blocks = [[receipt.positions for receipt in receipts] for receipts in prepared.receipts[:4]]
    positions = expected_shared_positions(model.tokenizer, prepared.prompts[:4], blocks)
    assert positions > MIN_SHARED_POSITIONS
    assert prepared.prefixes[:4] == [SharedPrefix(positions=positions, samples=["0", "1", "2", "3"])] * 4
    assert prepared.prefixes[4] is None
    options = [["A", "B", "A dog", "Rain"]] * len(samples)
    reused = model.loglik(prepared, options)
    generated = model.generate(prepared, max_new_tokens=6)
    model.share_prefixes = False
    unshared = model.prepare(samples, media)
    assert unshared.prefixes == [None] * len(samples)
    for mine, theirs in zip(reused, model.loglik(unshared, options), strict=True):
        assert mine == pytest.approx(theirs, abs=1e-5, rel=0)
    assert generated == model.generate(unshared, max_new_tokens=6)


def test_records_say_which_samples_shared_a_prefix_of_how_many_positions(tiny, data_root, tmp_path):
    """MUSIC-AVQA's shape: four questions per clip; the records of a clip's questions name each other (the tiny
    tokenizer's system text alone is longer than MIN_SHARED_POSITIONS: all eight share it, but sharing the clip too
    saves more)."""
    for clip in range(2):
        shutil.copy(SAMPLE_MEDIA / f"audio-{clip}.wav", data_root / f"clip-{clip}.wav")
    questions = [
        question(10 * clip + index, f"<audio>\n{text}", audio=[f"clip-{clip}.wav"])
        for clip in range(2)
        for index, text in enumerate(QUESTIONS)
    ]
    write_json(data_root / "test/music-avqa-test_mm_audio.json", questions)
    write_json(data_root / "test/music-avqa-test_mm_answer.json", [answer(q["id"], "two") for q in questions])
    common = ["--model", "tiny-damc", "--model-arg", f"cache_dir={Path(tiny['base']).parent}", "--no-progress"]
    common += ["--tasks", "music-avqa-audio", "--data-root", str(data_root), "--output-dir", str(tmp_path)]
    common += ["--num-workers", "0", "--max-new-tokens", "4", "--batch-size", "8"]
    assert eval_main([*common, "--run-name", "shared"]) == 0
    assert eval_main([*common, "--run-name", "whole", "--model-arg", "share_prefixes=false"]) == 0

    def records(name):
        lines = (tmp_path / "tiny-damc" / name / "records" / "music-avqa-audio.jsonl").read_text().splitlines()
        return {record["id"]: record for record in map(json.loads, lines)}

    shared, whole = records("shared"), records("whole")
    assert all(record["error"] is None for record in [*shared.values(), *whole.values()])
    assert [record["output"] for record in shared.values()] == [record["output"] for record in whole.values()]
    assert all(record["prefix"] is None for record in whole.values())
    for clip in range(2):
        ids = sorted(str(10 * clip + index) for index in range(4))
        prefixes = [shared[i]["prefix"] for i in ids]
        assert sorted(prefixes[0]["samples"]) == ids and all(prefix == prefixes[0] for prefix in prefixes)
        prompts = [vicuna_v1(f"<audio>\n{text}") for text in QUESTIONS]
        blocks = [[receipt["positions"] for receipt in shared[i]["receipts"]] for i in ids]
        positions = expected_shared_positions(load_chunk_tokenizer(tiny["base"]), prompts, blocks)
        assert prefixes[0]["positions"] == positions > MIN_SHARED_POSITIONS


def test_the_questions_on_one_video_share_a_batch_where_batches_stay_full():
    from mcub.runner.batching import length_sorted_batches

    def questions(counts):
        return [
            Sample("t", f"{video}-{q}", f"Question {q}?", (("video", f"v{video}.mp4"),), {}, "a", {})
            for video, count in enumerate(counts)
            for q in range(count)
        ]

    def videos(samples, batches):
        return [[int(samples[i].id.split("-")[0]) for i in batch] for batch in batches]

    # cut as they come, video 2's questions would be split over the first two batches; video 4's one question
    # fills the first batch instead
    samples = questions([3, 4, 2, 5, 1])
    assert videos(samples, length_sorted_batches(samples, 8)) == [[0] * 3 + [1] * 4 + [4], [2] * 2 + [3] * 5]
    # with no media set small enough to fill the room, questions are split as they come: batches stay full
    samples = questions([5, 5, 5])
    assert videos(samples, length_sorted_batches(samples, 8)) == [[0] * 5 + [1] * 3, [1] * 2 + [2] * 5]
