"""Routes as merged weights (`route_weights: merged`) against the factored routed LoRA: the same logits, greedy
tokens and option log-likelihoods up to fp32 rounding, range by range and gathered, with padding, a dense language
delta, and shared prefixes."""

import pytest
import torch
from test_prefix_reuse import NAIVEMC_ROUTES, batch_rows, questions_on_shared_media, tiny, tiny_model  # noqa: F401
from test_routed_lora import HIDDEN, ROUTES, _spans, random_adapters, tiny_llama

from mcub.models.base import ModelError, Runtime
from mcub.models.modelcompose.arguments import ModelComposeArguments
from mcub.models.modelcompose.language_delta import LanguageDeltaLinear
from mcub.models.modelcompose.llm import ComposedLM, Span
from mcub.models.modelcompose.lora import (
    LANGUAGE,
    SLICED_RANGE_ROWS,
    TARGET_MODULES,
    LoraWeights,
    Route,
    RoutedLoraLinear,
    RoutePlan,
    RoutingState,
    install_routed_lora,
)
from mcub.models.modelcompose.merged_routes import MergedRouteLinear, added_bytes, merge_route_weights
from mcub.models.modelcompose.model import ModelComposeModel, check_room_for_merged_routes
from mcub.models.modelcompose.prefix import pack_shared, shared_prefixes


def factored_and_merged(routes):
    """The same routed LoRA twice: factored, and merged into one weight per route."""
    models = []
    for merged in (False, True):
        llama = tiny_llama()
        state = RoutingState()
        install_routed_lora(llama.model.layers, random_adapters(llama), routes, state)
        if merged:
            merge_route_weights(llama.model.layers, state, routes)
        models.append(ComposedLM(llama, state))
    return models


def test_uncovered_rows_are_the_gaps_between_and_after_the_routes():
    plan = RoutePlan(12, {LANGUAGE: [(2, 4), (9, 10)], "image": [(4, 7)]})
    assert plan.uncovered == [(0, 2), (7, 9), (10, 12)]
    assert plan.uncovered_rows(torch.device("cpu")).tolist() == [0, 1, 7, 8, 10, 11]
    assert RoutePlan.everywhere(LANGUAGE, 5).uncovered == []


def test_every_projection_holds_one_weight_per_route_and_shares_the_base_weight_of_a_route_without_adapters():
    routes = ROUTES | {"point": Route(())}
    factored, merged = factored_and_merged(routes)
    for layer in merged.llama.model.layers:
        for path in TARGET_MODULES:
            projection = layer.get_submodule(path)
            assert isinstance(projection, MergedRouteLinear)
            assert projection.route_names == list(routes)
    projection = factored.llama.model.layers[1].mlp.down_proj
    a, b = projection.route_factors()["image"]
    down = merged.llama.model.layers[1].mlp.down_proj
    assert torch.allclose(down.weight_of("image"), projection.base.weight + b @ a, atol=1e-6)
    assert torch.equal(down.weight_of("point"), projection.base.weight)
    assert down.weight_of(None) is down.weight_of(LANGUAGE)
    with pytest.raises(KeyError, match="route 'video' is not one of this model's routes"):
        down.weight_of("video")
    generator = torch.Generator().manual_seed(2)
    spans = [*_spans(seed=3), Span("point", embeddings=torch.randn(4, HIDDEN, generator=generator))]
    batch = factored.pack([spans])
    assert torch.allclose(merged.prefill_logits(batch), factored.prefill_logits(batch), atol=1e-4)


@pytest.mark.parametrize("routes", [ROUTES, NAIVEMC_ROUTES], ids=["damc", "naivemc"])
def test_merged_prefill_generation_and_options_equal_the_factored_ones(routes):
    factored, merged = factored_and_merged(routes)
    prompts = [_spans(seed=3), _spans(seed=4)[2:]]  # the second row is left-padded
    batches = [model.pack(prompts) for model in (factored, merged)]
    assert batches[0].plan.uncovered == [(21, 32)]
    mine, theirs = merged.prefill_logits(batches[1]), factored.prefill_logits(batches[0])
    assert torch.isfinite(mine).all()
    assert torch.allclose(mine[0], theirs[0], atol=1e-4)
    assert torch.allclose(mine[1, 11:], theirs[1, 11:], atol=1e-4)
    assert merged.generate(batches[1], 6, eos_id=-1) == factored.generate(batches[0], 6, eos_id=-1)
    options = [[[5], [7, 9, 11]], [[3, 4], [8]]]
    for row_mine, row_theirs in zip(
        merged.continuation_logprobs(batches[1], options),
        factored.continuation_logprobs(batches[0], options),
        strict=True,
    ):
        assert row_mine == pytest.approx(row_theirs, abs=1e-4)


def test_long_ranges_are_multiplied_in_place_and_short_ones_gathered():
    factored, merged = factored_and_merged(ROUTES)
    generator = torch.Generator().manual_seed(9)
    samples = [
        [
            Span(LANGUAGE, token_ids=(1, 5)),
            Span("image", embeddings=torch.randn(SLICED_RANGE_ROWS + extra, HIDDEN, generator=generator)),
            Span(LANGUAGE, token_ids=(7, 2, 9)),
            Span("audio", embeddings=torch.randn(2, HIDDEN, generator=generator)),
        ]
        for extra in (3, 0)
    ]
    batch = factored.pack(samples)
    assert len(batch.plan.ranges["image"]) == 2 and len(batch.plan.ranges[LANGUAGE]) == 4
    assert torch.allclose(merged.prefill_logits(batch), factored.prefill_logits(batch), atol=1e-4)


def test_shared_prefixes_prefill_the_same_on_merged_routes():
    factored, merged = factored_and_merged(ROUTES)
    rows = batch_rows()
    groups = shared_prefixes(rows, min_positions=3)
    assert len(groups) == 2
    reference = factored.prompt_logits(factored.pack(rows))
    assert torch.allclose(merged.prompt_logits(pack_shared(merged, rows, groups)), reference, atol=1e-4)


def test_a_projection_that_is_not_routed_is_refused():
    llama = tiny_llama()
    with pytest.raises(TypeError, match="self_attn.q_proj is a Linear, not a routed projection"):
        merge_route_weights(llama.model.layers, RoutingState(), ROUTES)


@pytest.mark.parametrize("composition", ["ties", "naivemc"])
def test_the_model_answers_alike_with_merged_routes(tiny, composition):  # noqa: F811
    arguments = {"ties": {"k": 0.5}} if composition == "ties" else {}
    factored = tiny_model(tiny, composition, **arguments)
    merged = tiny_model(tiny, composition, route_weights="merged", **arguments)
    layer = factored.lm.llama.model.layers[0]
    if composition == "ties":  # DAMC routing with a dense language delta beside the modality LoRAs
        assert isinstance(layer.self_attn.q_proj, LanguageDeltaLinear)
    else:
        assert isinstance(layer.self_attn.q_proj, RoutedLoraLinear)
    assert isinstance(merged.lm.llama.model.layers[0].self_attn.q_proj, MergedRouteLinear)
    assert merged.describe().details["route_weights"] == "merged"
    assert factored.describe().details["route_weights"] == "factors"
    samples, media = questions_on_shared_media(factored)
    options = [["A", "B", "A dog", "Rain"]] * len(samples)
    prepared = [model.prepare(samples, media) for model in (factored, merged)]
    for mine, theirs in zip(merged.loglik(prepared[1], options), factored.loglik(prepared[0], options), strict=True):
        assert mine == pytest.approx(theirs, abs=1e-4, rel=0)
    assert merged.generate(prepared[1], max_new_tokens=6) == factored.generate(prepared[0], max_new_tokens=6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the 16-bit CUDA kernels need a GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_merged_routes_agree_with_the_factored_ones_in_16_bits_on_cuda(dtype):
    models = []
    for merged in (False, True):
        llama = tiny_llama().to("cuda", dtype)
        adapters = {
            key: {name: LoraWeights(w.a.to("cuda", dtype), w.b.to("cuda", dtype)) for name, w in own.items()}
            for key, own in random_adapters(tiny_llama()).items()
        }
        state = RoutingState()
        install_routed_lora(llama.model.layers, adapters, ROUTES, state)
        if merged:
            merge_route_weights(llama.model.layers, state, ROUTES)
        models.append(ComposedLM(llama, state))
    factored, merged = models
    prompts = [_spans(seed=3), _spans(seed=4)[2:]]
    prompts = [
        [Span(s.route, s.token_ids, None if s.embeddings is None else s.embeddings.cuda()) for s in p] for p in prompts
    ]
    batch = factored.pack(prompts)
    mine, theirs = merged.prefill_logits(batch), factored.prefill_logits(batch)
    scale = theirs.abs().max()
    assert torch.isfinite(mine).all()
    assert (mine[0] - theirs[0]).abs().max() <= 2e-2 * scale
    assert (mine[0].argmax(-1) == theirs[0].argmax(-1)).float().mean() >= 0.9


def test_merged_routes_refuse_an_fp8_prefill(tiny):  # noqa: F811
    with pytest.raises(ModelError, match="fp8 with the factored routes"):
        ModelComposeModel(
            Runtime(dtype="fp8"),
            ModelComposeArguments(
                base=tiny["base"], encoders=tiny["encoders"], experts={"image": tiny["experts"]["image"]},
                route_weights="merged",
            ),
        )  # fmt: skip


def test_the_memory_merged_routes_add_is_known_before_they_are_made():
    llama = tiny_llama()
    install_routed_lora(llama.model.layers, random_adapters(llama), ROUTES, RoutingState())
    per_layer = sum(llama.model.layers[0].get_submodule(path).base.weight.numel() * 4 for path in TARGET_MODULES)
    # three routes with adapters: three copies, less the base weights no route keeps
    assert added_bytes(llama.model.layers, ROUTES) == 2 * 2 * per_layer
    # a route without adapters keeps the base weights
    assert added_bytes(llama.model.layers, [*ROUTES, "point"]) == 2 * 3 * per_layer
    check_room_for_merged_routes(100, torch.device("cuda"), free=100)
    with pytest.raises(ModelError, match="adds 0.00 GiB of merged weights on cuda, where 0.00 GiB are free"):
        check_room_for_merged_routes(101, torch.device("cuda"), free=100)
    check_room_for_merged_routes(10**15, torch.device("cpu"))
