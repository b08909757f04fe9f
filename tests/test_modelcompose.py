"""The ModelCompose adapter on tiny checkpoints in the released layout: composition routes, merged checkpoints,
strict loading, and the tiny-damc model end to end."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from tiny_models import force_greedy_chain

from mcub.errors import CheckpointError
from mcub.eval import main as eval_main
from mcub.media import load_media
from mcub.models.base import ModelError, Runtime, parse_model_args
from mcub.models.modelcompose.arguments import ModelComposeArguments
from mcub.models.modelcompose.checkpoint import read_checkpoint
from mcub.models.modelcompose.model import ModelComposeModel
from mcub.models.modelcompose.tiny import tiny_damc_layout, write_tiny_expert
from mcub.schema import Sample
from mcub.tasks import BUNDLED_DATA_ROOT

SAMPLE_MEDIA = BUNDLED_DATA_ROOT / "sample"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return tiny_damc_layout(tmp_path_factory.mktemp("cache") / "tiny-damc")


def _image_audio_sample(model):
    sample = Sample(
        "t",
        "1",
        "image: <image>\naudio: <audio>\nWhich attribute do all of these inputs have in common?\nA. A dog\nB. Rain",
        (("image", str(SAMPLE_MEDIA / "image-0.png")), ("audio", str(SAMPLE_MEDIA / "audio-0.wav"))),
        {"A": "A dog", "B": "Rain"},
        "A",
        {"question_index": 0},
    )
    media = [load_media(m, path, model.media_preprocessing[m]) for m, path in sample.media]
    return [sample], [media]


def _logits(model):
    samples, media = _image_audio_sample(model)
    return model.lm.prefill_logits(model.lm.pack(model.prepare(samples, media).inputs))[0]


def _model(tiny, **kwargs):
    arguments = ModelComposeArguments(
        base=tiny["base"], encoders=tiny["encoders"], point_encoder=tiny["point_encoder"], **kwargs
    )
    return ModelComposeModel(Runtime(), arguments)


def merge_like_the_authors(experts: dict[str, Path], coefficients: dict[str, float], out: Path) -> Path:
    """The rules of `merge_unimodal_modelcompose.py --strategy online-merge-reset-...` (reference-code.md 4):
    tensors in several inputs (the `default` ones) are renamed `default-<m>`, the others copied; configs are
    merged with `or`; `reset_scaling_weights` lists the coefficients."""
    loaded = {ref: torch.load(path / "adapter_model.bin", weights_only=True) for ref, path in experts.items()}
    counts = {}
    for tensors in loaded.values():
        for key in tensors:
            counts[key] = counts.get(key, 0) + 1
    merged = {}
    for ref, tensors in loaded.items():
        for key, tensor in tensors.items():
            if counts[key] > 1:
                assert "default" in key
                key = key.replace(".default.", f".default-{ref}.").replace("tokens.default", f"tokens.default-{ref}")
            merged[key] = tensor
    configs = [json.loads((path / "config.json").read_text()) for path in experts.values()]
    config = {}
    for key in {k for c in configs for k in c}:
        config[key] = next((c[key] for c in configs if c.get(key)), configs[0].get(key))
    label = ",".join(f"default-{ref}={value}" for ref, value in coefficients.items())
    config["reset_scaling_weights"] = label
    for ref, c in zip(experts, configs, strict=True):
        config[f"{ref}_lora_alpha"], config[f"{ref}_lora_r"] = c["lora_alpha"], c["lora_r"]
    out.mkdir(parents=True)
    torch.save(merged, out / "adapter_model.bin")
    (out / "config.json").write_text(json.dumps(config, indent=4))
    inputs = "\n".join(str(p) for p in experts.values())
    (out / "merge_info.txt").write_text(f"Inputs:\n{inputs}\n\nOutput(reset-{label}):{out}")
    return out


def test_on_the_fly_composition_equals_the_authors_merged_checkpoint(tiny, tmp_path):
    experts = {"image": tiny["experts"]["image"], "audio": tiny["experts"]["audio"]}
    composed = _model(tiny, experts=experts, lambdas={"image": 0.3, "audio": 0.7})
    merged_dir = merge_like_the_authors(
        {"vision": Path(experts["image"]), "audio": Path(experts["audio"])},
        {"vision": 0.3, "audio": 0.7},
        tmp_path / "m",
    )
    merged = _model(tiny, merged=str(merged_dir), modalities=("image", "audio"))
    routes = {name: sorted(map(tuple, items)) for name, items in composed.describe().details["routes"].items()}
    assert routes == {name: sorted(map(tuple, items)) for name, items in merged.describe().details["routes"].items()}
    assert routes["language"] == [("default-audio", 0.7 * 2.0), ("default-vision", 0.3 * 2.0)]
    assert torch.allclose(_logits(composed), _logits(merged), atol=1e-5)
    assert sorted(read_checkpoint(merged_dir).unused) == sorted(
        f"{side}_tokens.default-{ref}" for side in ("prefix", "suffix") for ref in ("vision", "audio")
    )


def test_one_expert_with_lambda_one_equals_that_expert_alone(tiny):
    alone = _model(tiny, merged=tiny["experts"]["image"], modalities=("image",))  # loaded as the authors load it
    composed = _model(tiny, experts={"image": tiny["experts"]["image"]}, lambdas={"image": 1.0})
    assert alone.describe().details["routes"]["language"] == [["default", 2.0]]
    assert composed.describe().details["routes"]["language"] == [["default-vision", 2.0]]
    image = str(SAMPLE_MEDIA / "image-1.png")
    samples = [Sample("t", "1", "image: <image>\nWhat?", (("image", image),), {}, "x", {"question_index": 0})]
    media = [[load_media("image", image)]]
    single = [m.lm.prefill_logits(m.lm.pack(m.prepare(samples, media).inputs))[0] for m in (alone, composed)]
    assert torch.allclose(single[0], single[1], atol=1e-5)


def test_lambdas_change_only_the_language_route(tiny):
    first = _model(tiny, experts={"image": tiny["experts"]["image"], "audio": tiny["experts"]["audio"]})
    second = _model(
        tiny, experts={"image": tiny["experts"]["image"], "audio": tiny["experts"]["audio"]},
        lambdas={"image": 0.9, "audio": 0.1},
    )  # fmt: skip
    first_routes, second_routes = first.describe().details["routes"], second.describe().details["routes"]
    assert first_routes["image"] == second_routes["image"] == [["vision", 2.0]]
    assert first_routes["language"] == [["default-vision", 1.0], ["default-audio", 1.0]]
    assert not torch.allclose(_logits(first), _logits(second), atol=1e-4)


def test_naivemc_routes_every_token_through_the_weighted_sum(tiny, tmp_path):
    for seed, modality in enumerate(("image", "audio")):
        write_tiny_expert(tmp_path / modality, modality, "naivemc", seed=seed)
    model = _model(tiny, experts={"image": str(tmp_path / "image"), "audio": str(tmp_path / "audio")},
                   composition="naivemc")  # fmt: skip
    routes = model.describe().details["routes"]
    assert set(routes) == {"language"} and model.composition.modalities["image"].route == "language"
    assert model.composition.modalities["image"].prefix is None
    spans = model.prepare(*_image_audio_sample(model)).inputs[0]
    assert {span.route for span in spans} == {"language"}
    assert _logits(model).shape[0] == sum(len(span) for span in spans)


def test_missing_expert_and_mismatched_rank_fail_at_load(tiny, tmp_path):
    with pytest.raises(ModelError, match=r"audio expert: /nowhere/audio-expert \(no such local file"):
        _model(tiny, experts={"image": tiny["experts"]["image"], "audio": "/nowhere/audio-expert"})
    write_tiny_expert(tmp_path / "audio-r8", "audio", "damc", seed=7, lora_r=8)
    with pytest.raises(CheckpointError) as caught:
        _model(tiny, experts={"image": tiny["experts"]["image"], "audio": str(tmp_path / "audio-r8")})
    message = str(caught.value)
    assert "LoRA ranks differ" in message and "audio-r8" in message and tiny["experts"]["image"] in message
    with pytest.raises(CheckpointError, match="given as the audio expert, but it is configured for image"):
        _model(tiny, experts={"audio": tiny["experts"]["image"]})


def test_checkpoints_are_read_strictly(tiny, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny["experts"]["image"], broken)
    tensors = torch.load(broken / "adapter_model.bin", weights_only=True)
    tensors["model.something_else.weight"] = torch.zeros(2)
    del tensors["model.layers.1.mlp.down_proj.lora_B.vision.weight"]
    torch.save(tensors, broken / "adapter_model.bin")
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(broken)
    assert "model.something_else.weight" in str(caught.value)
    assert "model.layers.1.mlp.down_proj.lora_B.vision.weight (missing)" in str(caught.value)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "lora_r": 16}))
    torch.save(
        torch.load(tiny["experts"]["image"] + "/adapter_model.bin", weights_only=True), broken / "adapter_model.bin"
    )
    with pytest.raises(CheckpointError, match="rank 4 .*config.json says lora_r = 16"):
        read_checkpoint(broken)


def test_lambda_model_args():
    assert parse_model_args(["lambda.image=0.5", "lambda.audio=0.25", "encoders.audio=/m/BEATs.pt"]) == {
        "lambdas": {"image": 0.5, "audio": 0.25},
        "encoders": {"audio": "/m/BEATs.pt"},
    }


def test_tiny_damc_runs_the_sample_task_end_to_end(tiny, tmp_path, capsys):
    cache = str(Path(tiny["base"]).parent)
    common = ["--model", "tiny-damc", "--model-arg", f"cache_dir={cache}", "--tasks", "mcub-sample"]
    common += ["--output-dir", str(tmp_path), "--no-progress", "--num-workers", "0", "--max-new-tokens", "6"]
    assert eval_main([*common, "--run-name", "b1", "--protocol", "generate"]) == 0
    assert eval_main([*common, "--run-name", "b5", "--protocol", "generate", "--batch-size", "5"]) == 0
    assert eval_main([*common, "--run-name", "ll", "--protocol", "loglik", "--batch-size", "2"]) == 0

    def records(name):
        lines = (tmp_path / "tiny-damc" / name / "records" / "mcub-sample.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    one, five = records("b1"), records("b5")
    assert all(r["error"] is None for r in one + five)
    assert [r["output"] for r in one] == [r["output"] for r in five]
    assert [m["modality"] for m in one[0]["media"]] == ["image", "audio", "video", "point"]
    assert one[0]["media"][2]["preprocessing"] == "languagebind-224"
    loglik = records("ll")
    assert all(set(r["option_logliks"]) == {"A", "B", "C", "D"} for r in loglik)
    summary = json.loads((tmp_path / "tiny-damc" / "ll" / "summary.json").read_text())
    details = summary["model"]["details"]
    assert summary["model"]["adapter"] == "modelcompose" and summary["model"]["dtype"] == "float32"
    assert details["composition"] == "damc" and len(details["sources"]) == 4
    experts = {f"experts.{source['modality']}": source["sha256"] for source in details["sources"]}
    assert {role: summary["model"]["weights"][role] for role in experts} == experts


def _loaded(model, samples):
    """The samples' media as the runner's workers hand them to `model` (decoded, or cached features)."""
    from mcub.runner.loading import SampleDataset

    return [item.media for item in SampleDataset.for_model(samples, model)]


def test_feature_cache_lets_a_coefficient_change_skip_every_encoder_and_the_decoding(tiny, tmp_path, monkeypatch):
    cache = tmp_path / "features"
    experts = {"image": tiny["experts"]["image"], "audio": tiny["experts"]["audio"]}
    plain = _model(tiny, experts=experts)
    first = _model(tiny, experts=experts, feature_cache=str(cache))
    samples, decoded = _image_audio_sample(first)
    [fresh] = _loaded(first, samples)  # an empty cache: everything is decoded
    assert [m.provenance for m in fresh] == [m.provenance for m in decoded[0]]
    pairs = zip(fresh, decoded[0], strict=True)
    assert all(torch.equal(m.tensors[k], d.tensors[k]) for m, d in pairs for k in d.tensors)
    assert torch.allclose(_logits(plain), _logits(first), atol=1e-6)
    assert len(list(cache.rglob("*.safetensors"))) == 2

    second = _model(tiny, experts=experts, lambdas={"image": 0.8, "audio": 0.2}, feature_cache=str(cache))

    def never(*args, **kwargs):
        raise AssertionError("an encoder ran or a file was decoded although its features were cached")

    for encoder in second.encoders.values():
        monkeypatch.setattr(encoder, "forward", never)
    monkeypatch.setattr("mcub.runner.loading.load_media", never)
    [cached] = _loaded(second, samples)
    assert [set(m.tensors) for m in cached] == [{"features"}, {"features"}]
    assert [m.provenance for m in cached] == [{**m.provenance, "features": "cache"} for m in decoded[0]]
    reweighted = second.lm.prefill_logits(second.lm.pack(second.prepare(samples, [cached]).inputs))[0]
    uncached = _model(tiny, experts=experts, lambdas={"image": 0.8, "audio": 0.2})
    assert torch.allclose(reweighted, _logits(uncached), atol=1e-6)


def test_a_warm_feature_cache_through_the_runner_and_its_workers(tiny, tmp_path):
    cache_dir = str(Path(tiny["base"]).parent)
    common = ["--model", "tiny-damc", "--model-arg", f"cache_dir={cache_dir}", "--tasks", "mcub-sample"]
    common += ["--output-dir", str(tmp_path), "--no-progress", "--num-workers", "2", "--batch-size", "2"]
    common += ["--model-arg", f"feature_cache={tmp_path / 'features'}"]
    reweighted = ["--model-arg", "lambda.image=0.4", "--model-arg", "lambda.audio=0.1"]
    reweighted += ["--model-arg", "lambda.video=0.3", "--model-arg", "lambda.point=0.2"]
    assert eval_main([*common, "--run-name", "cold"]) == 0
    assert eval_main([*common, *reweighted, "--run-name", "warm"]) == 0
    assert eval_main([*common[:-2], *reweighted, "--run-name", "none"]) == 0

    def records(name):
        lines = (tmp_path / "tiny-damc" / name / "records" / "mcub-sample.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    cold, warm, uncached = records("cold"), records("warm"), records("none")
    assert all(r["error"] is None for r in cold + warm + uncached)
    assert all(m.get("features") is None for r in cold + uncached for m in r["media"])
    assert all(m["features"] == "cache" for r in warm for m in r["media"])
    assert [r["output"] for r in warm] == [r["output"] for r in uncached]
    assert [[{**m, "features": "cache"} for m in r["media"]] for r in uncached] == [r["media"] for r in warm]


def test_media_shared_by_the_questions_of_a_batch_are_encoded_once(tiny, monkeypatch):
    model = _model(tiny, experts={"image": tiny["experts"]["image"], "audio": tiny["experts"]["audio"]})
    [sample], [media] = _image_audio_sample(model)
    other = Sample(sample.task, "2", sample.prompt.replace("in common", "alike"), sample.media, sample.options, "B",
                   {"question_index": 1})  # fmt: skip
    alone = [model.lm.prefill_logits(model.lm.pack(model.prepare([s], [media]).inputs))[0] for s in (sample, other)]
    encoded = []
    for modality, encoder in model.encoders.items():
        forward = encoder.forward

        def counting(*args, modality=modality, forward=forward, **kwargs):
            encoded.append((modality, args[0].shape[0]))
            return forward(*args, **kwargs)

        monkeypatch.setattr(encoder, "forward", counting)
    together = model.lm.prefill_logits(model.lm.pack(model.prepare([sample, other], [media, media]).inputs))
    assert sorted(encoded) == [("audio", 1), ("image", 1)]
    for row, logits in enumerate(alone):
        assert torch.allclose(together[row, -logits.shape[0] :], logits, atol=1e-5)


def test_batches_keep_the_questions_on_the_same_media_together():
    from mcub.runner.batching import length_sorted_batches

    def sample(index, media, prompt_length):
        return Sample("t", str(index), "x" * prompt_length, media, {}, "A", {"question_index": index})

    video_a, video_b = (("video", "a.mp4"),), (("video", "b.mp4"),)
    samples = [sample(0, video_a, 10), sample(1, video_b, 50), sample(2, video_a, 40), sample(3, video_b, 20),
               sample(4, video_a + video_b, 5), sample(5, (), 99)]  # fmt: skip
    # video b's questions would be split over two batches: sample 5 fills the first one's room
    assert length_sorted_batches(samples, 2) == [[4, 5], [1, 3], [2, 0]]


def test_a_damaged_feature_cache_entry_is_reported_and_recomputed(tmp_path):
    from mcub.media import MediaInput
    from mcub.models.feature_cache import FeatureCache

    cache = FeatureCache(tmp_path, {"image": "weights"})
    media = MediaInput("image", "x.png", {}, {"path": "x.png", "sha256": "ab" * 32, "preprocessing": "clip-336-pad"})
    cache.store(media, torch.ones(2, 3))
    [entry] = tmp_path.rglob("*.safetensors")
    entry.write_bytes(entry.read_bytes()[:20])
    with pytest.warns(UserWarning, match="unreadable feature cache entry for x.png"):
        assert cache.load("image", "x.png", "ab" * 32, "clip-336-pad") is None
    cache.store(media, torch.ones(2, 3))
    loaded = cache.load("image", "y.png", "ab" * 32, "clip-336-pad")
    assert torch.equal(loaded.tensors["features"], torch.ones(2, 3))
    assert loaded.provenance == {**media.provenance, "path": "y.png", "features": "cache"}
    assert cache.load("video", "y.png", "ab" * 32, "clip-336-pad") is None


def _tampered_entry(tmp_path, how):
    """A feature cache with one image entry for content "ab"*32, then damaged as `how` says."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from mcub.media import MediaInput
    from mcub.models.feature_cache import FeatureCache

    cache = FeatureCache(tmp_path, {"image": "weights"})
    for digest in ("ab" * 32, "cd" * 32):
        provenance = {"path": f"{digest[:2]}.png", "sha256": digest, "preprocessing": "clip-336-pad"}
        cache.store(MediaInput("image", provenance["path"], {}, provenance), torch.full((2, 3), float(len(digest))))
    entry = cache._path(cache.key("image", "ab" * 32, "clip-336-pad"))
    other = cache._path(cache.key("image", "cd" * 32, "clip-336-pad"))
    with safe_open(str(entry), framework="pt") as handle:
        metadata, features = handle.metadata(), handle.get_tensor("features")
    if how == "swapped":
        entry.write_bytes(other.read_bytes())
        return cache
    replaced = {
        "values": features + 1,
        "nan": features.masked_fill(torch.eye(2, 3, dtype=torch.bool), float("nan")),
        "shape": features[:1],
        "dtype": features.double(),
    }[how]
    save_file({"features": replaced}, str(entry), metadata=metadata)
    return cache


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("values", "features_sha256 differ"),
        ("nan", "features_sha256 differ"),
        ("shape", "shape, features_sha256 differ"),
        ("dtype", "dtype, features_sha256 differ"),
        ("swapped", "filed under another key"),
    ],
)
def test_a_tampered_feature_cache_entry_is_reported_and_never_used(tmp_path, how, reason):
    cache = _tampered_entry(tmp_path, how)
    with pytest.warns(UserWarning, match=f"feature cache entry for x.png .*{reason}.*; encoding again"):
        assert cache.load("image", "x.png", "ab" * 32, "clip-336-pad") is None
    kept = cache.load("image", "y.png", "cd" * 32, "clip-336-pad")
    assert torch.equal(kept.tensors["features"], torch.full((2, 3), 64.0))


def test_non_finite_features_are_not_cached(tmp_path):
    from mcub.media import MediaInput
    from mcub.models.feature_cache import FeatureCache

    cache = FeatureCache(tmp_path, {"image": "weights"})
    media = MediaInput("image", "x.png", {}, {"path": "x.png", "sha256": "ab" * 32, "preprocessing": "clip-336-pad"})
    with pytest.warns(UserWarning, match="x.png: non-finite encoder features are not kept"):
        cache.store(media, torch.tensor([[1.0, float("inf")]]))
    assert list(tmp_path.rglob("*.safetensors")) == []


def _damaged_expert(tiny, tmp_path, damage):
    """A copy of the tiny image expert whose first LoRA A factor `damage` rewrites; returns (directory, key)."""
    import shutil

    directory = tmp_path / "image-expert"
    shutil.copytree(tiny["experts"]["image"], directory)
    tensors = torch.load(directory / "adapter_model.bin", weights_only=True)
    key = sorted(k for k in tensors if ".lora_A." in k)[0]
    tensors[key] = damage(tensors[key])
    torch.save(tensors, directory / "adapter_model.bin")
    return directory, key


def test_a_checkpoint_with_nan_or_integer_weights_is_refused_with_the_key(tiny, tmp_path):
    from mcub.errors import CheckpointError

    def nan(tensor):
        return tensor.masked_fill(torch.zeros_like(tensor, dtype=torch.bool).index_fill(1, torch.tensor([0]), True),
                                  float("nan"))  # fmt: skip

    directory, key = _damaged_expert(tiny, tmp_path / "nan", nan)
    with pytest.raises(CheckpointError, match=rf"1 tensor\(s\) hold NaN or infinite values: {re.escape(key)}; .*"
                                              "allow_nonfinite_weights=true"):  # fmt: skip
        _model(tiny, experts={"image": str(directory)})
    with pytest.warns(UserWarning, match=f"{re.escape(key)}; loaded as allow_nonfinite_weights asks"):
        loaded = _model(tiny, experts={"image": str(directory)}, allow_nonfinite_weights=True)
    assert list(loaded.composition.modalities) == ["image"]
    integers, key = _damaged_expert(tiny, tmp_path / "int", lambda tensor: (tensor * 100).to(torch.int64))
    with pytest.raises(CheckpointError, match=rf"non-floating dtype .*: {re.escape(key)} \(int64\)"):
        _model(tiny, experts={"image": str(integers)}, allow_nonfinite_weights=True)


def test_an_input_longer_than_the_llm_context_is_refused_by_sample_id(tiny):
    from mcub.errors import UnsupportedInput

    model = _model(tiny, experts={"image": tiny["experts"]["image"], "audio": tiny["experts"]["audio"]})
    samples, media = _image_audio_sample(model)
    length = model.lm.pack(model.prepare(samples, media).inputs).embeddings.shape[1]
    model.lm.llama.config.max_position_embeddings = length  # exactly full: accepted
    model.prepare(samples, media)
    model.lm.llama.config.max_position_embeddings = length - 1
    message = f"sample 1: {length} positions: longer than the LLM's context of {length - 1} (max_position_embeddings)"
    with pytest.raises(UnsupportedInput, match=re.escape(message)):
        model.prepare(samples, media)


def test_a_first_character_stop_waits_for_a_whole_multibyte_character(tiny):
    model = _model(tiny, experts={"image": tiny["experts"]["image"]})
    sample = Sample("t", "1", "Which?\nA. yes\nB. no", (), {"A": "yes", "B": "no"}, "A", {"question_index": 0})
    batch = model.prepare([sample], [[]])
    answer = model.tokenizer.encode_text("中 A")  # "▁", the three byte-fallback pieces of 中, "▁A"
    assert model.tokenizer.decode(answer[:2]) == "\ufffd"
    last_prompt_token = model.tokenizer.encode_prompt(batch.prompts[0])[-1]
    force_greedy_chain(model.lm.llama, [last_prompt_token, *answer, model.tokenizer.eos_id])
    assert model.generate(batch, max_new_tokens=8) == ["中 A"]
    assert model.generate(batch, max_new_tokens=8, stop="first-character") == ["中"]


def test_only_the_encoders_of_the_models_modalities_are_looked_for(tiny):
    encoders = {**tiny["encoders"], "audio": "/nowhere/BEATs.pt", "video": "/nowhere/LanguageBind"}
    arguments = ModelComposeArguments(base=tiny["base"], experts={"image": tiny["experts"]["image"]}, encoders=encoders)
    model = ModelComposeModel(Runtime(), arguments)
    assert model.modalities == {"image"} and set(model.encoders) == set(model.encoder_paths) == {"image"}


def test_a_merged_checkpoint_must_take_the_modalities_its_model_states(tiny, tmp_path):
    experts = {"vision": Path(tiny["experts"]["image"]), "audio": Path(tiny["experts"]["audio"])}
    merged_dir = merge_like_the_authors(experts, {"vision": 0.5, "audio": 0.5}, tmp_path / "m")
    message = f"{merged_dir / 'config.json'}: configured for image+audio, but the model states modalities image"
    with pytest.raises(ModelError, match=re.escape(message)):
        _model(tiny, merged=str(merged_dir), modalities=("image",))


def test_the_description_hashes_the_adapter_files_and_the_small_files_of_directories(tiny):
    from mcub.hashing import file_sha256

    model = _model(tiny, experts={"image": tiny["experts"]["image"], "audio": tiny["experts"]["audio"]})
    description = model.describe()
    base, expert = Path(tiny["base"]), Path(tiny["experts"]["audio"])
    assert description.adapter == "modelcompose" and description.details["composition"] == "damc"
    assert description.weights == {
        "base/config.json": file_sha256(base / "config.json"),
        "base/generation_config.json": file_sha256(base / "generation_config.json"),
        "base/tokenizer.model": file_sha256(base / "tokenizer.model"),
        "experts.image": file_sha256(Path(tiny["experts"]["image"]) / "adapter_model.bin"),
        "experts.audio": file_sha256(expert / "adapter_model.bin"),
        "encoders.image/config.json": file_sha256(Path(tiny["encoders"]["image"]) / "config.json"),
        "encoders.audio": file_sha256(tiny["encoders"]["audio"]),
    }
