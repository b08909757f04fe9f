"""The LLM judge against a stub OpenAI-compatible server on loopback, started by the test."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import write_objaverse

from mcub.eval import main as eval_main
from mcub.judge import Judge, JudgeConfig, parse_verdict

CLASSES = {"0": "airplane", "8": "chair", "33": "table"}


class StubJudge:
    """Replies by keyword found in the prompt; `FAIL2` fails twice with HTTP 500, `DOWN` always does."""

    def __init__(self, default_reply=None):
        self.requests = []
        self.failures = {}
        self.default_reply = default_reply
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"body": body, "authorization": self.headers.get("Authorization")})
                status, reply = stub.reply(body["messages"][0]["content"])
                if status != 200:
                    self.send_response(status)
                    self.end_headers()
                    return
                payload = (
                    reply
                    if isinstance(reply, bytes)
                    else json.dumps({"choices": [{"message": {"content": reply}}]}).encode()
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reply(self, prompt):
        if "DOWN" in prompt:
            return 500, None
        if "FAIL2" in prompt:
            self.failures[prompt] = self.failures.get(prompt, 0) + 1
            if self.failures[prompt] <= 2:
                return 500, None
            return 200, "T#same object"
        for keyword, reply in (("YES", "T, the same kind of object"), ("NO", "F, a different object"),
                               ("SCORE", "85#type and parts match"), ("MALFORMED", "Probably similar?"),
                               ("CLASS8", "1#chair#four legs and a back"), ("BROKEN", b"{not json")):  # fmt: skip
            if keyword in prompt:
                return 200, reply
        return (200, self.default_reply) if self.default_reply else (404, None)

    def close(self):
        self.server.shutdown()


@pytest.fixture
def stub():
    server = StubJudge()
    yield server
    server.close()


def _judge(stub, **extra):
    return Judge(JudgeConfig(model="judge-7b", base_url=stub.url, retries=3, backoff_s=0.01, timeout_s=5, **extra))


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
    assert broken.verdict is None and broken.error.startswith("malformed reply")
    closed_port = Judge(
        JudgeConfig(model="m", base_url="http://127.0.0.1:9/v1", retries=1, backoff_s=0.01, timeout_s=2)
    )
    unreachable = closed_port.judge("classification", "YES", "a chair")
    assert unreachable.verdict is None and "judge unreachable" in unreachable.error


def test_judgements_are_cached_and_the_key_file_is_sent(stub, tmp_path):
    key = tmp_path / "key"
    key.write_text("secret-token\n")
    judge = _judge(stub, cache_dir=str(tmp_path / "cache"), api_key_file=str(key))
    first = judge.judge("caption", "SCORE a red chair", "a red chair")
    again = _judge(stub, cache_dir=str(tmp_path / "cache")).judge("caption", "SCORE a red chair", "a red chair")
    assert len(stub.requests) == 1 and stub.requests[0]["authorization"] == "Bearer secret-token"
    assert (again.cached, again.verdict, again.attempts, again.reply) == (True, 85.0, 0, first.reply)


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
    assert summary["settings"]["judge"]["model"] == "judge-7b" and summary["settings"]["judge"]["temperature"] == 0.0


def test_judge_configuration_from_yaml_and_flags(tmp_path):
    from mcub.eval import _judge_config, build_parser

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
