"""The LLM judge against a stub OpenAI-compatible server on loopback, started by the test."""

import json
import threading
import time

import pytest
from conftest import write_objaverse
from stub_judge import StubJudge

from mcub.eval import main as eval_main
from mcub.judge import Judge, JudgeRequest, judge_for, parse_verdict
from mcub.schema import JudgeConfig

CLASSES = {"0": "airplane", "8": "chair", "33": "table"}


@pytest.fixture
def stub():
    server = StubJudge()
    yield server
    server.close()


def _judge(stub, **extra):
    settings = {"retries": 3, "backoff_s": 0.01, "timeout_s": 5, **extra}
    return Judge(JudgeConfig(model="judge-7b", base_url=stub.url, **settings))


def test_the_three_pointllm_formats(stub):
    judge = _judge(stub)
    yes = judge.judge("classification", "YES a chair", "a wooden chair")
    assert (yes.verdict, yes.error, yes.attempts, yes.reply) == (100.0, None, 1, "T, the same kind of object")
    assert judge.judge("classification", "NO a lamp", "a chair").verdict == 0.0
    caption = judge.judge("caption", "SCORE a red chair", "a red chair with four legs")
    assert caption.verdict == 85.0 and len(caption.prompt_sha256) == 64
    closed = judge.judge("close-set", "CLASS8 something to sit on", "8", CLASSES)
    assert closed.verdict == 100.0 and "1: chair" in closed.prompt
    request = stub.requests[0]["body"]
    assert request["model"] == "judge-7b" and request["temperature"] == 0.0
    assert "a wooden chair" in request["messages"][0]["content"]


def test_parsing_rules():
    assert parse_verdict("classification", " T", "x") == 100.0 and parse_verdict("classification", "maybe", "x") is None
    assert parse_verdict("caption", "101#too much", "x") is None and parse_verdict("caption", "0#bad", "x") == 0.0
    assert parse_verdict("close-set", "-1#NA#nothing fits", "8", CLASSES) == 0.0
    assert parse_verdict("close-set", "7#bed#?", "8", CLASSES) is None
    assert parse_verdict("close-set", "2#table#legs", "8", CLASSES) == 0.0


def test_unparseable_failing_and_unreachable_judges_are_reported(stub):
    judge = _judge(stub)
    malformed = judge.judge("classification", "MALFORMED", "a chair")
    assert malformed.verdict is None and malformed.error == "unparseable judgement for the classification format"
    retried = judge.judge("classification", "FAIL2", "a chair")
    assert (retried.verdict, retried.attempts, retried.error) == (100.0, 3, None)
    down = judge.judge("classification", "DOWN", "a chair")
    assert down.verdict is None and down.reply is None and down.attempts == 4 and down.error.startswith("HTTP 500")
    broken = judge.judge("caption", "BROKEN", "a chair")
    assert broken.verdict is None and broken.error.startswith("malformed JSON")
    closed_port = Judge(
        JudgeConfig(model="m", base_url="http://127.0.0.1:9/v1", retries=1, backoff_s=0.01, timeout_s=2)
    )
    unreachable = closed_port.judge("classification", "YES", "a chair")
    assert unreachable.verdict is None and "unreachable" in unreachable.error


def test_judgements_are_cached_and_the_key_file_is_sent(stub, tmp_path):
    key = tmp_path / "key"
    key.write_text("secret-token\n")
    judge = _judge(stub, cache_dir=str(tmp_path / "cache"), api_key_file=str(key))
    first = judge.judge("caption", "SCORE a red chair", "a red chair")
    again = _judge(stub, cache_dir=str(tmp_path / "cache")).judge("caption", "SCORE a red chair", "a red chair")
    assert len(stub.requests) == 1 and stub.requests[0]["authorization"] == "Bearer secret-token"
    assert (again.cached, again.verdict, again.attempts, again.reply) == (True, 85.0, 0, first.reply)


@pytest.fixture
def slow_stub():
    server = StubJudge(default_reply="70#close enough", delay_s=0.1)
    yield server
    server.close()


def _captions(count):
    return [JudgeRequest("caption", f"answer {index}", "a red chair") for index in range(count)]


def test_one_judge_per_configuration():
    config = JudgeConfig(model="judge-7b", base_url="http://127.0.0.1:9/v1")
    assert judge_for(config) is judge_for(JudgeConfig(model="judge-7b", base_url="http://127.0.0.1:9/v1"))
    assert judge_for(config) is not judge_for(config.model_copy(update={"concurrency": 2}))


def test_judge_all_keeps_request_order_and_matches_judging_one_by_one(stub):
    requests = [
        JudgeRequest("classification", "YES a chair", "a wooden chair"),
        JudgeRequest("caption", "SCORE a red chair", "a red chair"),
        JudgeRequest("classification", "MALFORMED", "a chair"),
        JudgeRequest("close-set", "CLASS8 a seat", "8", CLASSES),
        JudgeRequest("classification", "NO a lamp", "a chair"),
        JudgeRequest("close-set", "CLASS8 a seat", "33", CLASSES),
        JudgeRequest("classification", "YES a chair", "a wooden chair"),
    ]
    one_by_one = [_judge(stub).judge(r.kind, r.answer, r.reference, r.classes) for r in requests]
    asked = len(stub.requests)
    together = _judge(stub, concurrency=4).judge_all(requests)
    assert together == one_by_one
    assert [j.verdict for j in together] == [100.0, 85.0, None, 100.0, 0.0, 0.0, 100.0]
    prompts = [r["body"]["messages"][0]["content"] for r in stub.requests[asked:]]
    assert sorted(prompts) == sorted({r.prompt for r in requests}) and len(prompts) == 5
    assert _judge(stub).judge_all([]) == []


def test_at_most_concurrency_requests_are_in_flight(slow_stub):
    judgements = _judge(slow_stub, concurrency=3).judge_all(_captions(12))
    assert slow_stub.most_in_flight == 3 and len(slow_stub.requests) == 12
    assert [j.verdict for j in judgements] == [70.0] * 12


def test_concurrent_judging_beats_serial_judging(slow_stub):
    def timed(concurrency):
        start = time.perf_counter()
        judgements = _judge(slow_stub, concurrency=concurrency).judge_all(_captions(16))
        return time.perf_counter() - start, judgements

    serial, one_at_a_time = timed(1)
    assert slow_stub.most_in_flight == 1
    concurrent, eight_at_a_time = timed(8)
    assert slow_stub.most_in_flight == 8 and concurrent < serial / 4
    assert eight_at_a_time == one_at_a_time


@pytest.mark.parametrize("damage", [b'{"reply": "85#half', b'{"reply": null}', b'["85#a list"]', b"", b"\xff\xfe"])
def test_a_damaged_cache_entry_is_a_failed_judgement_naming_the_file(stub, tmp_path, damage):
    cache = tmp_path / "cache"
    _judge(stub, cache_dir=str(cache)).judge("caption", "SCORE a red chair", "a red chair")
    (entry,) = cache.iterdir()
    entry.write_bytes(damage)
    again = _judge(stub, cache_dir=str(cache)).judge("caption", "SCORE a red chair", "a red chair")
    assert (again.cached, again.attempts, again.verdict, again.reply) == (True, 0, None, None)
    assert str(entry) in again.error and "delete it to ask again" in again.error
    assert len(stub.requests) == 1 and entry.read_bytes() == damage


def test_a_cache_entry_edited_or_moved_to_another_prompt_is_refused(stub, tmp_path):
    cache = tmp_path / "cache"
    judge = _judge(stub, cache_dir=str(cache))
    judge.judge("caption", "SCORE a red chair", "a red chair")
    judge.judge("classification", "NO a lamp", "a chair")
    entries = {json.loads(path.read_text())["reply"]: path for path in cache.iterdir()}
    caption, classification = entries["85#type and parts match"], entries["F, a different object"]
    edited = json.loads(caption.read_text()) | {"reply": "100#perfect"}
    caption.write_text(json.dumps(edited))
    classification.write_bytes(caption.read_bytes().replace(b"100#perfect", b"T, perfect"))
    for kind, answer in (("caption", "SCORE a red chair"), ("classification", "NO a lamp")):
        reference = "a red chair" if kind == "caption" else "a chair"
        refused = _judge(stub, cache_dir=str(cache)).judge(kind, answer, reference)
        assert refused.verdict is None and "does not match the prompt it is filed under" in refused.error
    assert len(stub.requests) == 2


def test_redirects_are_refused_and_the_key_goes_to_the_configured_origin_only(tmp_path):
    key = tmp_path / "key"
    key.write_text("secret-token\n")
    other = StubJudge(default_reply="T#the other origin judged")
    stub = StubJudge(redirect_to=other.url)
    try:
        judgement = _judge(stub, api_key_file=str(key)).judge("classification", "REDIRECT", "a chair")
        assert judgement.verdict is None and "HTTP 307" in judgement.error and "not followed" in judgement.error
        assert other.requests == [] and stub.requests[0]["authorization"] == "Bearer secret-token"
    finally:
        other.close()
        stub.close()


def test_a_reply_echoing_the_key_is_stored_redacted(stub, tmp_path):
    key = tmp_path / "key"
    key.write_text("secret-token\n")
    cache = tmp_path / "cache"
    judgement = _judge(stub, api_key_file=str(key), cache_dir=str(cache)).judge("classification", "ECHOAUTH", "x")
    assert judgement.verdict == 100.0 and judgement.reply == "T, and your key is Bearer [api key]"
    assert "secret-token" not in json.dumps(judgement.record())
    assert all("secret-token" not in entry.read_text() for entry in cache.iterdir())


def test_a_dripped_reply_meets_the_overall_deadline(stub):
    start = time.perf_counter()
    judgement = _judge(stub, retries=0, timeout_s=1).judge("classification", "DRIP", "a chair")
    assert time.perf_counter() - start < 2.5
    assert judgement.verdict is None and "no complete reply" in judgement.error and "within 1 s" in judgement.error


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ("BADUTF8", "malformed JSON"),
        ("TRUNCATED", "unreachable"),
        ("NULLCONTENT", "message.content is NoneType, not text"),
        ("HUGE", "larger than 65536 bytes"),
        ("BUSY", "unparseable judgement for the classification format"),
    ],
)
def test_a_broken_reply_is_a_failed_judgement_of_its_sample_only(stub, answer, error):
    requests = [JudgeRequest("classification", answer, "a chair"), JudgeRequest("classification", "YES", "a chair")]
    broken, fine = _judge(stub, retries=0).judge_all(requests)
    assert broken.verdict is None and error in broken.error and fine.verdict == 100.0
    assert broken.reply is None or len(broken.reply) < 100


def test_concurrent_writers_leave_whole_cache_entries(stub, tmp_path):
    requests = [JudgeRequest("caption", f"SCORE answer {index}", "a red chair") for index in range(16)]
    judges = [_judge(stub, cache_dir=str(tmp_path / "cache")) for _ in range(4)]
    threads = [threading.Thread(target=judge.judge_all, args=(requests,)) for judge in judges]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = sorted((tmp_path / "cache").iterdir())
    assert len(entries) == 16 and all(json.loads(e.read_text())["reply"] == "85#type and parts match" for e in entries)
    replayed = _judge(stub, cache_dir=str(tmp_path / "cache")).judge_all(requests)
    assert all(j.cached and j.verdict == 85.0 for j in replayed)


def test_an_evaluation_stores_every_judgement(tmp_path):
    stub = StubJudge(default_reply="T#looks like the same object")
    try:
        data_root = tmp_path / "data"
        write_objaverse(data_root, ["a1", "b2"], "a chair")
        args = ["--model", "tiny-damc", "--model-arg", f"cache_dir={tmp_path / 'tiny'}", "--tasks", "objaverse-cls"]
        args += [
            "--data-root",
            str(data_root),
            "--no-download",
            "--output-dir",
            str(tmp_path / "runs"),
            "--no-progress",
        ]
        args += ["--num-workers", "0", "--max-new-tokens", "4", "--judge-model", "judge-7b", "--judge-url", stub.url]
        assert eval_main([*args, "--run-name", "j"]) == 0
    finally:
        stub.close()
    run = tmp_path / "runs" / "tiny-damc" / "j"
    lines = (run / "records" / "objaverse-cls.jsonl").read_text().splitlines()
    judged = [json.loads(line)["judgement"] for line in lines]
    assert [j["verdict"] for j in judged] == [100.0, 100.0] and all(j["model"] == "judge-7b" for j in judged)
    assert all(j["reply"] == "T#looks like the same object" and len(j["prompt_sha256"]) == 64 for j in judged)
    summary = json.loads((run / "summary.json").read_text())
    metrics = summary["tasks"]["objaverse-cls"]["metrics"]
    assert metrics["scores"]["judge"]["mean"] == 100.0 and metrics["failed_judgements"] == 0
    assert summary["scoring"]["judge"]["model"] == "judge-7b" and summary["scoring"]["judge"]["temperature"] == 0.0


def test_judge_configuration_from_yaml_and_flags(tmp_path):
    from mcub.eval import build_parser, request_values
    from mcub.request import EvalRequest

    def _judge_config(args):
        return EvalRequest.build({"model": "random", **request_values(args)[0]}, "flags").scoring.judge

    config = tmp_path / "judge.yaml"
    config.write_text("model: judge-7b\nbase_url: http://127.0.0.1:8000/v1\nretries: 5\n")
    args = build_parser().parse_args(["--judge-config", str(config), "--judge-model", "judge-8b"])
    judge = _judge_config(args)
    assert (judge.model, judge.base_url, judge.retries, judge.temperature) == (
        "judge-8b",
        "http://127.0.0.1:8000/v1",
        5,
        0.0,
    )
    assert _judge_config(build_parser().parse_args([])) is None
    with pytest.raises(Exception, match="needs a model and a base URL"):
        _judge_config(build_parser().parse_args(["--judge-model", "m"]))
