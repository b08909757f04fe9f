"""The `openai-compatible` adapter against loopback stub servers: its arguments, the content parts and bytes it
sends, the key's handling, the client's deadline, redirects and reply bound, and whole runs in which each server
failure lands on its own sample and loglik is computed from prompt log-probabilities or refused up front."""

import base64
import hashlib
import io
import json
import time

import pytest
import soundfile
from conftest import answer, question, write_json
from stub_openai_server import StubOpenAIServer, token_logprob

import mcub
from mcub.chat_client import ChatClient, RequestFailed
from mcub.errors import RunError
from mcub.eval import main as eval_main
from mcub.hashing import file_sha256
from mcub.media import synthetic
from mcub.models.base import ModelError, Runtime, load_model_specs, validate_arguments
from mcub.models.openai_compatible.arguments import LOGLIK_REFUSAL, OpenAICompatibleArguments
from mcub.models.openai_compatible.model import OpenAICompatibleModel
from mcub.results import RunFiles
from mcub.schema import Sample

TASK = "mcub-3-image-audio-video"
KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def stub():
    server = StubOpenAIServer(delay_s=0.3, deadline_s=60)
    yield server
    server.close()


@pytest.fixture
def media(tmp_path):
    folder = tmp_path / "media"
    folder.mkdir()
    return {
        "image": str(synthetic.write_image(folder / "i.png", 24, 16, seed=1)),
        "audio": str(synthetic.write_audio(folder / "a.wav", 0.2, 16_000, 1, 440.0)),
        "flac": str(synthetic.write_audio(folder / "a.flac", 0.2, 22_050, 2, 330.0)),
        "video": str(synthetic.write_video(folder / "v.mp4", 6, 32, 24, 6)),
    }


def _model(url, **args):
    arguments = OpenAICompatibleArguments(model="served", base_url=url, retries=2, backoff_s=0.01, **args)
    return OpenAICompatibleModel(Runtime(seed=7), arguments)


def _sample(prompt, *media, sample_id="s1"):
    return Sample("t", sample_id, prompt, tuple(media), {"A": "x", "B": "y"}, "A")


def _data(part):
    url = part.get("image_url", part.get("video_url", {})).get("url")
    return base64.b64decode(url.partition(",")[2] if url else part["input_audio"]["data"])


def test_arguments_split_urls_name_what_is_missing_and_refuse_loglik_unless_declared():
    spec = load_model_specs()["openai-compatible"]
    assert spec.modalities == ("image", "video", "audio") and spec.args == {}
    assert spec.arguments().missing() == ["model", "base_url"]
    arguments = OpenAICompatibleArguments(model="m", base_url="http://a:8000/v1/, http://b:8000/v1")
    assert arguments.base_url == ["http://a:8000/v1", "http://b:8000/v1"] and arguments.missing() == []
    assert arguments.decoding_refusal("loglik") == LOGLIK_REFUSAL and arguments.decoding_refusal("generate") is None
    assert OpenAICompatibleArguments(prompt_logprobs=True).decoding_refusal("loglik") is None
    with pytest.raises(ModelError, match="'ftp://x' is not an http"):
        validate_arguments("openai-compatible", {"base_url": "ftp://x"}, "m")
    with pytest.raises(ModelError, match="not both"):
        validate_arguments("openai-compatible", {"api_key_file": "/k", "api_key_env": "K"}, "m")


def test_content_parts_follow_the_placeholders_and_carry_each_files_bytes(stub, media):
    model = _model(stub.url, system_prompt="Be brief.")
    prompt = "look <image> hear <audio> and <audio>, watch <video>\nA. x\nB. y"
    sample = _sample(prompt, ("image", media["image"]), ("audio", media["audio"]), ("audio", media["flac"]),
                     ("video", media["video"]))  # fmt: skip
    batch = model.prepare([sample], [[]])
    system, user = batch.inputs[0].messages
    assert system == {"role": "system", "content": "Be brief."}
    parts = user["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "text", "input_audio", "text", "input_audio", "text",
                                          "video_url", "text"]  # fmt: skip
    assert [p["text"] for p in parts if p["type"] == "text"] == ["look ", " hear ", " and ", ", watch ", "\nA. x\nB. y"]
    image, wav, flac, video = (p for p in parts if p["type"] != "text")
    assert image["image_url"]["url"].startswith("data:image/png;base64,")
    assert video["video_url"]["url"].startswith("data:video/mp4;base64,")
    for part, path in ((image, media["image"]), (wav, media["audio"]), (video, media["video"])):
        assert hashlib.sha256(_data(part)).hexdigest() == file_sha256(path)
    assert wav["input_audio"]["format"] == flac["input_audio"]["format"] == "wav"
    samples, rate = soundfile.read(io.BytesIO(_data(flac)))
    assert rate == 16_000 and samples.ndim == 1 and abs(len(samples) - 3200) <= 1
    receipts = batch.receipts[0]
    assert [(r.modality, r.path, r.positions) for r in receipts] == [(m, p, None) for m, p in sample.media]
    assert [r.details["sent"] for r in receipts] == ["file-bytes", "file-bytes", "wav-16k", "file-bytes"]
    assert receipts[2].details["sha256"] == hashlib.sha256(_data(flac)).hexdigest()
    assert receipts[2].details["bytes"] == len(_data(flac)) and receipts[0].details["mime"] == "image/png"
    assert "base64" not in batch.prompts[0] and receipts[0].details["sha256"] in batch.prompts[0]


def test_requests_are_greedy_seeded_hashed_and_carry_no_key_unless_one_is_given(stub, media):
    model = _model(stub.url)
    batch = model.prepare([_sample("<image> what?", ("image", media["image"])), _sample("plain", sample_id="s2")],
                          [[], []])  # fmt: skip
    assert model.generate(batch, 12) == ["A, from 2 parts: image_url, text", "A, from 1 parts: text"]
    sent = stub.requests[0]["body"]
    assert {k: sent[k] for k in ("model", "temperature", "seed", "max_tokens", "n")} == {
        "model": "served", "temperature": 0, "seed": 7, "max_tokens": 12, "n": 1}  # fmt: skip
    assert [r["authorization"] for r in stub.requests] == [None, None]
    [request] = batch.receipts[0][0].details["requests"]
    assert request["payload_sha256"] in {r["sha256"] for r in stub.requests}
    assert request["server"] == f"{stub.url}/chat/completions" and request["attempts"] == 1
    assert request["prompt_tokens"] == len("<user>[image_url] what?</user><assistant>")
    assert batch.receipts[1] == []


def test_the_key_comes_from_its_file_or_named_variable_and_is_never_shown(stub, tmp_path, monkeypatch):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    monkeypatch.setenv("MCUB_TEST_KEY", KEY)
    for model in (_model(stub.url, api_key_file=str(key_file)), _model(stub.url, api_key_env="MCUB_TEST_KEY")):
        batch = model.prepare([_sample("hello")], [[]])
        assert model.generate(batch, 4) == ["A, from 1 parts: text"]
        assert stub.requests[-1]["authorization"] == f"Bearer {KEY}"
        with pytest.raises(RequestFailed, match=r"HTTP 400 .*refused Bearer \[api key\]") as caught:
            model.generate(model.prepare([_sample("ECHOAUTH")], [[]]), 4)
        assert KEY not in str(caught.value) and KEY not in repr(model.client)
        assert KEY not in json.dumps(model.describe().model_dump())
    monkeypatch.delenv("MCUB_TEST_KEY")
    with pytest.raises(ModelError, match="environment variable MCUB_TEST_KEY is not set"):
        _model(stub.url, api_key_env="MCUB_TEST_KEY")


def test_the_deadline_is_overall_redirects_are_not_followed_and_replies_are_bounded(stub):
    other = StubOpenAIServer(deadline_s=30)
    try:
        redirecting = StubOpenAIServer(deadline_s=30, redirect_to=other.url)
        client = ChatClient([redirecting.url], "k", concurrency=2, timeout_s=0.5, retries=0, backoff_s=0)
        body = {"model": "m", "messages": [{"role": "user", "content": "DRIP"}]}
        start = time.perf_counter()
        [dripped] = client.post_all([json.dumps(body).encode()])
        assert time.perf_counter() - start < 1.5
        assert "no complete reply" in str(dripped) and "within 0.5 s after 1 attempt" in str(dripped)
        body["messages"][0]["content"] = "REDIRECT"
        [redirected] = client.post_all([json.dumps(body).encode()])
        assert "HTTP 307" in str(redirected) and "redirects are not followed" in str(redirected)
        assert other.requests == []
        small = ChatClient([stub.url], None, concurrency=1, timeout_s=5, retries=0, backoff_s=0, max_reply_bytes=50)
        body["messages"][0]["content"] = "hello"
        [too_big] = small.post_all([json.dumps(body).encode()])
        assert "larger than 50 bytes" in str(too_big)
        redirecting.close()
    finally:
        other.close()


def _task_data(tmp_path, keywords):
    """The MCUB-3 image-audio-video task, one sample per keyword, its media synthetic."""
    data_root, folder = tmp_path / "data", tmp_path / "data" / "files"
    folder.mkdir(parents=True)
    questions, answers = [], []
    for index, keyword in enumerate(keywords):
        files = {
            "vision": [str(synthetic.write_image(folder / f"i{index}.png", 16, 16, seed=index))],
            "audio": [str(synthetic.write_audio(folder / f"a{index}.wav", 0.1, 16_000, 1, 200.0 + index))],
            "video": [str(synthetic.write_video(folder / f"v{index}.mp4", 4, 32, 24, 4))],
        }
        prompt = f"<image>\n<audio>\n<video>\nWhat is common? {keyword}\nA. sound\nB. colour\nC. size\nD. none"
        questions.append(question(f"q{index}", prompt, **files))
        answers.append(answer(f"q{index}", "A"))
    write_json(data_root / "test" / "MCUB-3-image-audio-video.json", questions)
    write_json(data_root / "test" / "MCUB-answer.json", answers)
    return data_root


def _request(tmp_path, data_root, model_args, **extra):
    return mcub.EvalRequest(model="openai-compatible", model_args={"model": "served", "retries": 2, "backoff_s": 0.01,
                            **model_args}, tasks=[TASK], data_root=data_root, download=False,
                            output_dir=tmp_path / "runs", run_name="r", num_workers=0, progress=False, batch_size=8,
                            max_new_tokens=16, **extra)  # fmt: skip


def test_a_run_records_each_server_failure_on_its_own_sample_and_sends_nothing_twice(tmp_path, stub):
    second = StubOpenAIServer(delay_s=0.3, deadline_s=60, counts=stub.counts)
    keywords = ["fine", "also fine", "DELAY", "RATE429", "FAIL500", "MALFORMED", "EMPTY", "NOCONTENT"]
    data_root = _task_data(tmp_path, keywords)
    (tmp_path / "key").write_text(KEY)
    args = {"base_url": f"{stub.url},{second.url}", "api_key_file": str(tmp_path / "key")}
    try:
        summary = mcub.evaluate(_request(tmp_path, data_root, args))
    finally:
        second.close()
    run_dir = tmp_path / "runs" / "openai-compatible" / "r"
    records = {r.id: r for r in RunFiles(run_dir).records[TASK].values()}
    assert sorted(records) == [f"q{i}" for i in range(len(keywords))]
    by_keyword = {keyword: records[f"q{i}"] for i, keyword in enumerate(keywords)}
    for keyword in ("fine", "also fine", "DELAY", "RATE429"):
        assert by_keyword[keyword].error is None, by_keyword[keyword].error
        assert by_keyword[keyword].output.startswith("A, from 6 parts: image_url, text, input_audio")
        assert by_keyword[keyword].correct is True
    assert by_keyword["EMPTY"].error is None and by_keyword["EMPTY"].output == ""
    assert "HTTP 500 from http://127.0.0.1:" in by_keyword["FAIL500"].error
    assert "after 3 attempts" in by_keyword["FAIL500"].error and "sample q4" in by_keyword["FAIL500"].error
    assert "malformed JSON" in by_keyword["MALFORMED"].error
    assert "no choices[0].message.content" in by_keyword["NOCONTENT"].error
    metrics = summary.tasks[TASK].metrics
    assert (metrics.n, metrics.errors, metrics.correct) == (8, 3, 4)
    sent = [r for server in (stub, second) for r in server.requests]
    assert stub.requests and second.requests, "both replicas serve"
    texts = [r["body"]["messages"][0]["content"][-1]["text"] for r in sent]
    counts = {keyword: sum(f"common? {keyword}\n" in text for text in texts) for keyword in keywords}
    assert counts == {"fine": 1, "also fine": 1, "DELAY": 1, "RATE429": 3, "FAIL500": 3, "MALFORMED": 1, "EMPTY": 1,
                      "NOCONTENT": 1}  # fmt: skip
    rate429 = by_keyword["RATE429"].receipts
    assert [r.modality for r in rate429] == ["image", "audio", "video"]
    [request] = rate429[0].details["requests"]
    assert request["attempts"] == 3 and request["payload_sha256"] in {r["sha256"] for r in sent}
    assert summary.tasks[TASK].media["video"].consumed == 5
    assert all(r["authorization"] == f"Bearer {KEY}" for r in sent)
    for path in run_dir.rglob("*"):
        assert not path.is_file() or KEY not in path.read_text(errors="replace"), path
    assert summary.model.weights == {} and summary.model.details["base_urls"] == [stub.url, second.url]


def test_loglik_is_refused_up_front_without_prompt_logprobs_and_computed_with_them(tmp_path, stub):
    data_root = _task_data(tmp_path, ["fine", "other"])
    with pytest.raises(RunError, match="prompt_logprobs=true"):
        mcub.evaluate(_request(tmp_path, data_root, {"base_url": stub.url}, protocol="loglik"))
    assert stub.requests == []
    request = _request(tmp_path, data_root, {"base_url": stub.url, "prompt_logprobs": True}, protocol="loglik")
    summary = mcub.evaluate(request.model_copy(update={"run_name": "ll"}))
    records = RunFiles(tmp_path / "runs" / "openai-compatible" / "ll").records[TASK].values()
    for record in records:
        assert record.error is None
        assert record.option_logliks == pytest.approx({key: token_logprob(key) for key in "ABCD"})
        assert len(record.receipts[0].details["requests"]) == 5
    assert summary.tasks[TASK].metrics.correct == 2
    context = [r["body"] for r in stub.requests if r["body"]["messages"][-1]["role"] == "user"]
    continued = [r["body"] for r in stub.requests if r["body"]["messages"][-1]["role"] == "assistant"]
    assert len(context) == 2 and len(continued) == 8
    assert all(b["prompt_logprobs"] == 0 and b["max_tokens"] == 1 for b in context + continued)
    assert all(b["continue_final_message"] and not b["add_generation_prompt"] for b in continued)


def test_the_adapter_without_model_or_base_url_is_a_clear_error_before_anything_runs(tmp_path, capsys):
    code = eval_main(["--model", "openai-compatible", "--tasks", TASK, "--output-dir", str(tmp_path / "runs"),
                      "--no-progress"])  # fmt: skip
    assert code == 2
    assert "give --model-arg model=..., --model-arg base_url=..." in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
