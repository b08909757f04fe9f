"""The end-to-end bench: the real runner on an MCUB-4-format task whose media it writes, cold and with a warm
feature cache, and its throughput against the dense prefill and the device-bound limit."""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from mcub.throughput.encoders import build_encoders
from mcub.throughput.profile import profile_run
from mcub.throughput.synthetic import EXPERTS, SHAPES, build_model, damc_adapters


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
        result["profile"] = profile_run(
            model, lambda around: run_paper(model, data, settings, new_tokens, root / "profiled", around), profile
        )
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
