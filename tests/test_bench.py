import io
import json

import pytest
import torch

from mcub.bench import main
from mcub.throughput.encoders import fps_timing
from mcub.throughput.fp8 import logit_agreement
from mcub.throughput.synthetic import LAYOUTS, MCUB4_LAYOUT
from mcub.throughput.tables import print_table
from mcub.throughput.timing import CPU_NOTE


def test_bench_runs_the_tiny_shape_and_writes_its_ratios(tmp_path, capsys):
    out = tmp_path / "bench.json"
    arguments = ["--shape", "tiny", "--device", "cpu", "--dtype", "float32", "--batch-sizes", "1,2"]
    arguments += ["--warmup", "0", "--iterations", "1", "--encoder-batch-sizes", "2", "--json", str(out)]
    arguments += ["--end-to-end", "4", "--end-to-end-batch-size", "2", "--workers", "0"]
    arguments += ["--end-to-end-route-weights", "merged"]
    arguments += ["--profile", str(tmp_path / "profile.txt")]
    assert main(arguments) == 0
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and [row["batch_size"] for row in result["rows"]] == [1, 2]
    assert result["throughput_figures"] is False and result["note"] == CPU_NOTE and result["torch_threads"] == 1
    assert LAYOUTS["7b"] is MCUB4_LAYOUT and sum(length for _, length in MCUB4_LAYOUT) == 3380
    assert [route for route, _ in LAYOUTS["tiny"]] == [route for route, _ in MCUB4_LAYOUT]
    assert [length for _, length in LAYOUTS["tiny"]] == [4, 59, 1, 5, 1, 207, 1, 53, 11]
    for row in result["rows"]:
        assert row["positions_per_sample"] == 342
        assert row["composed_over_dense"] == row["composed_damc_s"] / row["dense_s"]
        assert row["merged_over_dense"] == row["merged_routes_s"] / row["dense_s"]
        assert row["merged_max_logit_difference"] < 1e-4 and row["merged_argmax_agreement"] == 1.0
    assert [row["encoder"].split()[0] for row in result["encoders"]] == ["image", "video", "audio", "point"]
    assert all(row["items_per_s"] == 2 / row["seconds"] for row in result["encoders"])
    e2e = result["end_to_end"]
    assert e2e["samples"] == 4 and e2e["samples_per_s"] == 4 / e2e["seconds"]
    dense = result["rows"][1]["dense_samples_per_s"]
    assert e2e["over_dense_prefill"] == e2e["samples_per_s"] / dense
    cached = e2e["warm_feature_cache"]
    assert e2e["media_from_feature_cache"] == 0 and cached["media_from_feature_cache"] == 1
    assert cached["samples_per_s"] == 4 / cached["seconds"] and 0 < cached["seconds_before_first_batch"]
    assert e2e["cached_after_first_batch_over_dense_prefill"] == cached["samples_per_s_after_first_batch"] / dense
    assert e2e["route_weights"] == "merged"
    composed = result["rows"][1]["merged_routes_s"] / 2
    encoders = sum(row["seconds"] / 2 for row in result["encoders"])
    assert e2e["device_bound_over_dense_prefill"] == 1 / (composed + encoders) / dense
    assert e2e["over_device_bound"] == pytest.approx(e2e["samples_per_s"] * (composed + encoders))
    assert e2e["cached_over_device_bound"] == pytest.approx(cached["samples_per_s"] * composed)
    assert "aten::" in (tmp_path / "profile.txt").read_text()
    stages = e2e["profile"]
    assert {f"mcub encoder {m}" for m in ("image", "video", "audio", "point")} < set(stages)
    assert {f"mcub projector {m}" for m in ("image", "video", "audio", "point")} < set(stages)
    assert stages["mcub batch"]["calls"] == 2 and stages["mcub batch"]["host_ms"] > 0
    assert stages["mcub llm forward (prefill, then one per new token)"]["calls"] >= 2
    music = result["music_avqa"]
    assert music["batch_size"] == 4 and music["questions_per_video"] == 4
    assert music["positions_per_sample"] == [218 + 2, 218 + 2, 218 + 3, 218 + 3]  # questions of 14 to 26 over ten
    assert music["shared_positions"] == [4 + 207 + 1 + 5 + 1] and music["samples_sharing"] == 4
    assert music["shared_max_logit_difference"] < 1e-5 and music["shared_argmax_agreement"] == 1.0
    assert music["dense_samples_per_s"] == 4 / music["dense_s"]
    shared_rate = 4 / music["composed_shared_prefixes_s"]
    assert music["shared_over_dense_samples_per_s"] == pytest.approx(shared_rate / music["dense_samples_per_s"])
    composed_rate = 4 / music["composed_s"]
    assert music["composed_over_dense_samples_per_s"] == pytest.approx(composed_rate / music["dense_samples_per_s"])
    fp8 = result["fp8_prefill"]
    assert fp8["gemm"] == "emulated" and fp8["positions"] == 2 * 342  # the largest batch's positions
    assert [row["batch_size"] for row in fp8["rows"]] == [1, 2]
    assert all(row["bf16_over_fp8"] == row["bf16_dense_s"] / row["fp8_dense_s"] for row in fp8["rows"])
    assert all(row["fp8_samples_per_s"] == row["batch_size"] / row["fp8_dense_s"] for row in fp8["rows"])
    assert 0.99 < fp8["logit_cosine_min"] <= fp8["logit_cosine_mean"] < 1 and 0 < fp8["max_logit_difference"] < 0.1
    assert 0.9 < fp8["argmax_agreement"] <= 1
    out = capsys.readouterr().out
    assert "| 1 |" in out and "| warm feature cache |" in out and f"note: {CPU_NOTE}" in out
    assert "| composed DAMC, shared prefixes |" in out
    assert "FP8 prefill (emulated; " in out and "| batch | bf16 dense s | FP8 dense s |" in out
    assert "routes merged into one weight each" in out


def test_the_merged_end_to_end_needs_the_merged_prefill(capsys):
    with pytest.raises(SystemExit):
        main(["--shape", "tiny", "--end-to-end-route-weights", "merged", "--no-merged-routes"])
    assert "drop --no-merged-routes" in capsys.readouterr().err


def test_fps_timing_on_cpu_times_the_reference_loop_alone_and_prints_it():
    rows = fps_timing("tiny", [1, 3], "cpu", "float32", warmup=0, iterations=1)
    assert [(row["path"], row["batch_size"]) for row in rows] == [("loop (reference)", 1), ("loop (reference)", 3)]
    assert all(row["points"] == 1024 and row["count"] == 32 and row["same_picks_as_loop"] for row in rows)
    assert all(row["seconds"] > 0 for row in rows)
    out = io.StringIO()
    print_table({"device": "cpu", "shape": "tiny", "dtype": "float32", "rows": [], "fps": rows}, out)
    assert "| loop (reference) | 3 | 1024 | 32 |" in out.getvalue()


def test_the_logit_agreement_is_taken_in_chunks_over_the_unpadded_positions():
    generator = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    reference = torch.randn(2, 5, 8, generator=generator)
    hidden = reference + 0.05 * torch.randn(2, 5, 8, generator=generator)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    hidden[0, :2] = 1e6  # padding: never compared
    whole = logit_agreement(head, reference, hidden, mask)
    assert logit_agreement(head, reference, hidden, mask, chunk_positions=3) == pytest.approx(whole)
    with torch.no_grad():
        expected, found = head(reference[mask.bool()]), head(hidden[mask.bool()])
    assert whole["positions"] == 8
    assert whole["max_logit_difference"] == pytest.approx(float((found - expected).abs().max()))
    cosine = torch.nn.functional.cosine_similarity(found, expected, dim=-1)
    assert whole["logit_cosine_mean"] == pytest.approx(float(cosine.mean()))
    assert whole["logit_cosine_min"] == pytest.approx(float(cosine.min()))
    assert whole["argmax_agreement"] == float((found.argmax(-1) == expected.argmax(-1)).float().mean())
    same = logit_agreement(head, reference, reference, mask)
    assert same["max_logit_difference"] == 0 and same["argmax_agreement"] == 1
