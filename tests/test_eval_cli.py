import json

import pytest

from mcub.eval import main as eval_main
from mcub.models.baselines import RandomModel
from mcub.results import read_summary
from mcub.runner.loading import SampleDataset
from mcub.schema import Record
from mcub.tasks import BUNDLED_DATA_ROOT, load_registry


def _run(tmp_path, *extra):
    return eval_main(
        ["--model", "random", "--output-dir", str(tmp_path / "results"), "--no-progress", "--num-workers", "0", *extra]
    )


def _records(run_dir, task="mcub-sample"):
    return [json.loads(line) for line in (run_dir / "records" / f"{task}.jsonl").read_text().splitlines()]


def _metrics(run_dir):
    summary = read_summary(run_dir)
    return {name: task.metrics.model_dump() for name, task in summary.tasks.items()}, summary.groups


def test_random_on_the_sample_writes_a_run_and_resume_does_no_model_work(tmp_path, capsys, monkeypatch):
    assert _run(tmp_path, "--tasks", "mcub-sample", "--run-name", "first") == 0
    out = capsys.readouterr().out
    assert "| mcub-sample | paper | 5 |" in out
    run_dir = tmp_path / "results" / "random" / "first"
    assert f"run directory: {run_dir}" in out
    names = {p.name for p in run_dir.iterdir()}
    assert names == {"run.json", "run.yaml", "summary.json", "table.md", "records", ".lock"}
    assert (run_dir / ".lock").read_text() == ""  # released: the lock file stays, empty (no holder)
    records = _records(run_dir)
    assert [r["id"] for r in records] == [f"mcub-sample-{i}" for i in range(5)]
    for record in records:
        Record.model_validate(record)
        assert record["extraction"] == "first-character" and record["error"] is None
        assert [m["modality"] for m in record["media"]] == ["image", "audio", "video", "point"]
    summary = read_summary(run_dir)
    metrics = summary.tasks["mcub-sample"].metrics
    assert metrics.correct == sum(r["correct"] for r in records) and metrics.n == 5
    assert metrics.accuracy == 100 * metrics.correct / 5
    assert summary.model.name == "random" and summary.settings.seed == 0
    assert summary.tasks["mcub-sample"].question_sha256 == records[0]["question_sha256"]
    assert (run_dir / "table.md").read_text().startswith("| task | protocol |")

    def no_model_work(*args, **kwargs):
        raise AssertionError("the model was called on resume")

    monkeypatch.setattr(RandomModel, "generate", no_model_work)
    assert _run(tmp_path, "--tasks", "mcub-sample", "--resume") == 0
    assert _metrics(run_dir) == ({"mcub-sample": metrics.model_dump()}, summary.groups)


def test_a_damaged_tail_is_reported_and_redone(tmp_path, capsys):
    assert _run(tmp_path, "--tasks", "mcub-sample", "--run-name", "r") == 0
    run_dir = tmp_path / "results" / "random" / "r"
    before = _records(run_dir)
    path = run_dir / "records" / "mcub-sample.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    capsys.readouterr()
    assert _run(tmp_path, "--tasks", "mcub-sample", "--resume") == 0
    assert "mcub-sample.jsonl:5: damaged record" in capsys.readouterr().err
    after = _records(run_dir)
    strip = [{k: v for k, v in r.items() if k != "timing"} for r in before]
    assert [{k: v for k, v in r.items() if k != "timing"} for r in after] == strip


def test_loglik_protocol_with_workers_and_batches(tmp_path, capsys):
    args = ["--tasks", "mcub-sample", "--protocol", "loglik", "--batch-size", "2", "--run-name", "ll"]
    assert (
        eval_main(["--model", "random", "--output-dir", str(tmp_path), "--no-progress", "--num-workers", "2", *args])
        == 0
    )
    records = _records(tmp_path / "random" / "ll")
    assert len(records) == 5
    for record in records:
        assert set(record["option_logliks"]) == {"A", "B", "C", "D"} and record["extraction"] == "loglik-argmax"
        best = max(record["option_logliks"], key=record["option_logliks"].get)
        assert record["extracted"] == best and record["correct"] == (best == record["gold"])


def test_limit_seed_and_resume_with_other_settings(tmp_path, capsys):
    assert _run(tmp_path, "--tasks", "mcub-sample", "--limit", "2", "--run-name", "l") == 0
    assert read_summary(tmp_path / "results" / "random" / "l").tasks["mcub-sample"].metrics.n == 2
    assert _run(tmp_path, "--tasks", "mcub-sample", "--limit", "2", "--seed", "5", "--resume") == 2
    assert "cannot resume a run started with other settings (seed: 0 then, 5 now)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "randm"], "unknown model 'randm'; did you mean random?"),
        (["--model", "random", "--tasks", "mcub-smaple"], "did you mean mcub-sample"),
        (["--model", "random", "--model-arg", "temperature=1"], "unknown argument(s) temperature; accepted: seed"),
        (["--model", "random", "--tasks", "modelnet40", "--protocol", "paper"], "has no `paper` protocol"),
        (["--model", "random", "--tasks", "music-avqa-audio", "--protocol", "loglik"], "has open answers"),
    ],
)
def test_bad_names_and_arguments_are_clear_errors(tmp_path, capsys, args, message):
    assert eval_main([*args, "--output-dir", str(tmp_path), "--no-download", "--data-root", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def _audio_only_random(monkeypatch):
    """`random` declared by its adapter with the audio modality only."""
    from mcub.models.baseline_arguments import RandomArguments

    monkeypatch.setattr(RandomArguments, "input_modalities", lambda self: ("audio",))


def test_a_model_without_a_modality_skips_or_refuses(tmp_path, capsys, monkeypatch):
    _audio_only_random(monkeypatch)
    assert _run(tmp_path, "--tasks", "mcub-sample") == 2
    assert "cannot run mcub-sample: model random lacks image, point, video" in capsys.readouterr().err
    assert _run(tmp_path, "--no-download", "--data-root", str(tmp_path), "--run-name", "all") == 0
    summary = read_summary(tmp_path / "results" / "random" / "all")
    assert summary.skipped["mcub-sample"] == "model random lacks image, point, video"
    assert "downloads are off" in summary.skipped["avqa-audio"]
    assert len(summary.skipped) == 24 and summary.tasks == {}


def test_the_dataset_decodes_media_for_models_that_read_it():
    [task] = load_registry().resolve(["mcub-sample"])
    from mcub.data import DataPaths, load_task

    data = load_task(task, DataPaths(data_root=BUNDLED_DATA_ROOT))
    dataset = SampleDataset(
        data.samples, {"image": "clip-336-pad", "video": "languagebind-224", "audio": "beats-fbank"}
    )
    loaded = dataset[0]
    assert loaded.error is None and [m.modality for m in loaded.media] == ["image", "audio", "video", "point"]
    assert loaded.media[2].tensors["pixel_values"].shape == (3, 8, 224, 224)
    assert loaded.provenance[2]["frame_indices"] == [0, 1, 3, 4, 6, 7, 9, 11]
    assert loaded.provenance[1]["padded_frames"] > 0 and loaded.provenance[3]["count"] == 1024


def test_list_models(capsys):
    assert eval_main(["--list-models"]) == 0
    out = capsys.readouterr().out
    assert "random" in out and "blind-vicuna" in out and "blind" in out


def _paper_query(task):
    from mcub.models.base import Runtime
    from mcub.protocols import get_protocol
    from mcub.runner.loop import Query

    protocol = get_protocol("paper")
    return RandomModel(Runtime()), Query(task, protocol, protocol.decoding(task, 128))


def test_auto_batch_size_takes_the_largest_that_fits(tmp_path, monkeypatch, capsys):
    import torch

    from mcub.runner.batching import find_batch_size

    sizes = []
    original = RandomModel.generate

    def limited(self, batch, max_new_tokens, stop="eos"):
        sizes.append(len(batch.samples))
        if len(batch.samples) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(self, batch, max_new_tokens, stop)

    monkeypatch.setattr(RandomModel, "generate", limited)
    from mcub.data import DataPaths, load_task

    [task] = load_registry().resolve(["mcub-sample"])
    data = load_task(task, DataPaths())
    fetched = []
    fetch = SampleDataset.__getitem__
    monkeypatch.setattr(SampleDataset, "__getitem__", lambda self, index: fetched.append(index) or fetch(self, index))
    model, query = _paper_query(task)
    assert find_batch_size(model, data.samples, lambda items: query.answer_batch(model, items)) == 2
    assert sizes == [4, 2]  # 5 samples: the probe starts at the largest candidate size below 5
    assert fetched == [0, 1, 2, 3]  # the probe's samples are decoded once for every size tried
    assert _run(tmp_path, "--tasks", "mcub-sample", "--batch-size", "auto", "--run-name", "a") == 0
    assert len(_records(tmp_path / "results" / "random" / "a")) == 5


def test_resume_redoes_records_made_on_other_task_data(tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(BUNDLED_DATA_ROOT, data)
    common = ["--tasks", "mcub-sample", "--data-root", str(data), "--no-download"]
    assert _run(tmp_path, *common, "--run-name", "d") == 0
    answers = data / "test" / "mcub-sample-answer.json"
    answers.write_text(answers.read_text().replace('"value": "D"', '"value": "C"'))
    capsys.readouterr()
    assert _run(tmp_path, *common, "--resume") == 0
    assert "5 record(s) made on other task data are redone" in capsys.readouterr().err
    records = _records(tmp_path / "results" / "random" / "d")
    assert len(records) == 5 and records[3]["gold"] == "C"
    assert len({r["answer_sha256"] for r in records}) == 1


def test_a_sample_the_model_refuses_fails_alone_and_is_left_out_of_the_batch_probe(tmp_path, monkeypatch):
    from mcub.data import DataPaths, load_task
    from mcub.errors import UnsupportedInput
    from mcub.runner.batching import find_batch_size

    assert _run(tmp_path, "--tasks", "mcub-sample", "--run-name", "plain") == 0
    original = RandomModel.prepare
    seen = []

    def refusing(self, samples, media):
        seen.append([sample.id for sample in samples])
        if any(sample.id == "mcub-sample-2" for sample in samples):
            raise UnsupportedInput("sample mcub-sample-2: 5000 positions: longer than the LLM's context of 4096")
        return original(self, samples, media)

    monkeypatch.setattr(RandomModel, "prepare", refusing)
    assert _run(tmp_path, "--tasks", "mcub-sample", "--batch-size", "5", "--run-name", "refused") == 0
    plain, refused = (_records(tmp_path / "results" / "random" / name) for name in ("plain", "refused"))
    errors = {r["id"]: r["error"] for r in refused}
    assert errors.pop("mcub-sample-2") == (
        "model error: UnsupportedInput: sample mcub-sample-2: 5000 positions: longer than the LLM's context of 4096"
    )
    assert set(errors.values()) == {None}
    assert [r["output"] for r in refused if r["id"] != "mcub-sample-2"] == [
        r["output"] for r in plain if r["id"] != "mcub-sample-2"
    ]
    assert len(seen) == 6 and sorted(map(len, seen)) == [1, 1, 1, 1, 1, 5]  # the batch, then each sample alone

    [task] = load_registry().resolve(["mcub-sample"])
    data = load_task(task, DataPaths())
    seen.clear()
    model, query = _paper_query(task)
    assert find_batch_size(model, data.samples, lambda items: query.answer_batch(model, items)) == 4
    probe, *alone, accepted = seen  # the costliest 4, each of them alone, then the 3 the model takes
    assert len(probe) == 4 and "mcub-sample-2" in probe
    assert alone == [[sample_id] for sample_id in probe]
    assert accepted == [sample_id for sample_id in probe if sample_id != "mcub-sample-2"]
