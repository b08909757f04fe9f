"""The runner across processes: two gloo ranks give the records of one process; a killed run resumes."""

import json
import signal
import socket
import subprocess
import sys
import time

from conftest import question, write_json
from tiny_models import write_tiny_llama

from mcub.results import read_records


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _records(path):
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [{key: value for key, value in record.items() if key != "timing"} for record in records]


def test_two_gloo_ranks_write_exactly_the_records_of_one_process(tmp_path):
    common = ["--model", "random", "--tasks", "mcub-sample", "--output-dir", str(tmp_path), "--no-progress"]
    common += ["--num-workers", "0", "--protocol", "loglik"]
    subprocess.run([sys.executable, "-m", "mcub.eval", *common, "--run-name", "one"], check=True, capture_output=True)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1"]
    launcher += ["--master-port", str(_free_port())]
    result = subprocess.run(
        [*launcher, "-m", "mcub.eval", *common, "--run-name", "two"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    one = tmp_path / "random" / "one"
    two = tmp_path / "random" / "two"
    assert _records(two / "records" / "mcub-sample.jsonl") == _records(one / "records" / "mcub-sample.jsonl")
    assert sorted(p.name for p in (two / "records").iterdir()) == ["mcub-sample.jsonl"]
    summary = json.loads((two / "summary.json").read_text())
    assert summary["settings"]["world_size"] == 2
    assert summary["tasks"] == json.loads((one / "summary.json").read_text())["tasks"]


def test_a_killed_run_loses_at_most_the_batch_in_flight(tmp_path):
    model_dir = write_tiny_llama(tmp_path / "tiny")
    data_root = tmp_path / "data"
    data_root.mkdir()
    (data_root / "audio.wav").write_bytes(b"RIFF-not-decoded-by-a-blind-model")
    prompt = "<audio>\nWhat makes the sound?\nA. a car\nB. a dog\nC. a cat\nD. a bell"
    write_json(
        data_root / "test/avqa-test_mm_audio.json", [question(i, prompt, audio=["data/audio.wav"]) for i in range(300)]
    )
    write_json(
        data_root / "test/avqa-test_mm_answer.json",
        [{"id": i, "conversations": [{"from": "gpt", "value": "ABCD"[i % 4]}]} for i in range(300)],
    )
    command = [sys.executable, "-m", "mcub.eval", "--model", "blind-vicuna", "--model-arg", f"pretrained={model_dir}"]
    command += ["--tasks", "avqa-audio", "--data-root", str(data_root), "--output-dir", str(tmp_path / "out")]
    command += ["--run-name", "k", "--no-progress", "--num-workers", "0", "--batch-size", "2", "--protocol", "generate"]
    command += ["--max-new-tokens", "8"]
    part = tmp_path / "out" / "blind-vicuna" / "k" / "records" / "avqa-audio.rank0.jsonl"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not part.exists() or len(part.read_text().splitlines()) < 40):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    survived, _ = read_records(part, repair=False)  # a kill mid-line leaves a damaged tail, redone later
    written_before_kill = {key: r.model_dump(mode="json", exclude={"timing"}) for key, r in survived.items()}
    assert 40 <= len(written_before_kill) < 300

    result = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    final = _records(tmp_path / "out" / "blind-vicuna" / "k" / "records" / "avqa-audio.jsonl")
    assert sorted(record["id"] for record in final) == sorted(str(i) for i in range(300))
    by_id = {record["id"]: record for record in final}
    outcome = {"scored", "extracted", "extraction", "unparseable", "correct", "scores", "judgement"}  # filled later

    def raw(record):
        return {key: value for key, value in record.items() if key not in outcome}

    assert all(raw(by_id[key]) == raw(record) for key, record in written_before_kill.items())


def test_workers_decode_single_samples_and_the_runner_regroups_the_planned_batches(tmp_path, monkeypatch):
    from mcub.data import DataPaths, load_task
    from mcub.models.base import Runtime
    from mcub.models.baselines import RandomModel
    from mcub.protocols import get_protocol
    from mcub.runner.batching import length_sorted_batches
    from mcub.runner.distributed import Distributed
    from mcub.runner.loop import Query, RunSettings, run_task
    from mcub.tasks import load_registry

    [task] = load_registry().resolve(["mcub-sample"])
    data = load_task(task, DataPaths())
    seen = []
    original = RandomModel.generate

    def recording(self, batch, max_new_tokens, stop="eos"):
        seen.append([sample.id for sample in batch.samples])
        return original(self, batch, max_new_tokens, stop)

    monkeypatch.setattr(RandomModel, "generate", recording)
    model = RandomModel(Runtime())
    model.media_preprocessing = {"image": "clip-336-pad", "audio": "beats-fbank", "video": "languagebind-224"}
    paper = get_protocol("paper")
    query = Query(task, paper, paper.decoding(task, 128))
    run_task(model, data, query, RunSettings(2, num_workers=2), tmp_path, Distributed(), progress=False)
    planned = [[data.samples[i].id for i in batch] for batch in length_sorted_batches(data.samples, 2)]
    assert seen == planned and len(seen) == 3
    records, _ = read_records(tmp_path / "mcub-sample.jsonl", repair=False)
    assert sorted(records) == sorted(sample.id for sample in data.samples)
    assert all(record.media[0].get("sha256") for record in records.values())
