import json

from mcub.bench import MCUB4_LAYOUT, main


def test_bench_runs_the_tiny_shape_and_writes_its_ratios(tmp_path, capsys):
    out = tmp_path / "bench.json"
    arguments = ["--shape", "tiny", "--device", "cpu", "--dtype", "float32", "--batch-sizes", "1,2"]
    arguments += ["--warmup", "0", "--iterations", "1", "--encoder-batch-sizes", "2", "--json", str(out)]
    assert main(arguments) == 0
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and [row["batch_size"] for row in result["rows"]] == [1, 2]
    assert sum(length for _, length in MCUB4_LAYOUT) == 3380
    for row in result["rows"]:
        assert row["positions_per_sample"] == 3380
        assert row["composed_over_dense"] == row["composed_damc_s"] / row["dense_s"]
    assert [row["encoder"].split()[0] for row in result["encoders"]] == ["image", "video", "audio", "point"]
    assert all(row["items_per_s"] == 2 / row["seconds"] for row in result["encoders"])
    assert "| 1 |" in capsys.readouterr().out
