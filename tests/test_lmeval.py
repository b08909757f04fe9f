"""mcub inside lm-evaluation-harness gives the numbers and predictions of mcub.eval."""

import json

import pytest

pytest.importorskip("lm_eval")

from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from mcub.data import DataPaths  # noqa: E402
from mcub.eval import main as eval_main  # noqa: E402
from mcub.lmeval import McubLM, write_configs  # noqa: E402
from mcub.lmeval import main as lmeval_main
from mcub.models.modelcompose.tiny import tiny_damc_layout  # noqa: E402
from mcub.tasks import load_registry  # noqa: E402


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cache") / "tiny-damc"
    tiny_damc_layout(directory)
    return directory


def test_lm_eval_gives_the_accuracy_and_predictions_of_mcub_eval(cache, tmp_path):
    configs = tmp_path / "configs"
    assert lmeval_main(["configs", str(configs), "--tasks", "mcub-sample", "--no-download"]) == 0
    assert {p.name for p in configs.glob("*.yaml")} == {
        "mcub-sample.yaml",
        "mcub-sample-paper.yaml",
        "mcub-sample-generate.yaml",
    }
    model = McubLM(model="tiny-damc", cache_dir=str(cache), batch_size=2, device="cpu")
    results = simple_evaluate(
        model=model, tasks=["mcub-sample", "mcub-sample-paper"], task_manager=TaskManager(include_path=str(configs)),
        log_samples=True,
    )  # fmt: skip
    common = ["--model", "tiny-damc", "--model-arg", f"cache_dir={cache}", "--tasks", "mcub-sample", "--no-progress"]
    common += ["--output-dir", str(tmp_path / "runs"), "--num-workers", "0", "--batch-size", "2"]
    assert eval_main([*common, "--protocol", "loglik", "--run-name", "ll"]) == 0
    assert eval_main([*common, "--protocol", "paper", "--run-name", "paper"]) == 0

    def summary(name):
        return json.loads((tmp_path / "runs" / "tiny-damc" / name / "summary.json").read_text())["tasks"]["mcub-sample"]

    assert results["results"]["mcub-sample"]["acc,none"] * 100 == pytest.approx(summary("ll")["metrics"]["accuracy"])
    assert results["results"]["mcub-sample-paper"]["acc,none"] * 100 == pytest.approx(
        summary("paper")["metrics"]["accuracy"]
    )
    lines = (tmp_path / "runs" / "tiny-damc" / "ll" / "records" / "mcub-sample.jsonl").read_text().splitlines()
    mcub_choice = {r["id"]: r["extracted"] for r in map(json.loads, lines)}
    mcub_logliks = {r["id"]: r["option_logliks"] for r in map(json.loads, lines)}
    for logged in results["samples"]["mcub-sample"]:
        doc = logged["doc"]
        logliks = [float(response[0][0]) for response in logged["resps"]]
        assert doc["choices"][logliks.index(max(logliks))] == mcub_choice[doc["id"]]
        assert logliks == pytest.approx([mcub_logliks[doc["id"]][key] for key in doc["choices"]], abs=1e-4)


def test_configs_cover_every_task_and_group_whose_data_is_present(tmp_path):
    import yaml
    from conftest import answer, question, write_json

    data_root = tmp_path / "data"
    combos = ["audio", "image", "video", "image+audio", "image+video", "video+audio", "video+image+audio"]
    for combo in combos:
        write_json(data_root / f"test/avqa-test_mm_{combo}.json", [question(1, "Q?\nA. x\nB. y")])
    write_json(data_root / "test/avqa-test_mm_answer.json", [answer(1, "B")])
    out = tmp_path / "configs"
    notes = write_configs(out, list(load_registry().tasks.values()), DataPaths(data_root=data_root, download=False))
    assert len(notes) == 16 and all("left out" in note for note in notes)
    names = {p.stem for p in out.glob("*.yaml")}
    assert {"mcub-sample", "avqa-audio", "avqa-audio-paper", "group-avqa"} <= names and "group-mcub" not in names
    group = yaml.safe_load((out / "group-avqa.yaml").read_text())
    assert group["group"] == "avqa" and group["task"] == [f"avqa-{combo}" for combo in combos]


def test_the_bare_lm_eval_command_finds_the_mcub_model(cache, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    configs = tmp_path / "configs"
    assert lmeval_main(["configs", str(configs), "--tasks", "mcub-sample", "--no-download"]) == 0
    command = [str(Path(sys.executable).parent / "lm_eval"), "--model", "mcub", "--device", "cpu"]
    command += [
        "--model_args",
        f"model=tiny-damc,cache_dir={cache}",
        "--tasks",
        "mcub-sample",
        "--include_path",
        str(configs),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    row = next(line for line in result.stdout.splitlines() if line.startswith("|mcub-sample"))
    assert "|acc   |" in row
