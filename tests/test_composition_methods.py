"""Composition methods as plug-ins (issue 16.1): each method's effective language delta against a dense reference
computed here from the expert factors, the authors' factor strategies against merged checkpoints written by their
script's rules, DAMC routing kept, NaiveMC routing folded, and the arguments checked before any weight is read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import test_modelcompose
import torch
from test_modelcompose import _logits, _model, merge_like_the_authors

from mcub.models.base import ModelError, check_model_args, load_model_specs, parse_model_args
from mcub.models.modelcompose.arguments import ModelComposeArguments
from mcub.models.modelcompose.checkpoint import REFERENCE_NAME, read_checkpoint
from mcub.models.modelcompose.language_merges import dare_seed
from mcub.models.modelcompose.model import load_llama
from mcub.models.modelcompose.tiny import write_tiny_expert

PAIR = ("image", "audio")
tiny = test_modelcompose.tiny  # the tiny DAMC files (a session fixture)


def _experts(tiny):
    return {m: tiny["experts"][m] for m in PAIR}


def _deltas(experts, position):
    """Each expert's language delta s B A at a projection, in float64."""
    found = {}
    for modality in PAIR:
        checkpoint = read_checkpoint(experts[modality])
        weights = checkpoint.lora[position]["default"]
        found[modality] = checkpoint.lora_scaling * weights.b.double() @ weights.a.double()
    return found


def _effective_language_delta(model, base, position):
    """W_eff - W of the language route at a projection: the projection run on the identity under the default
    (language) route, minus the base weight loaded apart."""
    layer, path = position
    projection = model.lm.llama.model.layers[layer].get_submodule(path)
    original = base.model.layers[layer].get_submodule(path).weight.detach().double()
    model.lm.state.plan = None
    with torch.no_grad():
        applied = projection(torch.eye(original.shape[1])[None])[0].double().T
    return applied - original


@pytest.fixture(scope="module")
def base(tiny):
    return load_llama(Path(tiny["base"]), torch.float32)


def _reference_ties(deltas, keep):
    """TIES as its paper describes it, written plainly: top-k magnitudes per expert, the sign of the sum, the mean
    of the agreeing entries."""
    flat = [d.reshape(-1) for d in deltas]
    kept = max(1, int(flat[0].numel() * keep))
    trimmed = []
    for vector in flat:
        threshold = vector.abs().sort(descending=True).values[kept - 1]
        trimmed.append(torch.where(vector.abs() >= threshold, vector, torch.zeros_like(vector)))
    total = sum(trimmed)
    elected = torch.sign(total)
    agreeing = [torch.where(torch.sign(t) == elected, t, torch.zeros_like(t)) for t in trimmed]
    counts = sum((a != 0).double() for a in agreeing).clamp(min=1)
    return (sum(agreeing) / counts).reshape(deltas[0].shape)


def _reference_tsv(deltas, keep, alpha):
    lefts, values, rights = [], [], []
    for delta in deltas:
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        rank = torch.linalg.matrix_rank(delta).item()
        kept = max(1, int(rank * keep))
        lefts.append(u[:, :kept])
        values.append(s[:kept])
        rights.append(vh[:kept].T)

    def orthonormal(matrix):
        p, _, qh = torch.linalg.svd(matrix, full_matrices=False)
        return p @ qh

    u, v = orthonormal(torch.cat(lefts, dim=1)), orthonormal(torch.cat(rights, dim=1))
    return alpha * u @ torch.diag(torch.cat(values)) @ v.T


def _reference_iso_c(deltas, alpha):
    total = sum(deltas)
    u, s, vh = torch.linalg.svd(total, full_matrices=False)
    rank = torch.linalg.matrix_rank(total).item()
    return alpha * s[:rank].mean() * u[:, :rank] @ vh[:rank]


POSITIONS = [(0, "self_attn.q_proj"), (1, "mlp.down_proj"), (1, "mlp.gate_proj")]


@pytest.mark.parametrize(
    ("method", "arguments", "reference"),
    [
        ("task-arithmetic", {"lambdas": {"image": 0.9, "audio": -0.4}}, lambda d: 0.9 * d[0] - 0.4 * d[1]),
        ("weight-average", {}, lambda d: (d[0] + d[1]) / 2),
        ("ties", {"ties": {"k": 0.3, "scaling": 1.5}}, lambda d: 1.5 * _reference_ties(d, 0.3)),
        ("tsv", {"tsv": {"keep": 0.5, "alpha": 0.8}}, lambda d: _reference_tsv(d, 0.5, 0.8)),
        ("tsv", {}, lambda d: _reference_tsv(d, 0.5, 1.0)),
        ("iso-c", {"iso-c": {"alpha": 0.7}}, lambda d: _reference_iso_c(d, 0.7)),
    ],
)
def test_each_method_composes_the_language_delta_of_its_dense_reference(tiny, base, method, arguments, reference):
    model = _model(tiny, experts=_experts(tiny), composition=method, **arguments)
    for position in POSITIONS:
        deltas = _deltas(tiny["experts"], position)
        expected = reference([deltas["image"], deltas["audio"]])
        found = _effective_language_delta(model, base, position)
        assert torch.allclose(found, expected, atol=2e-5, rtol=1e-4), (method, position)
    recorded = model.describe().details
    assert recorded["method"]["name"] == method and recorded["method"]["routing"] == "damc"
    assert len(recorded["language_delta_sha256"]) == 64


def test_damc_routing_keeps_the_modality_loras_on_their_own_tokens(tiny, base):
    """A dense method under DAMC: the language rows take base + merged delta, the image rows base + their LoRA."""
    model = _model(tiny, experts=_experts(tiny), composition="ties")
    assert model.describe().details["routes"]["image"] == [["vision", 2.0]]
    position = (1, "mlp.gate_proj")  # the leader of its LoRA input group: it computes the shared A side
    projection = model.lm.llama.model.layers[1].get_submodule(position[1])
    original = base.model.layers[1].get_submodule(position[1]).weight.detach()
    from mcub.models.modelcompose.lora import RoutePlan

    width = original.shape[1]
    model.lm.state.plan = RoutePlan(2 * width, {"language": [(0, width)], "image": [(width, 2 * width)]})
    with torch.no_grad():
        out = projection(torch.cat([torch.eye(width), torch.eye(width)])[None])[0]
    model.lm.state.plan = None
    own = read_checkpoint(tiny["experts"]["image"]).lora[position]["vision"]
    assert torch.allclose(out[width:].T - original, 2.0 * own.b @ own.a, atol=1e-5)
    expected = _reference_ties(list(_deltas(tiny["experts"], position).values()), 0.2).float()
    assert torch.allclose(out[:width].T - original, expected, atol=2e-5)


def test_naivemc_routing_folds_a_dense_delta_into_the_base_weights(tiny, tmp_path, base):
    experts = {}
    for seed, modality in enumerate(PAIR):
        write_tiny_expert(tmp_path / modality, modality, "naivemc", seed=seed + 3)
        experts[modality] = str(tmp_path / modality)
    model = _model(tiny, experts=experts, composition="ties", ties={"k": 0.5})
    assert model.describe().details["method"]["routing"] == "naivemc"
    for position in POSITIONS:
        layer, path = position
        projection = model.lm.llama.model.layers[layer].get_submodule(path)
        folded = projection.base.weight.detach()
        original = base.model.layers[layer].get_submodule(path).weight.detach()
        deltas = list(_deltas(experts, position).values())
        assert torch.allclose(folded - original, _reference_ties(deltas, 0.5).float(), atol=2e-5)
        assert not projection.route_names  # nothing left to route: the delta is in the weights


def test_dare_drops_and_rescales_by_its_seed_and_is_bit_identical_across_loads(tiny, base):
    arguments = {"composition": "dare", "dare": {"p": 0.6, "seed": 11}, "lambdas": {"image": 0.5, "audio": 0.25}}
    first, second = _model(tiny, experts=_experts(tiny), **arguments), _model(tiny, experts=_experts(tiny), **arguments)
    other_seed = _model(tiny, experts=_experts(tiny), **(arguments | {"dare": {"p": 0.6, "seed": 12}}))
    for position in POSITIONS:
        deltas = _deltas(tiny["experts"], position)
        expected = 0
        for modality, weight in (("image", 0.5), ("audio", 0.25)):
            generator = torch.Generator().manual_seed(dare_seed(11, position, modality))
            kept = torch.rand(deltas[modality].shape, generator=generator) >= 0.6
            expected = expected + weight * deltas[modality] * kept / 0.4
        found = _effective_language_delta(first, base, position)
        assert torch.allclose(found, expected, atol=2e-5)
        assert torch.equal(found, _effective_language_delta(second, base, position))
        assert not torch.equal(found, _effective_language_delta(other_seed, base, position))
    details = first.describe().details
    assert details["method"]["arguments"] == {"p": 0.6, "seed": 11}
    assert details["language_delta_sha256"] == second.describe().details["language_delta_sha256"]
    assert details["language_delta_sha256"] != other_seed.describe().details["language_delta_sha256"]


def _merge_factors_like_the_authors(experts: dict[str, Path], strategy: str, k: int, out: Path) -> Path:
    """The rules of `merge_unimodal_modelcompose.py --strategy sum|mean|ties-<f> -K k` (reference-code.md 4):
    tensors every input holds merged elementwise (factors apart), the others copied; for ties, the shared tensors
    in sorted key order as one vector per input, keeping entries at least the (d - int(d k / 100))-th smallest
    magnitude, the sign of the sum (zeros: the majority sign), the disjoint sum, mean or max; configs merged with
    `or`."""
    loaded = [torch.load(path / "adapter_model.bin", weights_only=True) for path in experts.values()]
    shared = sorted(set.intersection(*(set(tensors) for tensors in loaded)))
    merged = {key: tensor for tensors in loaded for key, tensor in tensors.items() if key not in shared}
    if strategy in ("sum", "mean"):
        for key in shared:
            total = sum(tensors[key] for tensors in loaded)
            merged[key] = total / len(loaded) if strategy == "mean" else total
    else:
        vectors = torch.stack([torch.cat([tensors[key].reshape(-1) for key in shared]) for tensors in loaded])
        width = vectors.shape[1]
        threshold = vectors.abs().kthvalue(width - int(width * (k / 100)), dim=1, keepdim=True).values
        trimmed = vectors * (vectors.abs() >= threshold)
        sign = torch.sign(trimmed.sum(dim=0))
        sign[sign == 0] = torch.sign(sign.sum())
        chosen = trimmed * torch.where(sign > 0, trimmed > 0, trimmed < 0)
        how = strategy.removeprefix("ties-")
        if how == "sum":
            vector = chosen.sum(dim=0)
        elif how == "mean":
            vector = chosen.sum(dim=0) / (chosen != 0).sum(dim=0).float().clamp(min=1)
        else:
            vector = chosen.abs().max(dim=0).values * sign
        offset = 0
        for key in shared:
            size = loaded[0][key].numel()
            merged[key] = vector[offset : offset + size].reshape(loaded[0][key].shape)
            offset += size
    configs = [json.loads((path / "config.json").read_text()) for path in experts.values()]
    config = {}
    for key in {k for c in configs for k in c}:
        config[key] = next((c[key] for c in configs if c.get(key)), configs[0].get(key))
    for ref, c in zip(experts, configs, strict=True):
        config[f"{ref}_lora_alpha"], config[f"{ref}_lora_r"] = c["lora_alpha"], c["lora_r"]
    out.mkdir(parents=True)
    torch.save(merged, out / "adapter_model.bin")
    (out / "config.json").write_text(json.dumps(config, indent=4))
    return out


@pytest.mark.parametrize(("strategy", "k"), [("sum", 20), ("mean", 20), ("ties-sum", 20), ("ties-mean", 35),
                                             ("ties-max", 10)])  # fmt: skip
def test_the_authors_factor_strategies_give_the_logits_of_their_merged_checkpoint(tiny, tmp_path, strategy, k):
    experts = _experts(tiny)
    extra = {strategy: {"k": k}} if strategy.startswith("ties-") else {}
    composed = _model(tiny, experts=experts, composition=strategy, **extra)
    references = {REFERENCE_NAME[m]: Path(experts[m]) for m in PAIR}
    merged_dir = _merge_factors_like_the_authors(references, strategy, k, tmp_path / "merged")
    merged = _model(tiny, merged=str(merged_dir), modalities=PAIR)
    assert composed.describe().details["routes"] == merged.describe().details["routes"]
    assert torch.allclose(_logits(composed), _logits(merged), atol=1e-5)
    assert composed.describe().details["language_delta_sha256"] == merged.describe().details["language_delta_sha256"]


@pytest.mark.parametrize(
    ("method", "lambdas", "coefficients"),
    [("task-arithmetic", {"image": 0.9, "audio": -0.4}, {"vision": 0.9, "audio": -0.4}),
     ("weight-average", None, {"vision": 0.5, "audio": 0.5})],
)  # fmt: skip
def test_linear_methods_give_the_logits_of_an_explicit_merge(tiny, tmp_path, method, lambdas, coefficients):
    experts = _experts(tiny)
    composed = _model(tiny, experts=experts, composition=method, **({"lambdas": lambdas} if lambdas else {}))
    references = {REFERENCE_NAME[m]: Path(experts[m]) for m in PAIR}
    merged_dir = merge_like_the_authors(references, coefficients, tmp_path / "merged")
    merged = _model(tiny, merged=str(merged_dir), modalities=PAIR)
    assert torch.allclose(_logits(composed), _logits(merged), atol=1e-5)


def test_damc_and_naivemc_are_todays_compositions(tiny):
    default = _model(tiny, experts=_experts(tiny), lambdas={"image": 0.3, "audio": 0.7})
    named = _model(tiny, experts=_experts(tiny), composition="damc", lambdas={"image": 0.3, "audio": 0.7})
    arithmetic = _model(
        tiny, experts=_experts(tiny), composition="task-arithmetic", lambdas={"image": 0.3, "audio": 0.7}
    )
    assert default.describe().details["routes"] == named.describe().details["routes"]
    assert torch.equal(_logits(default), _logits(named)) and torch.equal(_logits(default), _logits(arithmetic))
    assert default.describe().details["language_delta_sha256"] == arithmetic.describe().details["language_delta_sha256"]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"composition": "median"}, "unknown composition 'median'; one of damc, naivemc"),
        ({"composition": "ties", "lambdas": {"image": 0.5, "audio": 0.5}}, "ties does not weigh the experts"),
        ({"composition": "ties", "ties": {"k": 2}}, "composition ties: k: Input should be less than or equal to 1"),
        ({"composition": "ties", "ties": {"q": 2}}, "composition ties: q: Extra inputs are not permitted"),
        ({"composition": "dare", "ties": {"k": 0.2}}, "`ties.*` arguments given, but the composition is dare"),
        ({"ties": {"k": 0.2}}, "`ties.*` arguments given, but the composition is damc"),
    ],
)
def test_method_arguments_are_checked_before_any_weight(tiny, given, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ModelComposeArguments(base=tiny["base"], experts=_experts(tiny), **given)


def test_method_arguments_from_the_command_line(tiny):
    spec = load_model_specs()["tiny-damc"]
    check_model_args(spec, parse_model_args(["composition=ties", "ties.k=0.4"]))
    with pytest.raises(ModelError, match="composition tsv: keep"):
        check_model_args(spec, parse_model_args(["composition=tsv", "tsv.keep=0"]))
    model = _model(tiny, experts=_experts(tiny), composition="iso-c")
    assert model.describe().details["method"] == {"name": "iso-c", "arguments": {"alpha": 1.0}, "routing": "damc"}
