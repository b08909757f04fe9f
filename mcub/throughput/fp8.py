"""The FP8 prefill bench: the dense prefill in bfloat16 and with FP8 projections, and their logit agreement."""

from __future__ import annotations

from typing import Any

from mcub.throughput.synthetic import SHAPES, build_model, synthetic_batches
from mcub.throughput.timing import seconds_per_call


def fp8_prefill_bench(shape_name: str, batch_sizes: list[int], device: str, warmup: int,
                      iterations: int) -> dict[str, Any]:  # fmt: skip
    """The dense prefill in bfloat16 and with FP8 projections (modelcompose/fp8.py: `--dtype fp8`), timed at each
    batch size in one run on one model, and FP8's agreement to bfloat16 over every position of the largest batch
    (whose samples include the smaller batches')."""
    import torch

    from mcub.models.modelcompose.fp8 import gemm_name, install_fp8_prefill
    from mcub.models.modelcompose.llm import ComposedLM
    from mcub.models.modelcompose.lora import RoutingState

    llama = build_model(SHAPES[shape_name], device, torch.bfloat16)
    bf16 = ComposedLM(llama, RoutingState())
    batches = synthetic_batches(bf16, shape_name, batch_sizes, device, torch.bfloat16)
    largest = batches[max(batch_sizes)]

    def timed(model) -> dict[int, float]:
        return {
            size: seconds_per_call(lambda b=batch: model.last_logits(b, None), device, warmup, iterations)
            for size, batch in batches.items()
        }

    bf16_s, reference = timed(bf16), bf16.prompt_hidden(largest)
    fp8 = ComposedLM(llama, bf16.state, install_fp8_prefill(llama.model.layers))
    fp8_s, quantised = timed(fp8), fp8.prompt_hidden(largest)
    return {
        "gemm": gemm_name(llama.model.layers),
        "scales": "weights: one per output channel, at load; activations: one per token",
        **logit_agreement(llama.lm_head, reference, quantised, largest.attention_mask),
        "rows": [
            {
                "batch_size": size,
                "bf16_dense_s": bf16_s[size],
                "fp8_dense_s": fp8_s[size],
                "fp8_samples_per_s": size / fp8_s[size],
                "bf16_over_fp8": bf16_s[size] / fp8_s[size],
            }
            for size in batch_sizes
        ],
    }


def logit_agreement(lm_head, reference, hidden, attention_mask, chunk_positions: int = 2048) -> dict[str, Any]:
    """How the logits of `hidden` agree with those of `reference` (final hidden states, batch x time x width) at
    the unpadded positions: mean and least cosine, largest |difference| and the share of equal argmaxes; the logits
    are made `chunk_positions` positions at a time (all of them at once would take batch x time x vocabulary)."""
    import torch

    keep = attention_mask.reshape(-1).bool()
    reference, hidden = (h.reshape(-1, h.shape[-1])[keep] for h in (reference, hidden))
    cosine_sum, cosine_min, difference, agreeing = 0.0, 1.0, 0.0, 0
    with torch.inference_mode():
        for start in range(0, reference.shape[0], chunk_positions):
            expected = lm_head(reference[start : start + chunk_positions]).float()
            found = lm_head(hidden[start : start + chunk_positions]).float()
            cosine = torch.nn.functional.cosine_similarity(found, expected, dim=-1)
            cosine_sum += float(cosine.sum())
            cosine_min = min(cosine_min, float(cosine.min()))
            difference = max(difference, float((found - expected).abs().max()))
            agreeing += int((found.argmax(-1) == expected.argmax(-1)).sum())
    positions = reference.shape[0]
    return {
        "positions": positions,
        "logit_cosine_mean": cosine_sum / positions,
        "logit_cosine_min": cosine_min,
        "max_logit_difference": difference,
        "argmax_agreement": agreeing / positions,
    }
