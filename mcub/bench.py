"""`python -m mcub.bench`: in one run on one device, with random weights (only shapes and routing matter for
time; the benches are in `mcub/throughput/`): the dense forward of an MCUB-4-shaped DAMC sample (3,380 positions,
the roofline), the composed (routed-LoRA) forward of the same shape, factored and (`--merged-routes`, on by
default) with its routes merged into one weight each; a MUSIC-AVQA-shaped prefill (four questions per video on the
same video and audio) with and without shared-prefix reuse, against the dense prefill of the same samples;
(`--fp8`, on by default) the dense prefill in bfloat16 against FP8 projections (`--dtype fp8`), with their logits'
agreement; each encoder, and Point-BERT's farthest-point sampling alone; and the end-to-end evaluation of an
MCUB-4-format task whose realistic media the bench writes (336 px images, 10 s 320x240 mp4 at 30 fps, 10 s wav,
8,192-point npy), decoded by the real pipeline, against the dense prefill and the device-bound limit. Prints tables
and writes a JSON file with the device name, every time, samples/s and the ratios to the roofline. `--shape tiny`
scales all of it down (a 342-position sample, 1 s media, fewer iterations) to check in seconds on a CPU that the
bench runs; its figures are not throughput figures."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from mcub.throughput.encoders import encoder_throughput, fps_timing
from mcub.throughput.end_to_end import end_to_end, end_to_end_ratios
from mcub.throughput.fp8 import fp8_prefill_bench
from mcub.throughput.prefill import run_bench
from mcub.throughput.synthetic import SHAPES
from mcub.throughput.tables import print_table

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
                       " at 7b, five copies of the projections in place of one: about 52 GB more)"),
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
