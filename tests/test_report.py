import math

import pytest
from run_factory import write_run

from mcub.errors import RunError
from mcub.report import FONTS, PANEL_HEIGHT, plot_runs
from mcub.report import main as report_main

FLAGS = [True, True, False, True]  # 75%


def _bars(axes):
    """Each run's bar heights in an axes (one list per run, in run order)."""
    return [
        [patch.get_height() for patch in container] for container in axes.containers if hasattr(container, "patches")
    ]


def test_plot_draws_every_task_the_mcub_subsets_and_each_combination_family(tmp_path):
    first = write_run(tmp_path / "a", {"avqa-audio": FLAGS, "avqa-video": [True] * 4, "mcub-4": [False] * 4,
                                       "mcub-3-image-audio-video": FLAGS}, model="x")  # fmt: skip
    second = write_run(tmp_path / "b", {"avqa-audio": [False] * 4, "music-avqa-image": FLAGS}, model="y")
    figure = plot_runs([first, second], tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    by_task, by_subset, avqa, music = figure.axes
    titles = ["accuracy per task", "MCUB by modality subset", "AVQA by input combination",
              "MUSIC-AVQA by input combination"]  # fmt: skip
    assert [ax.get_title() for ax in figure.axes] == titles
    ticks = [label.get_text() for label in by_task.get_xticklabels()]
    assert ticks == ["avqa-audio", "avqa-video", "mcub-4", "mcub-3-image-audio-video", "music-avqa-image"]
    heights = _bars(by_task)
    assert heights[0][:4] == [75.0, 100.0, 0.0, 75.0] and math.isnan(heights[0][4])
    assert heights[1][0] == 0.0 and math.isnan(heights[1][2]) and heights[1][4] == 75.0
    assert [label.get_text() for label in by_subset.get_xticklabels()] == ["image+video+audio+point",
                                                                            "image+audio+video"]  # fmt: skip
    assert _bars(by_subset)[0] == [0.0, 75.0] and all(math.isnan(h) for h in _bars(by_subset)[1])
    assert [label.get_text() for label in avqa.get_xticklabels()] == ["audio", "video"]
    assert _bars(avqa)[0] == [75.0, 100.0] and _bars(avqa)[1][0] == 0.0 and math.isnan(_bars(avqa)[1][1])
    assert [label.get_text() for label in music.get_xticklabels()] == ["image"] and _bars(music)[1] == [75.0]
    [legend] = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == ["x (a)", "y (b)"]
    assert figure.get_size_inches()[1] == pytest.approx(4 * PANEL_HEIGHT + 0.8)
    assert by_task.title.get_fontsize() == FONTS["axes.titlesize"]
    assert all(label.get_fontsize() == FONTS["xtick.labelsize"] for label in by_task.get_xticklabels())


@pytest.mark.parametrize(
    ("outcomes", "titles"),
    [
        ({"mcub-4": FLAGS, "mcub-3-image-audio-pointcloud": FLAGS}, ["accuracy per task", "MCUB by modality subset"]),
        ({"avqa-audio": FLAGS, "avqa-image+audio": FLAGS}, ["accuracy per task", "AVQA by input combination"]),
        ({"modelnet40": FLAGS}, ["accuracy per task"]),
    ],
)
def test_only_the_panels_with_data_are_drawn(tmp_path, outcomes, titles):
    figure = plot_runs([write_run(tmp_path / "r", outcomes)], tmp_path / "p.png")
    assert [ax.get_title() for ax in figure.axes] == titles
    assert all(_bars(ax)[0] and not any(math.isnan(h) for h in _bars(ax)[0]) for ax in figure.axes)
    assert figure.get_size_inches()[1] == pytest.approx(len(titles) * PANEL_HEIGHT + 0.8)


def test_a_run_with_no_accuracy_to_plot_is_an_error(tmp_path):
    run = write_run(tmp_path / "r", {"mcub-4": []})
    with pytest.raises(RunError, match=r"nothing to plot: no task of .*r has an accuracy"):
        plot_runs([run], tmp_path / "p.png")


def test_report_cli_with_a_plot(tmp_path, capsys):
    run = write_run(tmp_path / "r", {"mcub-4": FLAGS})
    assert report_main([str(run), "--plot", str(tmp_path / "p.png")]) == 0
    assert "75.00" in capsys.readouterr().out and (tmp_path / "p.png").stat().st_size > 1000
