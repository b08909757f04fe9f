"""docs/extending.md: its task, adapter, model file and protocol, exactly as written there, work end to end."""

import importlib
import re
from pathlib import Path

from conftest import answer, question, write_json

import mcub
from mcub.data import load_task
from mcub.models import base
from mcub.protocols import PROTOCOLS
from mcub.results import RunFiles
from mcub.schema import DataPaths
from mcub.tasks import load_registry

DOCS = Path(__file__).resolve().parent.parent / "docs" / "extending.md"


def example(name: str) -> str:
    """The code block that follows `<!-- example: NAME -->` in docs/extending.md."""
    found = re.search(rf"<!-- example: {name} -->\n```\w+\n(.*?)```", DOCS.read_text(), re.S)
    assert found, f"no example {name!r} in {DOCS}"
    return found.group(1)


def _module(tmp_path, monkeypatch, name: str, code: str):
    (tmp_path / f"{name}.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    return importlib.import_module(name)


def test_the_example_task_reads_its_files(tmp_path):
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    (tasks_dir / "my-benchmark.yaml").write_text(example("task"))
    registry = load_registry(tasks_dir)
    [task] = registry.resolve(["my-benchmark"])
    data_root = tmp_path / "data"
    prompt = "<image>\n<audio>\nWhat do both show?\nA. a dog\nB. rain"
    write_json(data_root / "test" / "my-image-audio.json", [question(7, prompt, vision=["i.png"], audio=["a.wav"])])
    write_json(data_root / "test" / "my-answers.json", [answer(7, "B")])
    data = load_task(task, DataPaths(data_root=data_root, download=False))
    [sample] = data.samples
    assert (sample.id, sample.answer, sample.options) == ("7", "B", {"A": "a dog", "B": "rain"})
    assert [modality for modality, _ in sample.media] == ["image", "audio"] and data.problems == []


def test_the_example_adapter_runs_the_sample_task(tmp_path, monkeypatch):
    _module(tmp_path, monkeypatch, "longest_option", example("adapter"))
    monkeypatch.setitem(base.ADAPTERS, "longest-option", "longest_option:LongestOptionArguments")
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / "longest-option.yaml").write_text(example("model"))
    specs = {**base.load_model_specs(), **base.load_model_specs(models_dir)}
    monkeypatch.setattr(base, "load_model_specs", lambda *args: specs)
    request = mcub.EvalRequest(model="longest-option", tasks=["mcub-sample"], output_dir=tmp_path / "runs",
                               run_name="r", num_workers=0, progress=False)  # fmt: skip
    summary = mcub.evaluate(request)
    records = RunFiles(tmp_path / "runs" / "longest-option" / "r").records["mcub-sample"].values()
    for record in records:
        assert record.output == max(record.options, key=lambda key: len(record.options[key]))
    assert summary.tasks["mcub-sample"].metrics.correct == sum(record.output == record.gold for record in records)
    assert summary.model.adapter == "longest-option"


def test_the_example_protocol_scores_a_run_and_rescores_it(tmp_path, monkeypatch):
    before = dict(PROTOCOLS)
    try:
        _module(tmp_path, monkeypatch, "last_letter", example("protocol"))
        runs = tmp_path / "runs"
        request = mcub.EvalRequest(model="random", tasks=["mcub-sample"], protocol="last-letter", output_dir=runs,
                                   run_name="r", num_workers=0, progress=False)  # fmt: skip
        summary = mcub.evaluate(request)
        run_dir = tmp_path / "runs" / "random" / "r"
        records = RunFiles(run_dir).records["mcub-sample"].values()
        assert {record.extraction for record in records} == {"last-letter"}
        assert summary.tasks["mcub-sample"].protocol == "last-letter"
        assert summary.tasks["mcub-sample"].metrics.correct == sum(record.output == record.gold for record in records)
        rescored, _ = mcub.score_run(run_dir, DataPaths(), protocol="paper")
        assert rescored.tasks["mcub-sample"].metrics.correct == summary.tasks["mcub-sample"].metrics.correct
    finally:
        PROTOCOLS.clear()
        PROTOCOLS.update(before)
