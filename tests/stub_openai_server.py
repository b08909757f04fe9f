"""A stub OpenAI-compatible chat-completions server on loopback for tests and benchmarks. It records every request
and answers by keyword found in the request's text: DELAY (waits `delay_s` first), RATE429 (HTTP 429 twice, then
an answer), FAIL500 (always HTTP 500), MALFORMED (a body that is not JSON), EMPTY (content ""), NOCONTENT (no
message content), DRIP (a byte every 0.1 s), REDIRECT (HTTP 307 to `redirect_to`), ECHOAUTH (HTTP 400 quoting the
Authorization header); else a deterministic answer naming the content parts it got. With `prompt_logprobs`, the
prompt is rendered as text (see `rendered`) whose characters are its tokens, each of log-probability
`token_logprob`. It stops by itself after `deadline_s`."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def token_logprob(character: str) -> float:
    """The stub's log-probability of a one-character token."""
    return -((ord(character) % 5) + 1) / 10


def message_text(message: dict[str, Any]) -> str:
    """A message's content as text: text parts as they are, media parts as `[type]`."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part["text"] if part["type"] == "text" else f"[{part['type']}]" for part in content)


def rendered(body: dict[str, Any]) -> str:
    """The stub's chat template: `<role>text</role>` per message, the last one left open with
    `continue_final_message`, and `<assistant>` appended with `add_generation_prompt` (the default)."""
    messages = body["messages"]
    continued = body.get("continue_final_message", False)
    text = ""
    for index, message in enumerate(messages):
        text += f"<{message['role']}>{message_text(message)}"
        if not (continued and index == len(messages) - 1):
            text += f"</{message['role']}>"
    return text + ("<assistant>" if body.get("add_generation_prompt", True) and not continued else "")


class RequestCounts:
    """How often each request text was seen; replicas that share one rate-limit together (RATE429)."""

    def __init__(self):
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def seen(self, text: str) -> int:
        with self._lock:
            self._counts[text] = self._counts.get(text, 0) + 1
            return self._counts[text]


class _Server(ThreadingHTTPServer):
    request_queue_size = 128
    daemon_threads = True


class StubOpenAIServer:
    """See the module docstring. `requests` holds per request its body, the sha256 of its bytes, its Authorization
    header and path; `most_in_flight` is the most requests that were being served at once. Replicas given the same
    `counts` count RATE429 requests together."""

    def __init__(
        self,
        delay_s: float = 0.2,
        deadline_s: float = 60.0,
        redirect_to: str | None = None,
        counts: RequestCounts | None = None,
    ):
        self.requests: list[dict[str, Any]] = []
        self.delay_s = delay_s
        self.redirect_to = redirect_to
        self.in_flight = 0
        self.most_in_flight = 0
        self.counts = counts or RequestCounts()
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stall between them

            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                authorization = self.headers.get("Authorization")
                with stub._lock:
                    stub.requests.append({"body": json.loads(raw), "sha256": hashlib.sha256(raw).hexdigest(),
                                          "authorization": authorization, "path": self.path})  # fmt: skip
                    stub.in_flight += 1
                    stub.most_in_flight = max(stub.most_in_flight, stub.in_flight)
                try:
                    stub.answer(self, json.loads(raw), authorization)
                finally:
                    with stub._lock:
                        stub.in_flight -= 1

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._deadline = threading.Timer(deadline_s, self.close)
        self._deadline.daemon = True
        self._deadline.start()

    def answer(self, handler: BaseHTTPRequestHandler, body: dict[str, Any], authorization: str | None) -> None:
        text = "".join(message_text(message) for message in body["messages"])
        if "DELAY" in text:
            time.sleep(self.delay_s)
        if "FAIL500" in text:
            return _send(handler, 500, b"")
        if "RATE429" in text and self.counts.seen(text) <= 2:
            return _send(handler, 429, b"")
        if "MALFORMED" in text:
            return _send(handler, 200, b'{"choices": [{"message": ')
        if "REDIRECT" in text:
            return _send(handler, 307, b"", {"Location": f"{self.redirect_to}/chat/completions"})
        if "ECHOAUTH" in text:
            return _send(handler, 400, json.dumps({"error": f"refused {authorization}"}).encode())
        if "DRIP" in text:
            handler.send_response(200)
            handler.send_header("Content-Length", "1000")
            handler.end_headers()
            try:
                for _ in range(1000):
                    handler.wfile.write(b" ")
                    handler.wfile.flush()
                    time.sleep(0.1)
            except OSError:  # the client gave up
                pass
            return None
        parts = [part["type"] for part in body["messages"][-1]["content"] if isinstance(part, dict)]
        content = "" if "EMPTY" in text else f"A, from {len(parts)} parts: {', '.join(parts)}"
        message: dict[str, Any] = {"role": "assistant"} if "NOCONTENT" in text else {"content": content}
        prompt = rendered(body)
        reply: dict[str, Any] = {
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(content)},
        }
        if body.get("prompt_logprobs") is not None:
            reply["prompt_logprobs"] = [None] + [
                {str(ord(c)): {"logprob": token_logprob(c), "rank": 1, "decoded_token": c}} for c in prompt[1:]
            ]
        return _send(handler, 200, json.dumps(reply).encode(), {"Content-Type": "application/json"})

    def close(self) -> None:
        self._deadline.cancel()
        self.server.shutdown()
        self.server.server_close()


def _send(handler: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
