"""Routed LoRA against a naive per-token reference, and batching against one-by-one."""

import pytest
import torch
from torch import nn

from mcub.models.modelcompose.llm import ComposedLM, Span
from mcub.models.modelcompose.lora import (
    LANGUAGE,
    TARGET_MODULES,
    LoraWeights,
    Route,
    RoutingState,
    install_routed_lora,
)

HIDDEN, RANK = 32, 4
ADAPTERS = ("default-vision", "default-audio", "vision", "audio")
ROUTES = {
    LANGUAGE: Route((("default-vision", 0.5 * 2.0), ("default-audio", 0.5 * 2.0))),
    "image": Route((("vision", 2.0),)),
    "audio": Route((("audio", 2.0),)),
}


def tiny_llama(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64, hidden_size=HIDDEN, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def random_adapters(llama, seed=1):
    generator = torch.Generator().manual_seed(seed)
    adapters = {}
    for index, layer in enumerate(llama.model.layers):
        for path in TARGET_MODULES:
            base = layer.get_submodule(path)
            adapters[(index, path)] = {
                name: LoraWeights(
                    torch.randn(RANK, base.in_features, generator=generator) * 0.3,
                    torch.randn(base.out_features, RANK, generator=generator) * 0.3,
                )
                for name in ADAPTERS
            }
    return adapters


class NaiveRoutedLinear(nn.Module):
    """Reference: every token computes every route densely; a per-token route label picks the one it takes."""

    def __init__(self, base, own, labels):
        super().__init__()
        self.base, self.own, self.labels = base, own, labels

    def forward(self, x):
        y = self.base(x)
        for route_name, route in ROUTES.items():
            delta = sum(weight * (x @ self.own[name].a.T @ self.own[name].b.T) for name, weight in route.adapters)
            chosen = (self.labels["current"] == route_name).unsqueeze(-1)
            y = y + torch.where(chosen, delta, torch.zeros_like(delta))
        return y


def _spans(seed):
    generator = torch.Generator().manual_seed(seed)
    feats = lambda n: torch.randn(n, HIDDEN, generator=generator)  # noqa: E731
    return [
        Span(LANGUAGE, token_ids=(1, 5, 9, 3)),
        Span("image", embeddings=feats(7)),
        Span(LANGUAGE, token_ids=(29, 13)),
        Span("audio", embeddings=feats(3)),
        Span(LANGUAGE, token_ids=(4, 8, 2, 17, 60)),
    ]


def test_routed_equals_naive_per_token_reference():
    llama = tiny_llama()
    adapters = random_adapters(llama)
    state = RoutingState()
    install_routed_lora(llama.model.layers, adapters, ROUTES, state)
    model = ComposedLM(llama, state)
    spans = _spans(seed=3)
    routed = model.prefill_logits(model.pack([spans]))[0]
    reference = naive_logits(spans, adapters)
    assert routed.shape == reference.shape == (21, 64)
    assert torch.allclose(routed, reference, atol=1e-4)
    # the routes matter: without LoRA the logits differ
    assert not torch.allclose(
        routed, tiny_llama()(inputs_embeds=_embedded(tiny_llama(), spans)[None]).logits[0], atol=1e-2
    )


def _embedded(llama, spans):
    embed = llama.get_input_embeddings()
    return torch.cat([embed(torch.tensor(s.token_ids)) if s.embeddings is None else s.embeddings for s in spans])


def naive_logits(spans, adapters):
    llama = tiny_llama()
    route_of = [s.route for s in spans for _ in range(len(s))]
    for index, layer in enumerate(llama.model.layers):
        for path in TARGET_MODULES:
            parent_name, _, child = path.rpartition(".")
            parent = layer.get_submodule(parent_name)
            labels = {"current": RouteLabels(route_of)}
            setattr(parent, child, NaiveRoutedLinear(getattr(parent, child), adapters[(index, path)], labels))
    with torch.no_grad():
        return llama(inputs_embeds=_embedded(llama, spans)[None]).logits[0]


class RouteLabels:
    """Per-token route names; `labels == name` gives the (1, T) mask of the tokens on that route."""

    def __init__(self, route_of):
        self.route_of = route_of

    def __eq__(self, name):
        return torch.tensor([[route == name for route in self.route_of]])


def test_batched_equals_one_by_one_with_padding():
    llama = tiny_llama()
    state = RoutingState()
    install_routed_lora(llama.model.layers, random_adapters(llama), ROUTES, state)
    model = ComposedLM(llama, state)
    first, second = _spans(seed=3), _spans(seed=4)[2:]
    batch = model.pack([first, second])
    assert batch.attention_mask[1].tolist() == [0] * 11 + [1] * 10
    together = model.prefill_logits(batch)
    alone = [model.prefill_logits(model.pack([spans]))[0] for spans in (first, second)]
    assert torch.allclose(together[0], alone[0], atol=1e-4)
    assert torch.allclose(together[1, 11:], alone[1], atol=1e-4)
    generated = model.generate(batch, max_new_tokens=5, eos_id=-1)
    singles = [model.generate(model.pack([spans]), max_new_tokens=5, eos_id=-1)[0] for spans in (first, second)]
    assert generated == singles and all(len(tokens) == 5 for tokens in generated)


def test_generation_continues_the_prompt_greedily():
    llama = tiny_llama()
    state = RoutingState()
    install_routed_lora(llama.model.layers, random_adapters(llama), ROUTES, state)
    model = ComposedLM(llama, state)
    spans = _spans(seed=5)
    [tokens] = model.generate(model.pack([spans]), max_new_tokens=3, eos_id=-1)
    # greedy with cache equals greedy by re-running the whole sequence (new tokens are text)
    extended = spans
    for expected in tokens:
        logits = model.prefill_logits(model.pack([extended]))[0, -1]
        assert int(logits.argmax()) == expected
        extended = [*extended, Span(LANGUAGE, token_ids=(expected,))]


def test_continuation_logprobs_match_full_sequences():
    llama = tiny_llama()
    state = RoutingState()
    install_routed_lora(llama.model.layers, random_adapters(llama), ROUTES, state)
    model = ComposedLM(llama, state)
    prompts = [_spans(seed=6), _spans(seed=7)[1:]]
    options = [[[5], [7, 9, 11]], [[3, 4], [8]]]
    scores = model.continuation_logprobs(model.pack(prompts), options)
    for prompt, row_options, row_scores in zip(prompts, options, scores, strict=True):
        for tokens, score in zip(row_options, row_scores, strict=True):
            full = [*prompt, Span(LANGUAGE, token_ids=tuple(tokens))]
            logits = model.prefill_logits(model.pack([full]))[0]
            logprobs = torch.log_softmax(logits, dim=-1)
            start = logits.shape[0] - len(tokens)
            expected = sum(float(logprobs[start - 1 + k, token]) for k, token in enumerate(tokens))
            assert score == pytest.approx(expected, abs=1e-4)


def test_long_spans_across_a_batch_are_computed_range_by_range():
    from mcub.models.modelcompose.lora import SLICED_RANGE_ROWS

    llama = tiny_llama()
    state = RoutingState()
    install_routed_lora(llama.model.layers, random_adapters(llama), ROUTES, state)
    model = ComposedLM(llama, state)
    generator = torch.Generator().manual_seed(9)
    samples = [
        [
            Span(LANGUAGE, token_ids=(1, 5)),
            Span("image", embeddings=torch.randn(SLICED_RANGE_ROWS + extra, HIDDEN, generator=generator)),
            Span(LANGUAGE, token_ids=(7, 2, 9)),
        ]
        for extra in (3, 0)
    ]
    batch = model.pack(samples)
    assert len(batch.plan.ranges["image"]) == 2
    together = model.prefill_logits(batch)
    for row, spans in enumerate(samples):
        alone = model.prefill_logits(model.pack([spans]))[0]
        assert torch.allclose(together[row, -alone.shape[0] :], alone, atol=1e-4)


def test_packing_reads_no_device_value_on_the_host():
    """On the meta device any read of a value (item, tolist, a boolean test) fails: packing must need none, so the
    host never waits for the GPU while it prepares a batch."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    with torch.device("meta"):
        model = ComposedLM(LlamaForCausalLM(config), RoutingState())
    block = torch.empty(4, 16, device="meta")
    batch = model.pack([
        [Span(LANGUAGE, (1, 2, 3)), Span("image", embeddings=block), Span(LANGUAGE, (5,))],
        [Span(LANGUAGE, (1,)), Span("image", embeddings=block)],
    ])  # fmt: skip
    assert batch.embeddings.shape == (2, 8, 16) and batch.position_ids.shape == (2, 8)
    assert batch.plan.ranges == {LANGUAGE: [(0, 3), (7, 8), (11, 12)], "image": [(3, 7), (12, 16)]}
    assert batch.plan.rows("image", torch.device("meta")).shape == (8,)
