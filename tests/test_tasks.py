from pathlib import Path

import pytest

from mcub.errors import TaskError
from mcub.tasks import load_registry

COMBOS = ["audio", "image", "video", "image+audio", "image+video", "video+audio", "video+image+audio"]


def test_registry_knows_every_task_of_the_paper():
    registry = load_registry()
    expected = {
        "mcub-4",
        "mcub-3-image-audio-video",
        "mcub-3-audio-video-pointcloud",
        "mcub-3-image-audio-pointcloud",
        "mcub-3-image-video-pointcloud",
        "modelnet40",
        "modelnet40-open",
        "objaverse-cap",
        "objaverse-cls",
        "mcub-sample",
        *(f"avqa-{combo}" for combo in COMBOS),
        *(f"music-avqa-{combo}" for combo in COMBOS),
    }
    assert set(registry.tasks) == expected and len(expected) == 24
    assert set(registry.groups) == {"mcub", "mcub-3", "avqa", "music-avqa"}
    assert [t.name for t in registry.resolve(["mcub"])][0] == "mcub-4"
    assert len(registry.resolve(["mcub", "mcub-3", "mcub-4"])) == 5


def test_task_declarations_follow_the_authors_files():
    tasks = load_registry().tasks
    assert tasks["mcub-4"].modalities == ("image", "video", "audio", "point")
    assert tasks["mcub-3-audio-video-pointcloud"].questions == "MCUB-3-audio-video-pointcloud.json"
    assert {tasks[n].answers for n in tasks if n.startswith("mcub-") and n != "mcub-sample"} == {"MCUB-answer.json"}
    assert tasks["avqa-video+image+audio"].modalities == ("video", "image", "audio")
    assert tasks["avqa-image+audio"].questions == "avqa-test_mm_image+audio.json"
    assert tasks["music-avqa-video"].answers == "music-avqa-test_mm_answer.json"
    assert tasks["music-avqa-video"].paper_match == "evalai-exact" and tasks["music-avqa-video"].breakdown == ("type",)
    assert tasks["avqa-audio"].paper_match == "first-character" and tasks["avqa-audio"].answer_type == "letter"
    assert tasks["mcub-4"].hub_dataset == "Adu2021/ModelCompose" and tasks["mcub-4"].folder == "test"
    assert len(tasks["modelnet40"].options) == 40 and tasks["modelnet40"].options["0"] == "airplane"
    assert tasks["mcub-sample"].bundled


def test_unknown_name_lists_close_matches():
    with pytest.raises(TaskError, match="did you mean mcub-3"):
        load_registry().resolve(["mcub3"])


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "x.yaml").write_text(text)
    return tmp_path


TASK = """
family: f
defaults: {{answers: a.json, answer_type: letter, protocol: paper, paper_match: first-character}}
tasks:
  - {{name: t, description: d, modalities: [image], questions: q.json{extra}}}
groups:
  - {{name: g, description: d, members: [{members}]}}
"""


@pytest.mark.parametrize(
    ("extra", "members", "message"),
    [
        (", colour: red", "t", "Extra inputs are not permitted"),
        ("", "t, nope", "unknown task 'nope'"),
        (", modalities: [smell]", "t", "modalities"),
        ("", "t, g", "contains itself"),
        (", paper_match: null", "t", "task t has no `paper` protocol"),
        (", protocol: papr", "t", "unknown protocol 'papr'; did you mean paper"),
    ],
)
def test_invalid_task_files_are_rejected_with_the_reason(tmp_path, extra, members, message):
    with pytest.raises(TaskError, match=message):
        load_registry(_write(tmp_path, TASK.format(extra=extra, members=members)))


def test_a_name_defined_twice_is_rejected(tmp_path):
    (tmp_path / "y.yaml").write_text(TASK.format(extra="", members="t").replace("name: g", "name: h"))
    with pytest.raises(TaskError, match="defined twice"):
        load_registry(_write(tmp_path, TASK.format(extra="", members="t")))
