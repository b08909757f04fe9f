"""`mcub sweep`: grid parsing, a 9-point sweep of tiny-damc that runs every encoder once (resumed and skipped on a
rerun), the table and the plot, the selection rule and the marking of a selection on the test set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mcub.results import read_summary
from mcub.sweep import main as sweep_main
from mcub.sweeps.grid import GridError, grid_points, parse_axis
from mcub.sweeps.plot import plot_sweep
from mcub.sweeps.results import TEST_SET_MARK, sweep_results
from mcub.sweeps.selection import SelectOn, select_point
from mcub.sweeps.table import sweep_frame, sweep_markdown
from tests.run_factory import record, write_run


def test_ranges_are_decimal_exact_with_the_stop_included():
    axis = parse_axis("lambda.image=0.2:0.6:0.1")
    assert axis.labels == ("0.2", "0.3", "0.4", "0.5", "0.6")
    assert axis.values == (0.2, 0.3, 0.4, 0.5, 0.6) and repr(axis.values[1]) == "0.3"
    assert parse_axis("x=0:1:0.3").labels == ("0", "0.3", "0.6", "0.9")
    assert parse_axis("ties.k=10:30:10").values == (10, 20, 30)
    assert parse_axis("x=1e-3:3e-3:1e-3").labels == ("0.001", "0.002", "0.003")
    listed = parse_axis("composition=damc,naivemc")
    assert listed.values == ("damc", "naivemc") and parse_axis("x=0.2, 0.40").labels == ("0.2", "0.40")


def test_points_are_the_product_in_grid_order_and_nest_like_model_args():
    points = grid_points([parse_axis("lambda.image=0.2,0.4"), parse_axis("lambda.audio=0.1:0.3:0.1")])
    assert [p.name for p in points][:4] == [
        "lambda.image=0.2,lambda.audio=0.1", "lambda.image=0.2,lambda.audio=0.2",
        "lambda.image=0.2,lambda.audio=0.3", "lambda.image=0.4,lambda.audio=0.1",
    ]  # fmt: skip
    assert points[5].model_args() == {"lambdas": {"image": 0.4, "audio": 0.3}}
    with pytest.raises(GridError, match="--grid lambda.image and --grid lambdas.image set the same argument"):
        grid_points([parse_axis("lambda.image=1"), parse_axis("lambdas.image=2")])


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ("lambda.image", "--grid 'lambda.image': not KEY=start:stop:step"),
        ("lambda.image=0.6:0.2:0.1", "--grid 'lambda.image=0.6:0.2:0.1': start 0.6 is above stop 0.2"),
        ("lambda.image=0:1:0", "--grid 'lambda.image=0:1:0': the step 0 is not positive"),
        ("lambda.image=a:b:c", "--grid 'lambda.image=a:b:c': start, stop and step must be numbers"),
        ("lambda.image=0.2,,0.4", "--grid 'lambda.image=0.2,,0.4': an empty value in the list"),
        ("lambda.image=0.2,0.2", "--grid 'lambda.image=0.2,0.2': value '0.2' is given twice"),
        ("lambda.image=0:1:0.0001", "--grid 'lambda.image=0:1:0.0001': 10001 values, more than 1000"),
        ("lambda.image=a/b", "--grid 'lambda.image=a/b': value 'a/b' cannot name a run directory"),
        ("cache_dir=a,b", "--grid cache_dir: cache_dir changes what the encoders compute"),
        ("feature_cache=a,b", "--grid feature_cache: feature_cache changes what the encoders compute"),
        ("lambda.video=0.1,0.2", "--grid lambda.video: the request sets it already"),
        (
            "lambda.image=0.1,0.2",
            "--grid point lambda.image=0.1: model tiny-damc: invalid argument(s): arguments: no "
            "lambda for the audio, point expert(s)",
        ),
        ("nothing=1,2", "--grid point nothing=1: model tiny-damc: unknown argument(s) nothing"),
    ],
)
def test_grid_errors_name_the_flag_and_value_in_one_error_line(grid, message, capsys):
    args = ["--model", "tiny-damc", "--grid", grid, "--model-arg", "lambda.video=0.5", "--tasks", "mcub-sample"]
    assert sweep_main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}")


def test_select_on_syntax_errors_exit_2(capsys):
    args = ["--model", "tiny-damc", "--grid", "lambda.image=0.1,0.2", "--select-on", "mcub-sample:type"]
    assert sweep_main(args) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --select-on 'mcub-sample:type': not TASK or TASK:FIELD=VALUE (a cell of its breakdown)"
    )


def test_the_sweep_command_is_registered_and_its_help_imports_no_torch():
    script = (
        "import sys; from mcub.__main__ import main\n"
        "try:\n    main(['sweep', '--help'])\nexcept SystemExit as done:\n    assert done.code == 0\n"
        "assert 'torch' not in sys.modules and 'pandas' not in sys.modules, 'heavy import'"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("usage: mcub sweep") and "--grid KEY=VALUES" in result.stdout


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    from mcub.models.modelcompose.tiny import tiny_damc_layout

    directory = tmp_path_factory.mktemp("cache") / "tiny-damc"
    tiny_damc_layout(directory)
    return str(directory)


def test_a_nine_point_sweep_runs_every_encoder_once_and_a_rerun_runs_nothing_again(tiny, tmp_path, monkeypatch):
    import matplotlib.image

    from mcub.evaluation import evaluate
    from mcub.models.modelcompose import model as modelcompose

    encoded: list[tuple[str, int]] = []
    load_encoder = modelcompose.load_encoder

    def counted_encoder(modality, *args, **kwargs):
        encoder = load_encoder(modality, *args, **kwargs)
        forward = encoder.forward

        def counting(inputs, *rest, **options):
            encoded.append((modality, inputs.shape[0]))
            return forward(inputs, *rest, **options)

        encoder.forward = counting
        return encoder

    monkeypatch.setattr(modelcompose, "load_encoder", counted_encoder)
    out = tmp_path / "sweep"
    command = ["--model", "tiny-damc", "--model-arg", f"cache_dir={tiny}", "--grid", "lambda.image=0.2:0.6:0.2",
               "--grid", "lambda.audio=0.1,0.3,0.5", "--model-arg", "lambda.video=0.25", "--model-arg",
               "lambda.point=0.25", "--tasks", "mcub-sample", "--select-on", "mcub-sample", "--protocol", "loglik",
               "--limit", "2", "--num-workers", "0", "--no-progress", "--out", str(out)]  # fmt: skip
    assert sweep_main(command) == 0
    per_modality: dict[str, int] = {}
    for modality, items in encoded:
        per_modality[modality] = per_modality.get(modality, 0) + items
    assert per_modality == {"image": 2, "video": 2, "audio": 2, "point": 2}

    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["grid"] == {"lambda.image": ["0.2", "0.4", "0.6"], "lambda.audio": ["0.1", "0.3", "0.5"]}
    assert manifest["feature_cache"] == str(out / "features")
    points = manifest["points"]
    assert len(points) == 9 and all(point["status"] == "done" for point in points)
    assert [(p["media_inputs"], p["from_feature_cache"]) for p in points] == [(8, 0)] + [(8, 8)] * 8
    run_dirs = sorted((out / "runs" / "tiny-damc").iterdir())
    assert len(run_dirs) == 9 and [out / p["run_dir"] for p in points] == [out / "runs" / "tiny-damc" / p["name"]
                                                                          for p in points]  # fmt: skip
    middle = read_summary(out / points[4]["run_dir"])
    assert middle.model.args["lambdas"] == {"image": 0.4, "audio": 0.3, "video": 0.25, "point": 0.25}
    assert middle.model.args["feature_cache"] == str(out / "features")

    table = (out / "table.csv").read_text().splitlines()
    column = f"mcub-sample ({TEST_SET_MARK})"
    assert table[0] == f"point,lambda.image,lambda.audio,{column},{column} ci_low,{column} ci_high,selection"
    assert len(table) == 10 and "0.30000000000000004" not in "\n".join(table)
    accuracy = middle.tasks["mcub-sample"].metrics.accuracy
    assert table[5].startswith(f'"lambda.image=0.4,lambda.audio=0.3",0.4,0.3,{accuracy},')
    best = max(read_summary(out / p["run_dir"]).tasks["mcub-sample"].metrics.accuracy for p in points)
    first_best = next(p["name"] for p in points
                      if read_summary(out / p["run_dir"]).tasks["mcub-sample"].metrics.accuracy == best)  # fmt: skip
    assert manifest["selection"]["point"] == first_best and manifest["selection"]["on_test_set"] is True
    assert f"{column}" in (out / "table.md").read_text()
    height, width, _ = matplotlib.image.imread(out / "plot.png").shape
    assert width >= 500 and height >= 400

    def no_evaluation(*args, **kwargs):
        raise AssertionError("a finished point was evaluated again")

    monkeypatch.setattr("mcub.evaluation.evaluate", no_evaluation)
    assert sweep_main(command) == 0
    partial = out / points[4]["run_dir"]
    (partial / "summary.json").unlink()
    records = partial / "records" / "mcub-sample.jsonl"
    records.write_text(records.read_text().splitlines()[0] + "\n")
    resumed = []

    def counted_evaluation(request, log):
        resumed.append((request.run_name, request.resume))
        return evaluate(request, log)

    monkeypatch.setattr("mcub.evaluation.evaluate", counted_evaluation)
    assert sweep_main(command) == 0
    assert resumed == [(points[4]["name"], True)]
    assert read_summary(partial).tasks["mcub-sample"].metrics == middle.tasks["mcub-sample"].metrics
    assert sum(items for _, items in encoded) == 8


def _summaries(tmp_path: Path, outcomes: list[dict[str, list[bool]]]):
    return [read_summary(write_run(tmp_path / str(index), run)) for index, run in enumerate(outcomes)]


def test_the_selection_takes_the_first_best_point_and_reports_the_other_tasks_there(tmp_path):
    assert select_point([50.0, 75.0, None, 75.0]) == 1 and select_point([None, None]) is None
    axes = [parse_axis("lambda.image=0.2:0.4:0.1")]
    points = grid_points(axes)
    summaries = _summaries(tmp_path, [
        {"val": [True, False, False, False], "test": [True, True, True, True]},
        {"val": [True, True, True, False], "test": [False, False, False, False]},
        {"val": [True, True, True, False], "test": [True, True, False, False]},
    ])  # fmt: skip
    held_out = sweep_results(axes, points, summaries, ["test"], SelectOn.parse("val"))
    assert held_out.selected == 1 and held_out.selection.point == "lambda.image=0.3"
    assert held_out.selection.tied == ["lambda.image=0.3", "lambda.image=0.4"] and held_out.selection.value == 75.0
    assert held_out.selection.on_test_set is False and held_out.marked is None
    assert list(held_out.columns) == ["test", "val (selection)"]
    assert held_out.selection.at_point["test"]["value"] == 0.0
    frame = sweep_frame(held_out, numeric=False)
    assert list(frame["selection"]) == ["", "selected", ""]
    assert TEST_SET_MARK not in sweep_markdown(held_out)

    on_test = sweep_results(axes, points, summaries, ["val", "test"], SelectOn.parse("val"))
    marked = f"val ({TEST_SET_MARK})"
    assert on_test.selection.on_test_set is True and on_test.marked == marked
    assert list(on_test.columns) == [marked, "test"]
    assert list(sweep_frame(on_test, numeric=False)["selection"]) == ["", TEST_SET_MARK, ""]
    assert f"val is also reported: its figure at this point was {TEST_SET_MARK}" in sweep_markdown(on_test)
    figure = plot_sweep(on_test, tmp_path / "plot.png")
    titles = [axes.get_title() for axes in figure.axes]
    assert titles == [f"val\n({TEST_SET_MARK})", "test"] and TEST_SET_MARK in figure._suptitle.get_text()


def test_selection_on_a_breakdown_cell(tmp_path):
    from mcub.scoring import task_metrics

    axes = [parse_axis("lambda.image=0.2,0.4")]
    summaries = _summaries(tmp_path, [{"t": [True] * 4}, {"t": [True] * 4}])
    for summary, hits in zip(summaries, ([True, False, True, True], [False, True, True, True]), strict=True):
        records = {str(i): record("t", i, hit).model_copy(update={"meta": {"type": "ab"[i % 2]}})
                   for i, hit in enumerate(hits)}  # fmt: skip
        summary.tasks["t"].metrics = task_metrics(list(records), records, ["type"], 0)
    results = sweep_results(axes, grid_points(axes), summaries, ["t"], SelectOn.parse("t:type=b"))
    assert results.selected == 1 and results.selection.on == "t:type=b" and results.selection.on_test_set
    assert list(results.columns) == [f"t ({TEST_SET_MARK})", "t:type=b (selection)"]
    with pytest.raises(Exception, match="point lambda.image=0.2: task t has no breakdown cell type=c; it has "
                                        "type=a, type=b"):  # fmt: skip
        sweep_results(axes, grid_points(axes), summaries, ["t"], SelectOn.parse("t:type=c"))


def test_the_plot_has_a_panel_per_task_with_figures_and_no_empty_one(tmp_path):
    one = [parse_axis("lambda.image=0.2:0.4:0.1")]
    summaries = _summaries(tmp_path, [{"a": [True, False], "b": [True]}, {"a": [True, True]}, {"a": [False]}])
    results = sweep_results(one, grid_points(one), summaries, ["a", "b", "c"], None)
    figure = plot_sweep(results, tmp_path / "lines.png")
    assert [axes.get_title() for axes in figure.axes] == ["a", "b"]
    assert [line.get_ydata().tolist() for line in figure.axes[0].get_lines()] == [[50.0, 100.0, 0.0]]
    two = [parse_axis("lambda.image=0.2,0.4"), parse_axis("lambda.audio=0.1,0.3,0.5")]
    grid = _summaries(tmp_path / "grid", [{"a": [i % 2 == 0, i % 3 == 0]} for i in range(6)])
    heatmap = plot_sweep(sweep_results(two, grid_points(two), grid, ["a"], SelectOn("a")), tmp_path / "heat.png")
    image = heatmap.axes[0].get_images()[0].get_array()
    assert image.shape == (2, 3) and image[0, 0] == 100.0 and image[1, 2] == 0.0
    texts = [text.get_text() for text in heatmap.axes[0].texts]
    assert texts[:3] == ["100.0\n[100, 100]", "0.0\n[0, 0]", "50.0\n[0, 100]"] and len(texts) == 6
