"""`mcub export eee` and `mcub export hub-results` on real runs of the random model on the bundled sample."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from run_factory import write_run

from mcub.eval import main as eval_main
from mcub.export import main as export_main
from mcub.exports import eee_schema
from mcub.exports.eee import ACCURACY, group_result, instance_row
from mcub.exports.eee_schema import AGGREGATE_SCHEMA, INSTANCE_SCHEMA, SCHEMA_SHA256, schema_problems
from mcub.results import RunFiles, read_summary
from mcub.schema import Record, Sample
from mcub.scoring import BOOTSTRAP_RESAMPLES


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Two runs of the random model on mcub-sample: the paper protocol (generated letters) and loglik."""
    root = tmp_path_factory.mktemp("runs")
    for name, protocol in (("paper", "paper"), ("loglik", "loglik")):
        argv = ["--model", "random", "--tasks", "mcub-sample", "--output-dir", str(root), "--run-name", name,
                "--protocol", protocol, "--no-progress", "--num-workers", "0"]  # fmt: skip
        assert eval_main(argv) == 0
    return root / "random"


def _export(run_dir: Path, out: Path, *extra: str) -> tuple[dict, list[dict], Path]:
    assert export_main(["eee", str(run_dir), str(out), *extra]) == 0
    (aggregate_path,) = (out / "data").glob("*/*/*/*.json")
    aggregate = json.loads(aggregate_path.read_text(encoding="utf-8"))
    samples_path = aggregate_path.with_name(f"{aggregate_path.stem}_samples.jsonl")
    rows = [json.loads(line) for line in samples_path.read_text(encoding="utf-8").splitlines()]
    return aggregate, rows, samples_path


def test_the_vendored_schemas_are_the_pinned_bytes_of_every_eval_ever():
    for name, digest in SCHEMA_SHA256.items():
        data = (eee_schema.SCHEMA_DIR / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest
        assert json.loads(data)["version"] == eee_schema.EEE_VERSION == "0.3.0"
    assert "MIT License" in (eee_schema.SCHEMA_DIR / "LICENSE").read_text(encoding="utf-8")


def test_a_changed_schema_file_is_refused(tmp_path, monkeypatch):
    changed = tmp_path / AGGREGATE_SCHEMA
    changed.write_bytes((eee_schema.SCHEMA_DIR / AGGREGATE_SCHEMA).read_bytes() + b"\n")
    monkeypatch.setattr(eee_schema, "SCHEMA_DIR", tmp_path)
    eee_schema.load_schema.cache_clear()
    try:
        with pytest.raises(eee_schema.SchemaError, match="is not the pinned"):
            eee_schema.load_schema(AGGREGATE_SCHEMA)
    finally:
        eee_schema.load_schema.cache_clear()


@pytest.mark.parametrize("protocol", ["paper", "loglik"])
def test_eee_files_of_a_real_run_validate_and_carry_the_summary_figures(runs, tmp_path, protocol):
    run_dir = runs / protocol
    aggregate, rows, samples_path = _export(run_dir, tmp_path / "out", "--organization", "a lab")
    run = RunFiles(run_dir)
    task = run.summary.tasks["mcub-sample"]
    assert schema_problems(aggregate, AGGREGATE_SCHEMA) == []
    assert all(schema_problems(row, INSTANCE_SCHEMA) == [] for row in rows)
    assert samples_path.parent.relative_to(tmp_path / "out").as_posix() == "data/mcub/mcub/random"
    (result,) = aggregate["evaluation_results"]
    score = result["score_details"]
    interval = score["uncertainty"]["confidence_interval"]
    m = task.metrics
    assert (result["evaluation_result_id"], score["score"], interval["lower"], interval["upper"]) == (
        "mcub-sample/accuracy", m.accuracy, m.ci_low, m.ci_high)  # fmt: skip
    assert score["uncertainty"]["num_samples"] == m.n == 5
    assert score["uncertainty"]["num_bootstrap_samples"] == BOOTSTRAP_RESAMPLES
    assert score["details"] == {"n": "5", "correct": str(m.correct), "unparseable": "0", "missing": "0", "errors": "0"}
    assert result["source_data"]["additional_details"]["question_sha256"] == task.question_sha256
    assert aggregate["eval_library"] == {"name": "mcub", "version": run.summary.harness_version, "additional_details": {
        "git_revision": run.summary.git_revision or "unknown", "summary_schema_version": "2"}}  # fmt: skip
    assert aggregate["model_info"]["id"] == "mcub/random" and aggregate["model_info"]["name"] == "random"
    assert aggregate["source_metadata"]["source_organization_name"] == "a lab"
    detail = aggregate["detailed_evaluation_results"]
    assert detail["file_path"] == samples_path.relative_to(tmp_path / "out").as_posix()
    assert detail["checksum"] == hashlib.sha256(samples_path.read_bytes()).hexdigest()
    assert detail["total_rows"] == len(rows) == 5
    records = run.records["mcub-sample"]
    assert [row["sample_id"] for row in rows] == sorted(records, key=lambda i: records[i].question_index)
    assert 100 * sum(row["evaluation"]["score"] for row in rows) / len(rows) == m.accuracy
    for row in rows:
        record = records[row["sample_id"]]
        assert row["evaluation_id"] == aggregate["evaluation_id"] and row["model_id"] == "mcub/random"
        assert row["evaluation"] == {"score": float(record.correct), "is_correct": record.correct}
        (attribution,) = row["answer_attribution"]
        assert attribution["extraction_method"] == record.extraction
        assert attribution["extracted_value"] == record.extracted
        assert row["input"]["reference"] == [record.gold]
        assert len(row["input"]["choices"]) == len(record.options) == 4
        if protocol == "loglik":
            assert record.extraction == "loglik-argmax" and row["output"]["raw"] == []
            assert json.loads(row["metadata"]["option_logliks"]) == record.option_logliks
        else:
            assert record.extraction == "first-character" and row["output"]["raw"] == [record.output]
        assert row["metadata"]["prompt_sha256"] == record.prompt_sha256


@pytest.mark.parametrize("protocol", ["paper", "loglik"])
def test_the_every_eval_ever_validator_passes_the_files_without_warnings(runs, tmp_path, protocol):
    """The package's own validator (its pydantic models and datastore checks), where the package is importable (it
    declares Python >= 3.12, so mcub does not install it)."""
    pytest.importorskip("every_eval_ever.validator.validate")
    _export(runs / protocol, tmp_path / "out", "--model-id", "Adu2021/damc-vat")
    argv = [sys.executable, "-m", "every_eval_ever", "validate", "--format", "json", "data/*/*/*/*.json*"]
    done = subprocess.run(argv, cwd=tmp_path / "out", capture_output=True, text=True, timeout=300)
    reports = json.loads(done.stdout)
    assert [(report["file_type"], report["valid"], report["errors"], report["warnings"]) for report in reports] == [
        ("aggregate", True, [], []), ("instance", True, [], [])]  # fmt: skip
    assert done.returncode == 0


def test_a_conditioned_run_exports_the_samples_it_was_run_on(tmp_path):
    argv = ["--model", "random", "--tasks", "mcub-sample", "--output-dir", str(tmp_path / "runs"), "--run-name", "c",
            "--condition", "drop:audio", "--condition", "circular", "--no-progress", "--num-workers", "0"]  # fmt: skip
    assert eval_main(argv) == 0
    run = RunFiles(tmp_path / "runs" / "random" / "c")
    aggregate, rows, _ = _export(run.run_dir, tmp_path / "out")
    records = run.records["mcub-sample"]
    assert [row["sample_id"] for row in rows] == sorted(records, key=lambda i: records[i].question_index)
    assert len(rows) == 20 and rows[1]["sample_id"] == "mcub-sample-0@r1" and "<audio>" not in rows[1]["input"]["raw"]
    for row in rows:
        assert row["input"]["reference"] == [records[row["sample_id"]].gold]
    assert all(schema_problems(row, INSTANCE_SCHEMA) == [] for row in rows)


def test_a_second_export_of_a_run_writes_the_same_files_again(runs, tmp_path):
    first, first_rows, first_path = _export(runs / "paper", tmp_path / "a")
    second, second_rows, second_path = _export(runs / "paper", tmp_path / "b")
    assert first_path.name == second_path.name
    assert first["evaluation_results"] == second["evaluation_results"]
    assert [{**row, "evaluation_id": ""} for row in first_rows] == [{**row, "evaluation_id": ""} for row in second_rows]


def test_a_chosen_model_id_files_the_export_under_its_developer(runs, tmp_path):
    aggregate, rows, samples_path = _export(runs / "paper", tmp_path / "out", "--model-id", "Adu2021/damc-vat")
    assert samples_path.parent.relative_to(tmp_path / "out").as_posix() == "data/mcub/Adu2021/damc-vat"
    assert aggregate["model_info"]["id"] == "Adu2021/damc-vat" and {row["model_id"] for row in rows} == {
        "Adu2021/damc-vat"}  # fmt: skip


@pytest.mark.parametrize("model_id", ["damc-vat", "a/../b", "data/x"])
def test_a_model_id_the_datastore_cannot_file_is_an_error(runs, tmp_path, capsys, model_id):
    assert export_main(["eee", str(runs / "paper"), str(tmp_path), "--model-id", model_id]) == 2
    assert f"--model-id {model_id!r}: give DEVELOPER/MODEL" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_a_run_of_a_task_this_mcub_does_not_know_is_an_error(tmp_path, capsys):
    run_dir = write_run(tmp_path / "run", {"t": [True, False]})
    assert export_main(["eee", str(run_dir), str(tmp_path / "out")]) == 2
    assert "task t of the run is not a task of this mcub" in capsys.readouterr().err


def test_group_results_carry_the_micro_and_macro_accuracy_and_validate(runs, tmp_path):
    aggregate, _, _ = _export(runs / "paper", tmp_path / "out")
    run_dir = write_run(tmp_path / "g", {"t1": [True, False, True], "t2": [False, False]}, groups={"g": ["t1", "t2"]})
    group = read_summary(run_dir).groups["g"]
    results = [group_result("g", group.tasks, kind, value) for kind, value in (("micro", group.micro),
                                                                              ("macro", group.macro))]  # fmt: skip
    assert schema_problems({**aggregate, "evaluation_results": results}, AGGREGATE_SCHEMA) == []
    assert group.micro.accuracy == 40.0 and group.macro.accuracy == pytest.approx(100 / 3, abs=1e-3)
    for result, value in zip(results, (group.micro, group.macro), strict=True):
        score = result["score_details"]
        interval = score["uncertainty"]["confidence_interval"]
        assert (score["score"], interval["lower"], interval["upper"]) == (value.accuracy, value.ci_low, value.ci_high)
        assert score["uncertainty"]["num_bootstrap_samples"] == BOOTSTRAP_RESAMPLES
    assert [result["evaluation_result_id"] for result in results] == ["g/accuracy-micro", "g/accuracy-macro"]


def test_an_item_without_a_record_counts_as_wrong_and_says_so():
    sample = Sample(task="t", id="7", prompt="<image>\nWhich?", media=(("image", "a.png"),),
                    options={"A": "x", "B": "y"}, answer="A")  # fmt: skip
    row = instance_row(sample, None, ACCURACY, "mcub/m/1", "mcub/m")
    assert schema_problems(row, INSTANCE_SCHEMA) == []
    assert row["evaluation"] == {"score": 0.0, "is_correct": False}
    assert row["error"].startswith("missing") and row["answer_attribution"] == [] and row["output"] == {"raw": []}


def test_an_open_answer_row_carries_its_score_and_no_right_or_wrong():
    sample = Sample(task="cap", id="a1", prompt="<point>\nWhat is this?", media=(("point", "a1.npy"),), options={},
                    answer="a small red chair")  # fmt: skip
    record = Record(
        task="cap", id="a1", question_index=0, protocol="open", question_sha256="q" * 64, answer_sha256="a" * 64,
        prompt_sha256="p" * 64, options={}, gold="a small red chair", output="a chair", option_logliks=None,
        extracted="a chair", extraction="open", unparseable=False, scores={"bleu-1": 36.79}, correct=None, error=None,
        media=[], meta={}, timing={"decode_s": 0.0, "model_s": 0.0},
    )  # fmt: skip
    row = instance_row(sample, record, "bleu-1", "mcub/m/1", "mcub/m")
    assert schema_problems(row, INSTANCE_SCHEMA) == []
    assert row["evaluation"] == {"score": 36.79, "is_correct": False} and row["metadata"]["correct"] == "none"
    assert row["input"]["choices"] is None and row["evaluation_result_id"] == "cap/bleu-1"


def test_hub_results_are_a_model_index_with_the_run_figures(runs, tmp_path):
    from huggingface_hub.repocard_data import model_index_to_eval_results

    out = tmp_path / "card.yaml"
    argv = ["hub-results", str(runs / "paper"), "--out", str(out), "--dataset-id", "mcub-sample=Adu2021/ModelCompose",
            "--source-url", "https://example.org/runs/paper"]  # fmt: skip
    assert export_main(argv) == 0
    card = yaml.safe_load(out.read_text(encoding="utf-8"))
    name, (result,) = model_index_to_eval_results(card["model-index"])
    m = RunFiles(runs / "paper").summary.tasks["mcub-sample"].metrics
    assert name == "random"
    assert (result.task_type, result.dataset_type, result.dataset_name, result.dataset_split) == (
        "multiple-choice", "Adu2021/ModelCompose", "mcub-sample", "test")  # fmt: skip
    assert (result.metric_type, result.metric_value, result.source_url) == ("accuracy", m.accuracy,
                                                                          "https://example.org/runs/paper")  # fmt: skip
    expected = {"harness": "mcub", "harness_version": "0.1.0", "n": 5, "ci_low": m.ci_low, "ci_high": m.ci_high,
                "bootstrap_resamples": BOOTSTRAP_RESAMPLES, "protocol": "paper"}  # fmt: skip
    assert {key: result.metric_args[key] for key in expected} == expected


def test_hub_results_in_the_eval_results_folder_layout(runs, tmp_path):
    out = tmp_path / "mcub.yaml"
    argv = ["hub-results", str(runs / "loglik"), "--format", "eval-results", "--out", str(out), "--dataset-id",
            "mcub-sample=Adu2021/ModelCompose", "--source-url", "https://example.org/runs/loglik"]  # fmt: skip
    assert export_main(argv) == 0
    m = RunFiles(runs / "loglik").summary.tasks["mcub-sample"].metrics
    assert yaml.safe_load(out.read_text(encoding="utf-8")) == [{
        "dataset": {"id": "Adu2021/ModelCompose", "task_id": "mcub-sample", "config": "mcub-sample", "split": "test"},
        "value": m.accuracy,
        "source": {"url": "https://example.org/runs/loglik", "name": "mcub 0.1.0"},
        "notes": f"Accuracy (loglik protocol), n=5, 95% CI [{m.ci_low}, {m.ci_high}] ({BOOTSTRAP_RESAMPLES} bootstrap "
                 "resamples); mcub 0.1.0",
    }]  # fmt: skip


def test_hub_results_of_a_task_without_a_hub_dataset_ask_for_one(runs, capsys):
    assert export_main(["hub-results", str(runs / "paper")]) == 2
    assert "give one with --dataset-id mcub-sample=ID" in capsys.readouterr().err
    assert export_main(["hub-results", str(runs / "paper"), "--dataset-id", "mcub-smaple=x/y"]) == 2
    assert "--dataset-id: mcub-smaple is not a task of the run" in capsys.readouterr().err


def test_the_export_command_is_registered_and_an_export_imports_no_torch(runs, tmp_path):
    script = (
        "import sys; from mcub.__main__ import main\n"
        "try:\n    main(['export', 'eee', '--help'])\nexcept SystemExit as done:\n    assert done.code == 0\n"
        "assert not {'torch', 'numpy', 'jsonschema', 'huggingface_hub'} & set(sys.modules), 'heavy import'\n"
        f"assert main(['export', 'eee', {str(runs / 'paper')!r}, {str(tmp_path)!r}]) == 0\n"
        "assert not {'torch', 'wandb', 'trackio'} & set(sys.modules), 'heavy import'"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: mcub export eee") and "--model-id MODEL_ID" in result.stdout
    assert len(list((tmp_path / "data").glob("mcub/mcub/random/*.json"))) == 1
