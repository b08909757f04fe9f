import math

from run_factory import write_run

from mcub.report import main as report_main
from mcub.report import plot_runs

FLAGS = [True, True, False, True]  # 75%


def test_plot_draws_every_task_and_the_combination_view(tmp_path):
    first = write_run(tmp_path / "a", {"avqa-audio": FLAGS, "avqa-video": [True] * 4, "mcub-4": [False] * 4}, model="x")
    second = write_run(tmp_path / "b", {"avqa-audio": [False] * 4, "music-avqa-image": FLAGS}, model="y")
    figure = plot_runs([first, second], tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    by_task, by_combination = figure.axes
    assert [label.get_text() for label in by_task.get_xticklabels()] == [
        "avqa-audio",
        "avqa-video",
        "mcub-4",
        "music-avqa-image",
    ]
    heights = [
        [patch.get_height() for patch in container] for container in by_task.containers if hasattr(container, "patches")
    ]
    assert heights[0][:3] == [75.0, 100.0, 0.0] and math.isnan(heights[0][3])
    assert heights[1][0] == 0.0 and heights[1][3] == 75.0
    lines = {line.get_label(): list(line.get_ydata()) for line in by_combination.get_lines()}
    avqa = lines["x (a): avqa"]
    assert avqa[0] == 75.0 and math.isnan(avqa[1]) and avqa[2] == 100.0
    assert lines["y (b): music-avqa"][1] == 75.0


def test_report_cli_with_a_plot(tmp_path, capsys):
    run = write_run(tmp_path / "r", {"mcub-4": FLAGS})
    assert report_main([str(run), "--plot", str(tmp_path / "p.png")]) == 0
    assert "75.00" in capsys.readouterr().out and (tmp_path / "p.png").stat().st_size > 1000
