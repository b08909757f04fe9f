"""`python -m mcub.bench`: in one run on one device, with random weights (only shapes and routing matter for
time): the dense forward of an MCUB-4-shaped DAMC sample (3,380 positions, the roofline), the composed
(routed-LoRA) forward of the same shape, each encoder, and the end-to-end evaluation of an MCUB-4-format task
whose realistic media the bench writes (336 px images, 10 s 320x240 mp4 at 30 fps, 10 s wav, 8,192-point npy),
decoded by the real pipeline; and a MUSIC-AVQA-shaped prefill (four questions per video on the same video and audio)
with and without shared-prefix reuse, against the dense prefill of the same samples; and (`--fp8`, on by default)
the dense prefill in bfloat16 against FP8 projections (`--dtype fp8`), with their logits' agreement. Prints tables
and writes a JSON file with the device name, every time, samples/s and the ratios to the roofline. `--shape tiny`
scales all of it down (a 342-position sample, 1 s media, fewer iterations) to check in seconds on a CPU that the
bench runs; its figures are not throughput figures."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

SHAPES = {
    "7b": {"hidden": 4096, "intermediate": 11008, "layers": 32, "heads": 32, "vocab": 32000, "rank": 128},
    "tiny": {"hidden": 64, "intermediate": 128, "layers": 2, "heads": 4, "vocab": 400, "rank": 4},
}
# One MCUB-4 DAMC sample: text, then image 586, audio 42, video 2066 and point 523 positions (5 + 5 local tokens
# each), with the text between and after them; 3,380 positions in all.
MCUB4_LAYOUT = [
    ("language", 40),
    ("image", 586),
    ("language", 5),
    ("audio", 42),
    ("language", 5),
    ("video", 2066),
    ("language", 5),
    ("point", 523),
    ("language", 108),
]
LAYOUTS = {"7b": MCUB4_LAYOUT, "tiny": [(route, -(-length // 10)) for route, length in MCUB4_LAYOUT]}
"""The synthetic sample of each shape: MCUB-4's spans, over ten (rounded up: 342 positions) at the tiny shape."""
# A MUSIC-AVQA video+audio prompt up to its question: the system text and "USER: ", the video block (as in MCUB-4),
# the audio block, the newline; then questions of these lengths (" ASSISTANT:" included). Over ten at the tiny shape.
MUSIC_AVQA_LAYOUT = [("language", 40), ("video", 2066), ("language", 2), ("audio", 42), ("language", 2)]
MUSIC_AVQA_QUESTION_TOKENS = (14, 18, 22, 26)
MUSIC_AVQA_SCALE = {"7b": 1, "tiny": 10}
DEFAULTS: dict[str, dict[str, Any]] = {
    "7b": {
        "batch_sizes": "1,8",
        "warmup": 3,
        "iterations": 10,
        "encoder_batch_sizes": "8,32",
        "end_to_end": 64,
        "end_to_end_batch_size": 8,
        "workers": 4,
        "music_avqa_batch_size": 8,
        "dtype": "bfloat16",
        "threads": None,
        "new_tokens": 128,
        "merged_routes": True,
        "fp8": True,
    },
    "tiny": {
        "batch_sizes": "1,4",
        "warmup": 1,
        "iterations": 2,
        "encoder_batch_sizes": "4",
        "end_to_end": 8,
        "end_to_end_batch_size": 4,
        "workers": 2,
        "music_avqa_batch_size": 4,
        "dtype": "float32",
        "threads": 1,
        "new_tokens": 16,
        "merged_routes": True,
        "fp8": True,
    },
}
"""The command line's defaults at each shape: the tiny shape's check the bench's code paths quickly, in float32
(CPUs lack fast bfloat16 kernels) on one torch thread (its operations are too small to share out; threads
waiting on each other on a busy machine made it many times slower)."""
CPU_NOTE = "on CPU these times only show that the bench runs: they are not throughput figures"
EXPERTS = ("image", "video", "audio", "point")
POINTS = {"7b": 8192, "tiny": 1024}
"""Points per cloud at each shape (8,192: PointLLM's clouds)."""
REFERENCE_NAMES = {"image": "vision", "video": "video", "audio": "audio", "point": "point"}


def build_model(shape: dict[str, int], device: str, dtype):
    """A randomly initialised Llama of the given shape, directly on the device."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["heads"],
        max_position_embeddings=4096,
    )
    torch.manual_seed(0)
    with torch.device(device):
        llama = LlamaForCausalLM(config)
    return llama.to(dtype).eval()


def damc_adapters(llama, rank: int, device: str, dtype):
    """Four experts' language and modality LoRA factors on every projection, and DAMC routes (lambda 1/4)."""
    import torch

    from mcub.models.modelcompose.lora import LANGUAGE, TARGET_MODULES, LoraWeights, Route

    generator = torch.Generator(device=device).manual_seed(1)
    adapters = {}
    for index, layer in enumerate(llama.model.layers):
        for path in TARGET_MODULES:
            base = layer.get_submodule(path)
            own = {}
            for expert in EXPERTS:
                for name in (f"default-{REFERENCE_NAMES[expert]}", REFERENCE_NAMES[expert]):
                    a = torch.randn(rank, base.in_features, device=device, dtype=dtype, generator=generator) * 0.01
                    b = torch.randn(base.out_features, rank, device=device, dtype=dtype, generator=generator) * 0.01
                    own[name] = LoraWeights(a, b)
            adapters[(index, path)] = own
    routes = {LANGUAGE: Route(tuple((f"default-{REFERENCE_NAMES[e]}", 0.25 * 2.0) for e in EXPERTS))}
    routes |= {e: Route(((REFERENCE_NAMES[e], 2.0),)) for e in EXPERTS}
    return adapters, routes


def synthetic_spans(layout: list[tuple[str, int]], hidden: int, vocab: int, device: str, dtype, seed: int):
    import torch

    from mcub.models.modelcompose.llm import Span

    generator = torch.Generator().manual_seed(seed)
    spans = []
    for route, length in layout:
        if route == "language":
            spans.append(Span(route, token_ids=tuple(torch.randint(3, vocab, (length,), generator=generator).tolist())))
        else:
            block = (torch.randn(length, hidden, generator=generator) * 0.02).to(device=device, dtype=dtype)
            spans.append(Span(route, embeddings=block))
    return spans


def music_avqa_spans(shape_name: str, batch_size: int, hidden: int, vocab: int, device: str, dtype):
    """`batch_size` MUSIC-AVQA-shaped samples: each video's questions (four) share its video and audio blocks and the
    text before the question; every prompt starts with the same system text."""
    import torch

    from mcub.models.modelcompose.llm import Span

    scale = MUSIC_AVQA_SCALE[shape_name]
    layout = [(route, -(-length // scale)) for route, length in MUSIC_AVQA_LAYOUT]
    generator = torch.Generator().manual_seed(7)
    system = Span("language", token_ids=tuple(torch.randint(3, vocab, (layout[0][1],), generator=generator).tolist()))
    samples, video = [], []
    for row in range(batch_size):
        index, question = divmod(row, len(MUSIC_AVQA_QUESTION_TOKENS))
        if question == 0:
            video = [system, *synthetic_spans(layout[1:], hidden, vocab, device, dtype, seed=100 + index)]
        length = -(-MUSIC_AVQA_QUESTION_TOKENS[question] // scale)
        text = Span("language", token_ids=tuple(torch.randint(3, vocab, (length,), generator=generator).tolist()))
        samples.append([*video, text])
    return samples


def music_avqa_prefill(model, samples, prefill, device: str, warmup: int, iterations: int) -> dict[str, Any]:
    """The composed prefill of MUSIC-AVQA-shaped samples, each whole and with shared prefixes once, and how far
    their last logits differ (`prefill(batch, plan)` as in run_bench; LoRA installed)."""
    from mcub.models.modelcompose.prefix import pack_shared, shared_prefixes

    whole = model.pack(samples)
    groups = shared_prefixes(samples)
    shared = pack_shared(model, samples, groups)
    composed_s = seconds_per_call(lambda: prefill(whole, whole.plan), device, warmup, iterations)
    shared_s = seconds_per_call(lambda: model.prompt_logits(shared), device, warmup, iterations)
    reference, reused = prefill(whole, whole.plan).float(), model.prompt_logits(shared).float()
    return {
        "composed_s": composed_s,
        "composed_shared_prefixes_s": shared_s,
        "shared_positions": [group.positions for group in groups],
        "samples_sharing": sum(len(group.rows) for group in groups),
        "shared_max_logit_difference": float((reused - reference).abs().max()),
        "shared_argmax_agreement": float((reused.argmax(-1) == reference.argmax(-1)).float().mean()),
    }


def merged_routes_prefill(model, routes, batches, prefill, device: str, warmup: int, iterations: int
                          ) -> dict[int, Any]:  # fmt: skip
    """The composed prefill of each batch with its routes merged into one weight each (`route_weights: merged`),
    and how far its last logits are from the factored routes' (`prefill(batch, plan)` as in run_bench; LoRA
    installed, merged here)."""
    from mcub.models.modelcompose.merged_routes import merge_route_weights

    factored = {size: prefill(batch, batch.plan).float() for size, batch in batches.items()}
    merge_route_weights(model.llama.model.layers, model.state, routes)
    timed = {}
    for size, batch in batches.items():
        seconds = seconds_per_call(lambda b=batch: prefill(b, b.plan), device, warmup, iterations)
        merged = prefill(batch, batch.plan).float()
        timed[size] = {
            "merged_routes_s": seconds,
            "merged_max_logit_difference": float((merged - factored[size]).abs().max()),
            "merged_argmax_agreement": float((merged.argmax(-1) == factored[size].argmax(-1)).float().mean()),
        }
    return timed


def seconds_per_call(function, device: str, warmup: int, iterations: int) -> float:
    import torch

    for _ in range(warmup):
        function()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        function()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iterations


def synthetic_batches(model, shape_name: str, batch_sizes: list[int], device: str, dtype) -> dict[int, Any]:
    """The packed batch of each size: samples 0 to size - 1 of the shape's synthetic layout (each batch holds the
    smaller batches' samples)."""
    shape, layout = SHAPES[shape_name], LAYOUTS[shape_name]
    return {
        size: model.pack(
            [synthetic_spans(layout, shape["hidden"], shape["vocab"], device, dtype, i) for i in range(size)]
        )
        for size in batch_sizes
    }


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


def build_encoders(shape_name: str, device: str, dtype) -> dict[str, tuple[Any, Any]]:
    """Each encoder at full size ("7b") or tiny, randomly initialised, with a function making a batch of inputs."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from mcub.models.modelcompose import tiny
    from mcub.models.modelcompose.encoders.beats import BEATs, BEATsConfig
    from mcub.models.modelcompose.encoders.clip import ClipImageTower
    from mcub.models.modelcompose.encoders.languagebind_video import LanguageBindVideoConfig, LanguageBindVideoTower
    from mcub.models.modelcompose.encoders.pointbert import PointBERT, PointBERTConfig

    full = shape_name == "7b"
    vit = (
        {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16}
        if full
        else tiny.VIT_ENCODER
    )
    frames = 8
    points = POINTS[shape_name]
    with torch.device(device):
        clip = ClipImageTower(
            CLIPVisionModel(CLIPVisionConfig(**vit, image_size=336, patch_size=14 if full else tiny.CLIP_PATCH))
        )
        video = LanguageBindVideoTower(
            LanguageBindVideoConfig(**vit, image_size=224, patch_size=14 if full else tiny.VIDEO_PATCH,
                                    add_time_attn=True, num_frames=frames)
        )  # fmt: skip
        beats = BEATs(BEATsConfig() if full else BEATsConfig(**tiny.BEATS_ENCODER))
        point = PointBERT(PointBERTConfig() if full else PointBERTConfig(**tiny.POINT_ENCODER))

    def inputs(*shape):
        return lambda batch: torch.randn(batch, *shape, device=device, dtype=dtype)

    return {
        "image (CLIP ViT-L/14-336)": (clip, inputs(3, 336, 336)),
        "video (LanguageBind, 8 frames)": (video, inputs(3, frames, 224, 224)),
        "audio (BEATs, 1024 fbank frames)": (beats, inputs(1024, 128)),
        f"point (Point-BERT, {points} points)": (point, inputs(points, 6)),
    }


def encoder_throughput(shape_name: str, batch_sizes: list[int], device: str, dtype_name: str, warmup: int,
                       iterations: int) -> list[dict[str, Any]]:  # fmt: skip
    """Items per second of each encoder at each batch size."""
    import torch

    from mcub.models.base import compute_dtype

    dtype = compute_dtype(dtype_name)
    rows = []
    for name, (encoder, make) in build_encoders(shape_name, device, dtype).items():
        encoder = encoder.to(dtype).eval()
        for size in batch_sizes:
            batch = make(size)
            with torch.inference_mode():
                seconds = seconds_per_call(lambda e=encoder, b=batch: e(b), device, warmup, iterations)
            rows.append({"encoder": name, "batch_size": size, "seconds": seconds, "items_per_s": size / seconds})
        del encoder
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


def fps_timing(shape_name: str, batch_sizes: list[int], device: str, dtype_name: str, warmup: int,
               iterations: int) -> list[dict[str, Any]]:  # fmt: skip
    """Seconds per call of Point-BERT's farthest-point sampling alone at each batch size: the reference loop, and on
    CUDA the Triton kernel too, with whether their picks agree."""
    import torch

    from mcub.models.modelcompose import tiny
    from mcub.models.modelcompose.encoders.pointbert import PointBERTConfig, loop_farthest_point_sample

    count = PointBERTConfig().num_group if shape_name == "7b" else tiny.POINT_ENCODER["num_group"]
    generator = torch.Generator().manual_seed(0)
    rows = []
    for size in batch_sizes:
        xyz = torch.randn(size, POINTS[shape_name], 3, generator=generator).to(device, getattr(torch, dtype_name))
        paths = {"loop (reference)": loop_farthest_point_sample}
        if device.startswith("cuda"):
            from mcub.models.modelcompose.encoders import fps_kernel

            if fps_kernel.supports(xyz):
                paths["triton kernel"] = fps_kernel.kernel_farthest_point_sample
        reference = loop_farthest_point_sample(xyz, count, 0)
        for name, sample in paths.items():
            seconds = seconds_per_call(lambda s=sample, x=xyz: s(x, count, 0), device, warmup, iterations)
            same = torch.equal(sample(xyz, count, 0), reference)
            rows.append({"path": name, "batch_size": size, "points": xyz.shape[1], "count": count,
                         "seconds": seconds, "same_picks_as_loop": same})  # fmt: skip
    return rows


def write_bench_task(root: Path, samples: int, distinct: int, full: bool) -> Path:
    """An MCUB-4-format task under `root/data` whose samples cycle through `distinct` media sets."""
    from mcub.media import synthetic

    media = root / "data" / "bench"
    media.mkdir(parents=True, exist_ok=True)
    seconds, frames, points = (10.0, 300, 8192) if full else (1.0, 30, 1024)
    for index in range(distinct):
        synthetic.write_image(media / f"image-{index}.png", 336, 336, seed=index)
        synthetic.write_video(media / f"video-{index}.mp4", frames=frames, width=320, height=240, fps=30)
        synthetic.write_audio(media / f"audio-{index}.wav", seconds, 16_000, 1, 220.0 * (index + 1))
        synthetic.write_points(media / f"point-{index}.npy", points, 6, seed=index)
    prompt = (
        "image: <image>\naudio: <audio>\nvideo: <video>\npoint: <point>\n"
        "Which attribute do all of these inputs have in common?\nA. A dog\nB. Rain\nC. Music\nD. A car"
    )
    questions, answers = [], []
    for number in range(samples):
        index = number % distinct
        modal_inputs = {
            "vision": [f"data/bench/image-{index}.png"],
            "audio": [f"data/bench/audio-{index}.wav"],
            "video": [f"data/bench/video-{index}.mp4"],
            "point": [f"data/bench/point-{index}.npy"],
        }
        human = {"from": "human", "value": prompt}
        questions.append(
            {"id": number, "conversations": [human, {"from": "gpt", "value": None}], "modal_inputs": modal_inputs}
        )
        answers.append({"id": number, "conversations": [human, {"from": "gpt", "value": "ABCD"[number % 4]}]})
    (root / "data" / "test").mkdir(parents=True, exist_ok=True)
    (root / "data" / "test" / "MCUB-4.json").write_text(json.dumps(questions))
    (root / "data" / "test" / "MCUB-answer.json").write_text(json.dumps(answers))
    return root / "data"


def random_composition(llama, shape: dict[str, int], device: str, dtype):
    """A 4-way DAMC composition with random LoRA, projectors and local tokens of the released shapes."""
    import torch

    from mcub.models.modelcompose.compose import Composition, ModalityParts
    from mcub.models.modelcompose.projectors import build_projector

    adapters, routes = damc_adapters(llama, shape["rank"], device, dtype)
    full = shape["hidden"] == SHAPES["7b"]["hidden"]
    widths = {"image": 1024, "video": 1024, "audio": 768, "point": 384} if full else dict.fromkeys(EXPERTS, 32)
    kinds = {"image": "mlp2x_gelu", "video": "mlp2x_gelu", "audio": "qformer_32N_2L", "point": "mlp2x_gelu"}
    parts = {}
    for modality in EXPERTS:
        projector = build_projector(kinds[modality], widths[modality], shape["hidden"])
        local = [torch.randn(1, 5, shape["hidden"]) * 0.02 for _ in range(2)]
        parts[modality] = ModalityParts(
            kinds[modality], widths[modality], projector.state_dict(), *local, None, -2, modality
        )
    return Composition("damc", adapters, routes, parts)


def end_to_end(shape_name: str, root: Path, samples: int, batch_size: int, workers: int, device: str,
               dtype_name: str, new_tokens: int, profile: Path | None = None,
               route_weights: str = "factors") -> dict[str, Any]:  # fmt: skip
    """Samples/s of the real runner (decoding workers, encoders, composed prefill, first-character decoding), cold
    (every file decoded and encoded) and with a warm feature cache (no decoding, no encoder: what a rerun with
    other composition coefficients does), each answer at most `new_tokens` long, the model's routes applied as
    `route_weights` says. With `profile`, two more cold batches run under the torch profiler and its table goes to
    that file."""

    from mcub.data import DataPaths, load_task
    from mcub.models.base import Runtime, compute_dtype
    from mcub.models.feature_cache import FeatureCache
    from mcub.models.modelcompose.model import ModelComposeModel
    from mcub.models.modelcompose.tiny import CORPUS, train_llama_like_tokenizer
    from mcub.models.modelcompose.tokenization import ChunkTokenizer
    from mcub.runner.loop import RunSettings
    from mcub.tasks import load_registry

    full = shape_name == "7b"
    data_root = write_bench_task(root, samples, distinct=8 if full else 2, full=full)
    shape = dict(SHAPES[shape_name])
    tokenizer = ChunkTokenizer(train_llama_like_tokenizer(root / "tokenizer", CORPUS, 32000 - 400 if full else 0))
    shape["vocab"] = max(shape["vocab"], 32000 if full else 400)
    dtype = compute_dtype(dtype_name)
    llama = build_model(shape, device, dtype)
    composition = random_composition(llama, shape, device, dtype)
    encoders = {name.split()[0]: module for name, (module, _) in build_encoders(shape_name, device, dtype).items()}
    model = ModelComposeModel.from_parts(
        Runtime(device, dtype_name), composition, llama, tokenizer, encoders, route_weights=route_weights
    )
    [task] = load_registry().resolve(["mcub-4"])
    data = load_task(task, DataPaths(data_root=data_root, download=False))
    warm = RunSettings(batch_size, workers, limit=batch_size, pin_memory=device.startswith("cuda"))
    run_paper(model, data, warm, new_tokens, root / "warmup")
    result = {"samples": samples, "batch_size": batch_size, "workers": workers, "new_tokens": new_tokens,
              "route_weights": route_weights}  # fmt: skip
    every = replace(warm, limit=None)
    result |= _timed_run(model, data, every, new_tokens, root / "cold")
    model.feature_cache = FeatureCache(root / "features", {m: f"bench-random-{m}" for m in model.modalities})
    run_paper(model, data, every, new_tokens, root / "priming")
    result["warm_feature_cache"] = _timed_run(model, data, every, new_tokens, root / "cached")
    if profile is not None:
        model.feature_cache = None
        settings = replace(warm, limit=2 * batch_size)
        result["profile"] = profile_run(model, data, settings, new_tokens, root / "profiled", profile)
    return result


def run_paper(model, data, settings, new_tokens: int, records_dir: Path, around_batch=None) -> None:
    """The runner on the task under the `paper` protocol (first-character stop; 128 new tokens at most in the
    paper, `new_tokens` here), alone."""
    from mcub.protocols import get_protocol
    from mcub.runner.distributed import Distributed
    from mcub.runner.loop import Query, run_task

    protocol = get_protocol("paper")
    query = Query(data.task, protocol, protocol.decoding(data.task, new_tokens))
    run_task(model, data, query, settings, records_dir, Distributed(), progress=False, around_batch=around_batch)


def labelled_modules(model) -> dict[str, Any]:
    """The model's modules whose forward passes the profile labels, by label: each encoder and projector, and the
    LLM (one forward per prefill and per new token)."""
    modules = {f"mcub encoder {m}": encoder for m, encoder in model.encoders.items()}
    modules |= {f"mcub projector {m}": projector for m, projector in model.projectors.items()}
    modules["mcub llm forward (prefill, then one per new token)"] = model.lm.llama.model
    return modules


def profile_run(model, data, settings, new_tokens: int, records_dir: Path, table: Path) -> dict[str, Any]:
    """One run under the torch profiler, its stages labelled through forward hooks of the model's modules and the
    runner's batch scope (`mcub batch`: prepare and answer one batch); writes the operator table (by device time,
    or host time without CUDA) to `table` and returns each stage's host and device milliseconds."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    cuda = str(model.lm.device).startswith("cuda")
    open_labels: list[Any] = []

    def enter(label):
        def hook(module, args):
            scope = record_function(label)
            scope.__enter__()
            open_labels.append(scope)

        return hook

    def leave(module, args, output):
        open_labels.pop().__exit__(None, None, None)

    handles = []
    for label, module in labelled_modules(model).items():
        handles += [module.register_forward_pre_hook(enter(label)), module.register_forward_hook(leave)]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    try:
        with profile(activities=activities) as profiler:
            run_paper(model, data, settings, new_tokens, records_dir, lambda items: record_function("mcub batch"))
            if cuda:
                torch.cuda.synchronize()
    finally:
        for handle in handles:
            handle.remove()
    averages = profiler.key_averages()
    sort_by = "self_device_time_total" if cuda else "self_cpu_time_total"
    table.write_text(averages.table(sort_by=sort_by, row_limit=40) + "\n")
    return {
        event.key: {
            "host_ms": event.cpu_time_total / 1000,
            "device_ms": getattr(event, "device_time_total", 0) / 1000,
            "calls": event.count,
        }
        for event in averages
        if event.key.startswith("mcub ")
    }


def _timed_run(model, data, settings, new_tokens: int, records_dir: Path) -> dict[str, Any]:
    """Wall time of one run of the task, the part after the first batch reached the model (without worker start
    and the first batch's decoding), and the per-sample times in the records."""
    import torch

    first_batch: list[float] = []

    def note_first_batch(items):
        if not first_batch:
            first_batch.append(time.perf_counter())
        return nullcontext()

    cuda = str(model.lm.device).startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    run_paper(model, data, settings, new_tokens, records_dir, note_first_batch)
    if cuda:
        torch.cuda.synchronize()
    end = time.perf_counter()
    records = [json.loads(line) for line in (records_dir / f"{data.task.name}.jsonl").read_text().splitlines()]
    errors = [record["error"] for record in records if record["error"]]
    if errors:
        raise RuntimeError(f"end-to-end bench: {len(errors)} sample(s) failed, e.g. {errors[0]}")
    return {
        "seconds": end - start,
        "samples_per_s": len(records) / (end - start),
        "seconds_before_first_batch": first_batch[0] - start,
        "samples_per_s_after_first_batch": len(records) / (end - first_batch[0]),
        "mean_decode_s_per_sample": sum(r["timing"]["decode_s"] for r in records) / len(records),
        "mean_model_s_per_sample": sum(r["timing"]["model_s"] for r in records) / len(records),
        "media_from_feature_cache": sum(m.get("features") == "cache" for r in records for m in r["media"])
        / sum(len(r["media"]) for r in records),
    }


def end_to_end_ratios(result: dict[str, Any], e2e: dict[str, Any]) -> dict[str, Any]:
    """The end-to-end throughputs over the dense prefill's at the same batch size, and what the device work alone
    would allow: the composed prefill (with the run's route weights) plus, when they were timed at that batch size,
    the four encoders, and each run's throughput as a fraction of that limit (of the composed prefill's alone for
    the warm feature cache run, which runs no encoder)."""
    size = e2e["batch_size"]
    row = next(row for row in result["rows"] if row["batch_size"] == size)
    dense = row["dense_samples_per_s"]
    ratios = {
        "over_dense_prefill": e2e["samples_per_s"] / dense,
        "after_first_batch_over_dense_prefill": e2e["samples_per_s_after_first_batch"] / dense,
        "cached_over_dense_prefill": e2e["warm_feature_cache"]["samples_per_s"] / dense,
        "cached_after_first_batch_over_dense_prefill": e2e["warm_feature_cache"]["samples_per_s_after_first_batch"]
        / dense,
    }
    encoders = [r["seconds"] / size for r in result.get("encoders", []) if r["batch_size"] == size]
    if len(encoders) == len(EXPERTS):
        composed = row["merged_routes_s" if e2e["route_weights"] == "merged" else "composed_damc_s"]
        device_s = composed / size + sum(encoders)
        ratios["device_bound_over_dense_prefill"] = 1 / device_s / dense
        ratios["over_device_bound"] = e2e["samples_per_s"] * device_s
        ratios["cached_over_device_bound"] = e2e["warm_feature_cache"]["samples_per_s"] * composed / size
    return ratios


def print_table(result: dict[str, Any], out=None) -> None:
    out = out or sys.stdout
    print(f"device: {result['device']}  shape: {result['shape']}  dtype: {result['dtype']}", file=out)
    if "note" in result:
        print(f"note: {result['note']}", file=out)
    print("| batch | dense s | composed DAMC s | ratio | language-everywhere s | ratio | dense samples/s |", file=out)
    print("|---:|---:|---:|---:|---:|---:|---:|", file=out)
    for row in result["rows"]:
        print(
            f"| {row['batch_size']} | {row['dense_s']:.4f} | {row['composed_damc_s']:.4f} | "
            f"{row['composed_over_dense']:.3f} | {row['language_route_everywhere_s']:.4f} | "
            f"{row['everywhere_over_dense']:.3f} | {row['dense_samples_per_s']:.2f} |",
            file=out,
        )
    if any("merged_routes_s" in row for row in result["rows"]):
        print("routes merged into one weight each (`route_weights: merged`), against the dense and factored prefill:",
              file=out)  # fmt: skip
        print("| batch | merged routes s | ratio to dense | max logit difference | argmax agreement |", file=out)
        print("|---:|---:|---:|---:|---:|", file=out)
        for row in result["rows"]:
            print(
                f"| {row['batch_size']} | {row['merged_routes_s']:.4f} | {row['merged_over_dense']:.3f} | "
                f"{row['merged_max_logit_difference']:.2e} | {row['merged_argmax_agreement']:.3f} |",
                file=out,
            )
    if result.get("music_avqa"):
        music = result["music_avqa"]
        print(
            f"MUSIC-AVQA-shaped prefill: batch {music['batch_size']}, {music['questions_per_video']} questions per "
            f"video, {music['samples_sharing']} samples sharing prefixes of {music['shared_positions']} positions "
            f"(max logit difference {music['shared_max_logit_difference']:.2e}, argmax agreement "
            f"{music['shared_argmax_agreement']:.3f}), samples/s as a ratio to the dense prefill's:",
            file=out,
        )
        print("| prefill | s | samples/s over dense |", file=out)
        print("|---|---:|---:|", file=out)
        for name, seconds, ratio in (
            ("dense", music["dense_s"], 1.0),
            ("composed DAMC", music["composed_s"], music["composed_over_dense_samples_per_s"]),
            ("composed DAMC, shared prefixes", music["composed_shared_prefixes_s"],
             music["shared_over_dense_samples_per_s"]),
        ):  # fmt: skip
            print(f"| {name} | {seconds:.4f} | {ratio:.3f} |", file=out)
    if result.get("fp8_prefill"):
        print_fp8_prefill(result["fp8_prefill"], out)
    if result.get("end_to_end"):
        e2e = result["end_to_end"]
        cached = e2e["warm_feature_cache"]
        print(
            f"end to end: {e2e['samples']} MCUB-4 samples, batch {e2e['batch_size']}, {e2e['workers']} workers, "
            f"route weights {e2e['route_weights']}, "
            "as a ratio to the dense prefill throughput:",
            file=out,
        )
        print("| run | samples/s | ratio | after the first batch: samples/s | ratio | s before it |", file=out)
        print("|---|---:|---:|---:|---:|---:|", file=out)
        for name, run, prefix in (("cold", e2e, ""), ("warm feature cache", cached, "cached_")):
            print(
                f"| {name} | {run['samples_per_s']:.2f} | {e2e[prefix + 'over_dense_prefill']:.3f} | "
                f"{run['samples_per_s_after_first_batch']:.2f} | "
                f"{e2e[prefix + 'after_first_batch_over_dense_prefill']:.3f} | "
                f"{run['seconds_before_first_batch']:.2f} |",
                file=out,
            )
        if "device_bound_over_dense_prefill" in e2e:
            print(
                f"the composed prefill plus the four encoders alone allow {e2e['device_bound_over_dense_prefill']:.3f}"
                f" of the dense prefill throughput: the cold run reaches {e2e['over_device_bound']:.3f} of that limit,"
                f" the warm feature cache run {e2e['cached_over_device_bound']:.3f} of the composed prefill's alone;"
                f" decoding takes {e2e['mean_decode_s_per_sample']:.3f} s/sample in the workers",
                file=out,
            )
    if result.get("encoders"):
        print("| encoder | batch | s | items/s |", file=out)
        print("|---|---:|---:|---:|", file=out)
        for row in result["encoders"]:
            print(
                f"| {row['encoder']} | {row['batch_size']} | {row['seconds']:.4f} | {row['items_per_s']:.1f} |",
                file=out,
            )
    if result.get("fps"):
        print("| Point-BERT FPS alone | batch | points | picks | s | same picks as the loop |", file=out)
        print("|---|---:|---:|---:|---:|---|", file=out)
        for row in result["fps"]:
            print(
                f"| {row['path']} | {row['batch_size']} | {row['points']} | {row['count']} | {row['seconds']:.4f} | "
                f"{row['same_picks_as_loop']} |",
                file=out,
            )


def print_fp8_prefill(fp8: dict[str, Any], out) -> None:
    print(
        f"FP8 prefill ({fp8['gemm']}; {fp8['scales']}) against bfloat16, dense: over {fp8['positions']} positions, "
        f"logit cosine {fp8['logit_cosine_mean']:.5f} (least {fp8['logit_cosine_min']:.5f}), max logit difference "
        f"{fp8['max_logit_difference']:.3g}, argmax agreement {fp8['argmax_agreement']:.4f}",
        file=out,
    )
    print("| batch | bf16 dense s | FP8 dense s | bf16 s / FP8 s | FP8 samples/s |", file=out)
    print("|---:|---:|---:|---:|---:|", file=out)
    for row in fp8["rows"]:
        print(
            f"| {row['batch_size']} | {row['bf16_dense_s']:.4f} | {row['fp8_dense_s']:.4f} | "
            f"{row['bf16_over_fp8']:.3f} | {row['fp8_samples_per_s']:.2f} |",
            file=out,
        )


def _by_shape(name: str, more: str = "") -> str:
    return "default " + "; ".join(f"{shape}: {defaults[name]}" for shape, defaults in DEFAULTS.items()) + more


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcub.bench", description=__doc__)
    parser.add_argument("--shape", choices=list(SHAPES), default="7b")
    parser.add_argument("--batch-sizes", help=_by_shape("batch_sizes"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], help=_by_shape("dtype"))
    parser.add_argument("--threads", type=int, help=_by_shape("threads", " torch threads (None: torch's default)"))
    parser.add_argument("--warmup", type=int, help=_by_shape("warmup"))
    parser.add_argument("--iterations", type=int, help=_by_shape("iterations"))
    parser.add_argument("--encoder-batch-sizes", help=_by_shape("encoder_batch_sizes", " (empty: none)"))
    parser.add_argument("--end-to-end", type=int, help=_by_shape("end_to_end", " samples (0: none)"))
    parser.add_argument("--end-to-end-batch-size", type=int, help=_by_shape("end_to_end_batch_size"))
    parser.add_argument(
        "--end-to-end-route-weights", choices=["factors", "merged"], default="factors",
        help="how the end-to-end model applies its routes (merged: compare it with the merged-routes prefill)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, help=_by_shape("workers", " (at most the CPU cores)"))
    parser.add_argument(
        "--music-avqa-batch-size", type=int, help=_by_shape("music_avqa_batch_size", " (0: no MUSIC-AVQA prefill)")
    )
    parser.add_argument("--new-tokens", type=int, help=_by_shape("new_tokens", " at most per end-to-end answer"))
    parser.add_argument(
        "--merged-routes",
        action=argparse.BooleanOptionalAction,
        help=_by_shape("merged_routes", " (time the routes merged into one weight each, after the factored ones;"
                       " at 7b, one more copy of the projections per route: about 65 GB more)"),
    )  # fmt: skip
    parser.add_argument(
        "--fp8",
        action=argparse.BooleanOptionalAction,
        help=_by_shape("fp8", ": the dense prefill in bfloat16 against FP8 projections (`--dtype fp8`)"),
    )
    parser.add_argument("--json", type=Path, default=Path("bench.json"))
    parser.add_argument("--profile", type=Path, help="write the torch profiler table of two end-to-end batches here")
    args = parser.parse_args(argv)
    for name, value in DEFAULTS[args.shape].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.end_to_end and args.end_to_end_route_weights == "merged" and not args.merged_routes:
        parser.error(
            "--end-to-end-route-weights merged is compared with the merged-routes prefill: drop --no-merged-routes"
        )
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or threads)
    try:
        result = run_all(args, min(args.workers, os.cpu_count() or 1))
    finally:
        torch.set_num_threads(threads)
    print_table(result)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def run_all(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    """Every part of the bench that the arguments ask for."""
    sizes = sorted(
        {int(size) for size in args.batch_sizes.split(",")}
        | ({args.end_to_end_batch_size} if args.end_to_end else set())
    )
    result = run_bench(
        args.shape, sizes, args.device, args.dtype, args.warmup, args.iterations, args.music_avqa_batch_size,
        args.merged_routes,
    )  # fmt: skip
    if args.fp8:
        result["fp8_prefill"] = fp8_prefill_bench(args.shape, sizes, args.device, args.warmup, args.iterations)
    encoder_sizes = [int(size) for size in args.encoder_batch_sizes.split(",") if size]
    if encoder_sizes:
        result["encoders"] = encoder_throughput(
            args.shape, encoder_sizes, args.device, args.dtype, args.warmup, args.iterations
        )
        result["fps"] = fps_timing(args.shape, encoder_sizes, args.device, args.dtype, args.warmup, args.iterations)
    if args.end_to_end:
        import gc
        import tempfile

        gc.collect()
        with tempfile.TemporaryDirectory(prefix="mcub-bench-") as root:
            e2e = end_to_end(args.shape, Path(root), args.end_to_end, args.end_to_end_batch_size, workers,
                             args.device, args.dtype, args.new_tokens, args.profile,
                             args.end_to_end_route_weights)  # fmt: skip
        result["end_to_end"] = e2e | end_to_end_ratios(result, e2e)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
