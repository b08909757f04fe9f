"""A stub OpenAI-compatible judge on loopback for tests and benchmarks: replies by keyword, optionally slowly,
counts the most requests it served at once, and misbehaves on request as a hostile or broken judge would."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KEYWORD_REPLIES: tuple[tuple[str, str | bytes], ...] = (
    ("YES", "T, the same kind of object"),
    ("NO", "F, a different object"),
    ("SCORE", "85#type and parts match"),
    ("MALFORMED", "Probably similar?"),
    ("CLASS8", "1#chair#four legs and a back"),
    ("BROKEN", b"{not json"),
    ("BADUTF8", b'{"choices": [{"message": {"content": "T\xff\xfe"}}]}'),
    ("NULLCONTENT", b'{"choices": [{"message": {"content": null}}]}'),
    ("BUSY", "Too many requests, try again later"),
    ("HUGE", "T" + "!" * (20 << 20)),
)
HOSTILE = ("REDIRECT", "ECHOAUTH", "DRIP", "TRUNCATED")
"""Keywords answered by misbehaving: a 307 to `redirect_to`, the Authorization header echoed in the reply, a reply
dripped a byte every 0.2 s, a body shorter than its Content-Length."""


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 makes a burst of connections wait a SYN retry (1 s)
    daemon_threads = True


class StubJudge:
    """Replies by keyword found in the prompt (`KEYWORD_REPLIES`), else `default_reply` (else HTTP 404); `FAIL2`
    fails twice with HTTP 500, `DOWN` always does. Each request waits `delay_s` first; `most_in_flight` is the
    most requests that were being served at once."""

    def __init__(self, default_reply: str | None = None, delay_s: float = 0.0, redirect_to: str | None = None):
        self.redirect_to = redirect_to
        self.requests: list[dict[str, Any]] = []
        self.failures: dict[str, int] = {}
        self.default_reply = default_reply
        self.delay_s = delay_s
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, reply = stub.serve(body, self.headers.get("Authorization"))
                hostile = next((word for word in HOSTILE if word in body["messages"][0]["content"]), None)
                if hostile:
                    stub.misbehave(self, hostile)
                    return
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

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def serve(self, body: dict[str, Any], authorization: str | None) -> tuple[int, str | bytes | None]:
        """Record the request, wait `delay_s` while counting it in flight, and answer it."""
        with self._lock:
            self.requests.append({"body": body, "authorization": authorization})
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(self.delay_s)
            return self.reply(body["messages"][0]["content"])
        finally:
            with self._lock:
                self.in_flight -= 1

    def reply(self, prompt: str) -> tuple[int, str | bytes | None]:
        if "DOWN" in prompt:
            return 500, None
        if "FAIL2" in prompt:
            with self._lock:
                self.failures[prompt] = self.failures.get(prompt, 0) + 1
                failed = self.failures[prompt]
            return (500, None) if failed <= 2 else (200, "T#same object")
        for keyword, reply in KEYWORD_REPLIES:
            if keyword in prompt:
                return 200, reply
        return (200, self.default_reply) if self.default_reply else (404, None)

    def misbehave(self, handler: BaseHTTPRequestHandler, how: str) -> None:
        if how == "REDIRECT":
            handler.send_response(307)
            handler.send_header("Location", f"{self.redirect_to}/chat/completions")
            handler.end_headers()
            return
        content = f"T, and your key is {handler.headers.get('Authorization')}" if how == "ECHOAUTH" else "T"
        payload = json.dumps({"choices": [{"message": {"content": content}}]}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload) + (100 if how == "TRUNCATED" else 0)))
        handler.end_headers()
        if how != "DRIP":
            handler.wfile.write(payload)
            return
        try:
            for byte in payload:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(0.2)
        except OSError:
            return  # the client gave up, as it should

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
