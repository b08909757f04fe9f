"""The encoder benches: each encoder at full size or tiny, and Point-BERT's farthest-point sampling alone."""

from __future__ import annotations

from typing import Any

from mcub.throughput.synthetic import POINTS
from mcub.throughput.timing import seconds_per_call


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
