"""The prefill benches: dense (the roofline) against the composed DAMC forward, factored and with merged routes, and
the MUSIC-AVQA-shaped prefill with and without shared-prefix reuse."""

from __future__ import annotations

from typing import Any

from mcub.throughput.synthetic import (
    LAYOUTS,
    MUSIC_AVQA_QUESTION_TOKENS,
    SHAPES,
    build_model,
    damc_adapters,
    music_avqa_spans,
    synthetic_batches,
)
from mcub.throughput.timing import CPU_NOTE, seconds_per_call


def music_avqa_prefill(model, samples, prefill, device: str, warmup: int, iterations: int) -> dict[str, Any]:
    """The composed prefill of MUSIC-AVQA-shaped samples, each whole and with shared prefixes once, and how far
    their last logits differ (`prefill(batch, plan)` as in run_bench; LoRA installed)."""
    from mcub.models.modelcompose.prefix import pack_shared, shared_prefixes

    whole = model.pack(samples)
    groups = shared_prefixes(samples)
    shared = pack_shared(model, samples, groups)
    composed_s = seconds_per_call(lambda: prefill(whole, whole.plan), device, warmup, iterations)
    shared_s = seconds_per_call(lambda: model.prompt_logits(shared), device, warmup, iterations)
    difference, agreement = last_logit_agreement(model.prompt_logits(shared), prefill(whole, whole.plan))
    return {
        "composed_s": composed_s,
        "composed_shared_prefixes_s": shared_s,
        "shared_positions": [group.positions for group in groups],
        "samples_sharing": sum(len(group.rows) for group in groups),
        "shared_max_logit_difference": difference,
        "shared_argmax_agreement": agreement,
    }


def last_logit_agreement(found, expected) -> tuple[float, float]:
    """The largest |difference| of two batches' last logits, and the share of rows whose argmaxes agree."""
    found, expected = found.float(), expected.float()
    return float((found - expected).abs().max()), float((found.argmax(-1) == expected.argmax(-1)).float().mean())


def merged_routes_prefill(model, routes, batches, prefill, device: str, warmup: int, iterations: int
                          ) -> dict[int, Any]:  # fmt: skip
    """The composed prefill of each batch with its routes merged into one weight each (`route_weights: merged`),
    and how far its last logits are from the factored routes' (`prefill(batch, plan)` as in run_bench; LoRA
    installed, merged here)."""
    from mcub.models.modelcompose.merged_routes import merge_route_weights

    factored = {size: prefill(batch, batch.plan) for size, batch in batches.items()}
    merge_route_weights(model.llama.model.layers, model.state, routes)
    timed = {}
    for size, batch in batches.items():
        seconds = seconds_per_call(lambda b=batch: prefill(b, b.plan), device, warmup, iterations)
        difference, agreement = last_logit_agreement(prefill(batch, batch.plan), factored[size])
        timed[size] = {
            "merged_routes_s": seconds,
            "merged_max_logit_difference": difference,
            "merged_argmax_agreement": agreement,
        }
    return timed


def run_bench(shape_name: str, batch_sizes: list[int], device: str, dtype_name: str, warmup: int, iterations: int,
              music_avqa_batch_size: int = 0, merged_routes: bool = False):  # fmt: skip
    import torch

    from mcub.models.base import compute_dtype
    from mcub.models.modelcompose.llm import ComposedLM
    from mcub.models.modelcompose.lora import LANGUAGE, RoutePlan, RoutingState, install_routed_lora

    shape, layout = SHAPES[shape_name], LAYOUTS[shape_name]
    dtype = compute_dtype(dtype_name)
    llama = build_model(shape, device, dtype)
    state = RoutingState()
    model = ComposedLM(llama, state)
    batches = synthetic_batches(model, shape_name, batch_sizes, device, dtype)

    def prefill(batch, plan):
        return model.last_logits(batch, plan)

    dense = {
        size: seconds_per_call(lambda b=batch: prefill(b, None), device, warmup, iterations)
        for size, batch in batches.items()
    }
    if music_avqa_batch_size:
        music = music_avqa_spans(shape_name, music_avqa_batch_size, shape["hidden"], shape["vocab"], device, dtype)
        music_whole = model.pack(music)
        music_dense_s = seconds_per_call(lambda: prefill(music_whole, None), device, warmup, iterations)
    adapters, routes = damc_adapters(llama, shape["rank"], device, dtype)
    install_routed_lora(llama.model.layers, adapters, routes, state)
    del adapters
    composed = {size: seconds_per_call(lambda b=batch: prefill(b, b.plan), device, warmup, iterations)
                for size, batch in batches.items()}  # fmt: skip
    everywhere = {
        size: seconds_per_call(lambda b=batch: prefill(b, RoutePlan.everywhere(LANGUAGE, b.plan.total_rows)),
                               device, warmup, iterations)
        for size, batch in batches.items()
    }  # fmt: skip
    rows = []
    for size in batch_sizes:
        rows.append({
            "batch_size": size,
            "positions_per_sample": sum(length for _, length in layout),
            "dense_s": dense[size],
            "composed_damc_s": composed[size],
            "language_route_everywhere_s": everywhere[size],
            "dense_samples_per_s": size / dense[size],
            "composed_samples_per_s": size / composed[size],
            "composed_over_dense": composed[size] / dense[size],
            "everywhere_over_dense": everywhere[size] / dense[size],
        })  # fmt: skip
    cuda = device.startswith("cuda")
    music_avqa = None
    if music_avqa_batch_size:
        timed = music_avqa_prefill(model, music, prefill, device, warmup, iterations)
        dense_rate = music_avqa_batch_size / music_dense_s
        music_avqa = {
            "batch_size": music_avqa_batch_size,
            "questions_per_video": len(MUSIC_AVQA_QUESTION_TOKENS),
            "positions_per_sample": [sum(map(len, spans)) for spans in music],
            "dense_s": music_dense_s,
            **timed,
            "dense_samples_per_s": dense_rate,
            "composed_over_dense_samples_per_s": music_avqa_batch_size / timed["composed_s"] / dense_rate,
            "shared_over_dense_samples_per_s": music_avqa_batch_size / timed["composed_shared_prefixes_s"] / dense_rate,
        }
    if merged_routes:
        for row, (size, merged) in zip(rows, merged_routes_prefill(model, routes, batches, prefill, device, warmup,
                                                                   iterations).items(), strict=True):  # fmt: skip
            row |= merged | {"merged_over_dense": merged["merged_routes_s"] / dense[size]}
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "throughput_figures": cuda,
        **({} if cuda else {"note": CPU_NOTE}),
        "shape": shape_name,
        "dtype": dtype_name,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None,
        "rows": rows,
        "music_avqa": music_avqa,
    }
