"""The bench's printed tables (Markdown), one per part of its result dictionary."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO


def markdown_table(out: TextIO, header: Sequence[str], rows: Iterable[Sequence[object]], text_columns: int = 1) -> None:
    """A Markdown table: the first `text_columns` columns left-aligned, the figures right-aligned."""
    print("| " + " | ".join(header) + " |", file=out)
    print("|" + "|".join("---" if index < text_columns else "---:" for index in range(len(header))) + "|", file=out)
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |", file=out)


def print_table(result: dict[str, Any], out: TextIO | None = None) -> None:
    """Every part of the result that the bench ran, in order."""
    out = out or sys.stdout
    print(f"device: {result['device']}  shape: {result['shape']}  dtype: {result['dtype']}", file=out)
    if "note" in result:
        print(f"note: {result['note']}", file=out)
    prefill_table(result["rows"], out)
    if any("merged_routes_s" in row for row in result["rows"]):
        merged_routes_table(result["rows"], out)
    for part, table in (
        ("music_avqa", music_avqa_table),
        ("fp8_prefill", fp8_prefill_table),
        ("end_to_end", end_to_end_table),
        ("encoders", encoder_table),
        ("fps", fps_table),
    ):
        if result.get(part):
            table(result[part], out)


def prefill_table(rows: list[dict[str, Any]], out: TextIO) -> None:
    header = ["batch", "dense s", "composed DAMC s", "ratio", "language-everywhere s", "ratio", "dense samples/s"]
    markdown_table(out, header, (
        [row["batch_size"], f"{row['dense_s']:.4f}", f"{row['composed_damc_s']:.4f}",
         f"{row['composed_over_dense']:.3f}", f"{row['language_route_everywhere_s']:.4f}",
         f"{row['everywhere_over_dense']:.3f}", f"{row['dense_samples_per_s']:.2f}"]
        for row in rows
    ), text_columns=0)  # fmt: skip


def merged_routes_table(rows: list[dict[str, Any]], out: TextIO) -> None:
    print("routes merged into one weight each (`route_weights: merged`), against the dense and factored prefill:",
          file=out)  # fmt: skip
    header = ["batch", "merged routes s", "ratio to dense", "max logit difference", "argmax agreement"]
    markdown_table(out, header, (
        [row["batch_size"], f"{row['merged_routes_s']:.4f}", f"{row['merged_over_dense']:.3f}",
         f"{row['merged_max_logit_difference']:.2e}", f"{row['merged_argmax_agreement']:.3f}"]
        for row in rows
    ), text_columns=0)  # fmt: skip


def music_avqa_table(music: dict[str, Any], out: TextIO) -> None:
    print(
        f"MUSIC-AVQA-shaped prefill: batch {music['batch_size']}, {music['questions_per_video']} questions per "
        f"video, {music['samples_sharing']} samples sharing prefixes of {music['shared_positions']} positions "
        f"(max logit difference {music['shared_max_logit_difference']:.2e}, argmax agreement "
        f"{music['shared_argmax_agreement']:.3f}), samples/s as a ratio to the dense prefill's:",
        file=out,
    )
    markdown_table(out, ["prefill", "s", "samples/s over dense"], (
        [name, f"{seconds:.4f}", f"{ratio:.3f}"]
        for name, seconds, ratio in (
            ("dense", music["dense_s"], 1.0),
            ("composed DAMC", music["composed_s"], music["composed_over_dense_samples_per_s"]),
            ("composed DAMC, shared prefixes", music["composed_shared_prefixes_s"],
             music["shared_over_dense_samples_per_s"]),
        )
    ))  # fmt: skip


def fp8_prefill_table(fp8: dict[str, Any], out: TextIO) -> None:
    print(
        f"FP8 prefill ({fp8['gemm']}; {fp8['scales']}) against bfloat16, dense: over {fp8['positions']} positions, "
        f"logit cosine {fp8['logit_cosine_mean']:.5f} (least {fp8['logit_cosine_min']:.5f}), max logit difference "
        f"{fp8['max_logit_difference']:.3g}, argmax agreement {fp8['argmax_agreement']:.4f}",
        file=out,
    )
    markdown_table(out, ["batch", "bf16 dense s", "FP8 dense s", "bf16 s / FP8 s", "FP8 samples/s"], (
        [row["batch_size"], f"{row['bf16_dense_s']:.4f}", f"{row['fp8_dense_s']:.4f}", f"{row['bf16_over_fp8']:.3f}",
         f"{row['fp8_samples_per_s']:.2f}"]
        for row in fp8["rows"]
    ), text_columns=0)  # fmt: skip


def end_to_end_table(e2e: dict[str, Any], out: TextIO) -> None:
    print(
        f"end to end: {e2e['samples']} MCUB-4 samples, batch {e2e['batch_size']}, {e2e['workers']} workers, "
        f"route weights {e2e['route_weights']}, as a ratio to the dense prefill throughput:",
        file=out,
    )
    header = ["run", "samples/s", "ratio", "after the first batch: samples/s", "ratio", "s before it"]
    cached = e2e["warm_feature_cache"]
    markdown_table(out, header, (
        [name, f"{run['samples_per_s']:.2f}", f"{e2e[prefix + 'over_dense_prefill']:.3f}",
         f"{run['samples_per_s_after_first_batch']:.2f}",
         f"{e2e[prefix + 'after_first_batch_over_dense_prefill']:.3f}", f"{run['seconds_before_first_batch']:.2f}"]
        for name, run, prefix in (("cold", e2e, ""), ("warm feature cache", cached, "cached_"))
    ))  # fmt: skip
    if "device_bound_over_dense_prefill" in e2e:
        print(
            f"the composed prefill plus the four encoders alone allow {e2e['device_bound_over_dense_prefill']:.3f}"
            f" of the dense prefill throughput: the cold run reaches {e2e['over_device_bound']:.3f} of that limit,"
            f" the warm feature cache run {e2e['cached_over_device_bound']:.3f} of the composed prefill's alone;"
            f" decoding takes {e2e['mean_decode_s_per_sample']:.3f} s/sample in the workers",
            file=out,
        )


def encoder_table(rows: list[dict[str, Any]], out: TextIO) -> None:
    markdown_table(out, ["encoder", "batch", "s", "items/s"], (
        [row["encoder"], row["batch_size"], f"{row['seconds']:.4f}", f"{row['items_per_s']:.1f}"] for row in rows
    ))  # fmt: skip


def fps_table(rows: list[dict[str, Any]], out: TextIO) -> None:
    header = ["Point-BERT FPS alone", "batch", "points", "picks", "s", "same picks as the loop"]
    markdown_table(out, header, (
        [row["path"], row["batch_size"], row["points"], row["count"], f"{row['seconds']:.4f}",
         row["same_picks_as_loop"]]
        for row in rows
    ))  # fmt: skip
