"""Two torchrun node groups on one machine (c10d rendezvous on loopback, gloo): the work queue spans the nodes, the
records equal a single process's, and a run that lost a whole node resumes to the same records."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import question, write_json
from tiny_models import write_tiny_llama

from mcub.errors import PeerLost, RunError
from mcub.results import read_records
from mcub.runner.distributed import Distributed

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds torchrun's workers in /proc")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _records(path: Path) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [{key: value for key, value in record.items() if key != "timing"} for record in records]


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _node_groups(eval_args: list[str], logs: Path) -> list[subprocess.Popen]:
    """Two torchrun agents, one worker each, joined by a c10d rendezvous on loopback; the first hosts the rendezvous
    (it is started, and listening, before the second) and, started first, takes the lower ranks."""
    port = _free_port()
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"]
    launcher += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "loopback"]
    groups = []
    for node in range(2):
        log = (logs / f"node{node}.log").open("w")
        groups.append(subprocess.Popen([*launcher, "-m", "mcub.eval", *eval_args], stdout=log, stderr=log))
        deadline = time.monotonic() + 30
        while node == 0 and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
    return groups


def _workers(agent: subprocess.Popen) -> dict[int, int]:
    """The global RANK of each worker of a torchrun agent, by pid."""
    ranks = {}
    for child in Path(f"/proc/{agent.pid}/task/{agent.pid}/children").read_text().split():
        environment = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        ranks.update({int(child): int(entry[5:]) for entry in environment if entry.startswith(b"RANK=")})
    return ranks


def _finish(groups: list[subprocess.Popen], logs: Path) -> list[int]:
    codes = []
    for group in groups:
        try:
            codes.append(group.wait(timeout=120))
        except subprocess.TimeoutExpired:
            group.kill()
            raise AssertionError("a node group hung:\n" + (logs / "node0.log").read_text()[-3000:]) from None
    return codes


def test_two_node_groups_write_exactly_the_records_of_one_process(tmp_path):
    common = ["--model", "random", "--tasks", "mcub-sample", "--output-dir", str(tmp_path), "--no-progress"]
    common += ["--num-workers", "0", "--protocol", "loglik"]
    subprocess.run([sys.executable, "-m", "mcub.eval", *common, "--run-name", "one"], check=True, capture_output=True)
    codes = _finish(_node_groups(common, tmp_path), tmp_path)  # the run's name: rank 0's start time, on every node
    assert codes == [0, 0], (tmp_path / "node0.log").read_text()[-3000:] + (tmp_path / "node1.log").read_text()[-3000:]
    one = tmp_path / "random" / "one"
    [two] = [run for run in (tmp_path / "random").iterdir() if run != one]
    assert _records(two / "records" / "mcub-sample.jsonl") == _records(one / "records" / "mcub-sample.jsonl")
    assert sorted(p.name for p in (two / "records").iterdir()) == ["mcub-sample.jsonl"]
    summary = json.loads((two / "summary.json").read_text())
    assert summary["settings"]["world_size"] == 2
    assert summary["tasks"] == json.loads((one / "summary.json").read_text())["tasks"]


def test_a_run_that_loses_a_node_resumes_to_the_records_of_one_process(tmp_path):
    model_dir = write_tiny_llama(tmp_path / "tiny")
    data_root = tmp_path / "data"
    data_root.mkdir()
    (data_root / "audio.wav").write_bytes(b"RIFF-not-decoded-by-a-blind-model")
    prompt = "<audio>\nWhat makes the sound?\nA. a car\nB. a dog\nC. a cat\nD. a bell"
    n = 60
    write_json(
        data_root / "test/avqa-test_mm_audio.json", [question(i, prompt, audio=["data/audio.wav"]) for i in range(n)]
    )
    write_json(
        data_root / "test/avqa-test_mm_answer.json",
        [{"id": i, "conversations": [{"from": "gpt", "value": "ABCD"[i % 4]}]} for i in range(n)],
    )
    common = ["--model", "blind-vicuna", "--model-arg", f"pretrained={model_dir}", "--tasks", "avqa-audio"]
    common += ["--data-root", str(data_root), "--output-dir", str(tmp_path / "out"), "--no-progress"]
    common += ["--num-workers", "0", "--batch-size", "2", "--protocol", "generate", "--max-new-tokens", "8"]
    records = tmp_path / "out" / "blind-vicuna" / "k" / "records"
    parts = [records / f"avqa-audio.rank{rank}.jsonl" for rank in range(2)]
    groups = _node_groups([*common, "--run-name", "k"], tmp_path)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and min(_lines(part) for part in parts) < 4:
        time.sleep(0.02)
    assert min(_lines(part) for part in parts) >= 4, "both nodes claim batches from the one queue"
    first, second = groups
    workers = _workers(second)
    assert sorted(workers.values()) == [1], "the node group started first holds rank 0"
    for pid in [second.pid, *workers]:  # the whole node: its agent and its worker
        os.kill(pid, signal.SIGKILL)
    second.wait()
    started = time.monotonic()
    assert _finish([first], tmp_path) == [1]
    assert time.monotonic() - started < 60, "the surviving node does not wait for the lost one"
    message = [line for line in (tmp_path / "node0.log").read_text().splitlines() if line.startswith("error:")]
    assert len(message) == 1 and "rank 0 of 2 lost the other ranks while waiting for the other ranks" in message[0]
    assert "continue with: torchrun <the same options, on every node> -m mcub.eval --config" in message[0]
    assert message[0].endswith("--run-name k --resume")
    survived = {}
    for part in parts:
        survived.update(read_records(part, repair=False)[0])  # the lost node may have been killed mid-line
    assert n - 2 <= len(survived) <= n, "the survivor ran every batch but the one the lost node had in flight"
    written = {key: record.model_dump(mode="json", exclude={"timing"}) for key, record in survived.items()}

    assert _finish(_node_groups([*common, "--run-name", "k", "--resume"], tmp_path), tmp_path) == [0, 0]
    one = subprocess.run(
        [sys.executable, "-m", "mcub.eval", *common, "--run-name", "one"], capture_output=True, text=True
    )
    assert one.returncode == 0, one.stderr[-3000:]
    final = _records(records / "avqa-audio.jsonl")
    assert final == _records(tmp_path / "out" / "blind-vicuna" / "one" / "records" / "avqa-audio.jsonl")
    by_id = {record["id"]: record for record in final}
    outcome = {"scored", "extracted", "extraction", "unparseable", "correct", "scores", "judgement"}  # filled later
    assert all(
        {k: v for k, v in by_id[key].items() if k not in outcome}
        == {k: v for k, v in record.items() if k not in outcome}
        for key, record in written.items()
    )
    summary = json.loads((records.parent / "summary.json").read_text())
    assert summary["settings"]["world_size"] == 2 and summary["tasks"]["avqa-audio"]["metrics"]["n"] == n


def test_a_rank_that_waits_for_the_main_rank_in_vain_gives_up_with_what_it_waited_for():
    from torch.distributed import TCPStore

    store = TCPStore("127.0.0.1", _free_port(), is_master=True, timeout=timedelta(seconds=1), wait_for_workers=False)
    started = time.monotonic()
    with pytest.raises(PeerLost, match="rank 1 of 2 lost the other ranks while waiting for rank 0's run_name"):
        Distributed(1, 2, store).share("run_name", None)
    assert time.monotonic() - started < 10


def test_a_run_directory_that_another_node_does_not_see_is_an_error_naming_it(tmp_path):
    from torch.distributed import TCPStore

    store = TCPStore("127.0.0.1", _free_port(), is_master=True, timeout=timedelta(seconds=5), wait_for_workers=False)
    main_node, other_node = tmp_path / "main", tmp_path / "other"
    for directory in (main_node, other_node):
        directory.mkdir()
    (main_node / "run.yaml").write_text("model: random\n")
    Distributed(0, 2, store).check_shared(main_node / "run.yaml")
    Distributed(1, 2, store).check_shared(main_node / "run.yaml")  # the same file: shared
    with pytest.raises(RunError, match=r"other/run.yaml: rank 1 \(host .*\) does not see the one rank 0 wrote"):
        Distributed(1, 2, store).check_shared(other_node / "run.yaml")
    (other_node / "run.yaml").write_text("model: blind-vicuna\n")  # a run directory of the same name
    with pytest.raises(
        RunError, match="other/run.yaml: .* reads another file than the one rank 0 wrote; under torchrun"
    ):
        Distributed(1, 2, store).check_shared(other_node / "run.yaml")


def test_a_rank_computes_on_its_own_gpu_of_its_node_not_on_its_global_rank(monkeypatch):
    from mcub.runner.distributed import rank_device

    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert rank_device("cuda") == "cuda:1"
    assert Distributed(5, 8).local_device("cuda") == "cuda:1"
    assert Distributed(5, 8).local_device("cpu") == "cpu"
    assert Distributed().local_device("cuda") == "cuda"
