import json

import pytest
import torch
from tiny_models import force_greedy_chain, write_tiny_llama

from mcub.eval import main as eval_main
from mcub.hashing import file_sha256
from mcub.models.base import Runtime
from mcub.models.baseline_arguments import BlindArguments
from mcub.models.baselines import BlindModel
from mcub.schema import Sample


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return write_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def _blind(tiny_llama):
    return BlindModel(Runtime(), BlindArguments(pretrained=str(tiny_llama)))


def _samples():
    prompt = "image: <image>\naudio: <audio>\nWhich attribute is shared?\nA. a dog\nB. rain\nC. music\nD. a car"
    options = {"A": "a dog", "B": "rain", "C": "music", "D": "a car"}
    return [
        Sample("t", "1", prompt, (), options, "A", {"question_index": 0}),
        Sample("t", "2", "<video>\nShort?\nA. yes\nB. no", (), {"A": "yes", "B": "no"}, "B", {"question_index": 1}),
    ]


def test_blind_prompts_have_no_media(tiny_llama):
    model = _blind(tiny_llama)
    prompts = model.prepare(_samples(), [[], []]).prompts
    assert prompts[0].endswith("USER: Which attribute is shared?\nA. a dog\nB. rain\nC. music\nD. a car ASSISTANT:")
    assert all("<" not in prompt for prompt in prompts)


def test_a_prompt_longer_than_the_context_is_refused_by_sample_id(tiny_llama):
    from mcub.errors import UnsupportedInput

    model = _blind(tiny_llama)
    samples = _samples()
    lengths = [len(ids) for ids in model.tokenizer(model.prepare(samples, [[], []]).prompts).input_ids]
    model.model.config.max_position_embeddings = min(lengths)
    with pytest.raises(UnsupportedInput, match=rf"^sample 1: {max(lengths)} positions: longer than .* {min(lengths)} "):
        model.prepare(samples, [[], []])
    model.prepare(samples[1:], [[]])


def test_batched_generation_equals_one_by_one(tiny_llama):
    model = _blind(tiny_llama)
    samples = _samples()
    batched = model.generate(model.prepare(samples, [[], []]), max_new_tokens=6)
    single = [model.generate(model.prepare([s], [[]]), max_new_tokens=6)[0] for s in samples]
    assert batched == single and all(isinstance(text, str) for text in batched)


def test_loglik_is_the_sum_of_continuation_token_logprobs(tiny_llama):
    model = _blind(tiny_llama)
    batch = model.prepare(_samples()[:1], [[]])
    [scores] = model.loglik(batch, [["A", "B"]])
    tokenizer, network = model.tokenizer, model.model
    for letter, score in zip(["A", "B"], scores, strict=True):
        context = tokenizer(batch.prompts[0]).input_ids
        full = tokenizer(f"{batch.prompts[0]} {letter}").input_ids
        assert full[: len(context)] == context
        with torch.no_grad():
            logprobs = torch.log_softmax(network(torch.tensor([full])).logits[0].float(), dim=-1)
        expected = sum(logprobs[i - 1, full[i]].item() for i in range(len(context), len(full)))
        assert score == pytest.approx(expected, abs=1e-4)


def test_blind_model_runs_the_sample_task_end_to_end(tiny_llama, tmp_path, capsys):
    args = ["--model", "blind-vicuna", "--model-arg", f"pretrained={tiny_llama}", "--tasks", "mcub-sample"]
    common = ["--output-dir", str(tmp_path), "--no-progress", "--num-workers", "0", "--max-new-tokens", "4"]
    assert eval_main([*args, *common, "--run-name", "b", "--batch-size", "2"]) == 0
    lines = (tmp_path / "blind-vicuna" / "b" / "records" / "mcub-sample.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 5 and all(r["error"] is None and isinstance(r["output"], str) for r in records)
    summary = json.loads((tmp_path / "blind-vicuna" / "b" / "summary.json").read_text())
    model = summary["model"]
    assert model["adapter"] == "blind" and model["details"]["pretrained"] == str(tiny_llama)
    assert model["weights"]["pretrained/config.json"] == file_sha256(tiny_llama / "config.json")
    assert model["weights"]["pretrained/tokenizer.json"] == file_sha256(tiny_llama / "tokenizer.json")
    assert model["dtype"] == "float32" and summary["tasks"]["mcub-sample"]["metrics"]["n"] == 5


def test_a_first_character_stop_waits_for_a_whole_multibyte_character(tmp_path):
    model = _blind(write_tiny_llama(tmp_path / "llama"))
    batch = model.prepare(_samples()[1:], [[]])
    answer = model.tokenizer.encode(" 中 A", add_special_tokens=False)  # "Ġ", then the three bytes of 中, then "ĠA"
    assert model.tokenizer.decode(answer[:2]) == " \ufffd"
    last_prompt_token = model.tokenizer(batch.prompts[0]).input_ids[-1]
    force_greedy_chain(model.model, [last_prompt_token, *answer, model.tokenizer.eos_token_id])
    assert model.generate(batch, max_new_tokens=8) == [" 中 A"]
    assert model.generate(batch, max_new_tokens=8, stop="first-character") == [" 中"]
