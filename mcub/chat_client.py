"""An asyncio HTTP client for OpenAI-compatible chat-completions requests (the openai-compatible adapter's and the
LLM judge's): bounded concurrency, an overall deadline per attempt,
bounded replies, retries with exponential backoff on 429, 5xx, timeouts and connection errors, replicas served
round-robin, no redirects followed. The bearer token goes only to the configured base URLs and never into a
message."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from mcub.errors import McubError

MAX_REPLY_BYTES = 64 << 20
"""The largest reply read (prompt log-probabilities of a long multimodal prompt take a few MB)."""
_ERROR_SNIPPET_BYTES = 300
T = TypeVar("T")


class RequestFailed(McubError):
    """A request that failed for good (after its retries, or at once where retrying cannot help), after `attempts`
    attempts."""

    def __init__(self, message: str, attempts: int = 1):
        super().__init__(message)
        self.attempts = attempts


class _Transient(Exception):
    """An attempt that failed in a way a retry may mend."""


@dataclass(frozen=True)
class Reply:
    """A server's parsed JSON reply, the endpoint that gave it and the attempts it took."""

    payload: Any
    url: str
    attempts: int


class ChatClient:
    """Posts request bodies to `<base_url>/chat/completions`, each attempt to the next replica in turn."""

    def __init__(
        self,
        base_urls: Sequence[str],
        api_key: str | None,
        concurrency: int,
        timeout_s: float,
        retries: int,
        backoff_s: float,
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ):
        self.endpoints = [f"{url.rstrip('/')}/chat/completions" for url in base_urls]
        if not self.endpoints:
            raise ValueError("a ChatClient needs at least one base URL")
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_reply_bytes = max_reply_bytes
        self._key = api_key
        self._turn = itertools.count()

    def __repr__(self) -> str:
        return f"ChatClient({self.endpoints}, concurrency={self.concurrency})"

    def post_all(self, bodies: Sequence[bytes]) -> list[Reply | RequestFailed]:
        """Every body posted, at most `concurrency` at once; per body its reply or why it failed, in order."""
        return _run(self._post_all(list(bodies)))

    async def _post_all(self, bodies: list[bytes]) -> list[Reply | RequestFailed]:
        import aiohttp

        semaphore = asyncio.Semaphore(self.concurrency)
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
            return list(await asyncio.gather(*(self._post(session, semaphore, body) for body in bodies)))

    async def _post(self, session, semaphore: asyncio.Semaphore, body: bytes) -> Reply | RequestFailed:
        attempts = self.retries + 1
        async with semaphore:
            for attempt in range(1, attempts + 1):
                url = self.endpoints[next(self._turn) % len(self.endpoints)]
                try:
                    payload = await asyncio.wait_for(self._attempt(session, url, body), self.timeout_s)
                    return Reply(payload, url, attempt)
                except TimeoutError:
                    problem = f"no complete reply from {url} within {self.timeout_s:g} s"
                except _Transient as error:
                    problem = str(error)
                except RequestFailed as error:
                    error.attempts = attempt
                    return error
                if attempt < attempts:
                    await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
        return RequestFailed(f"{problem} after {attempts} attempt{'s' if attempts > 1 else ''}", attempts)

    async def _attempt(self, session, url: str, body: bytes) -> Any:
        import aiohttp

        headers = {"Content-Type": "application/json"}
        if self._key is not None:
            headers["Authorization"] = f"Bearer {self._key}"
        try:
            async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                status = response.status
                if status == 429 or status >= 500:
                    raise _Transient(f"HTTP {status} from {url}")
                if 300 <= status < 400:
                    location = self.redacted(response.headers.get("Location", "nowhere"))
                    raise RequestFailed(f"HTTP {status} from {url} (to {location}): redirects are not followed")
                if not 200 <= status < 300:
                    snippet = (await response.content.read(_ERROR_SNIPPET_BYTES)).decode(errors="replace")
                    raise RequestFailed(f"HTTP {status} from {url}: {self.redacted(snippet.strip())}")
                data = await self._read(response, url)
        except aiohttp.ClientError as error:
            raise _Transient(f"{url} unreachable ({type(error).__name__}: {self.redacted(str(error))})") from None
        try:
            return json.loads(data)
        except ValueError as error:
            raise RequestFailed(f"malformed JSON from {url} ({error})") from None

    async def _read(self, response, url: str) -> bytes:
        """The reply body, refused once it grows past `max_reply_bytes`."""
        too_big = RequestFailed(f"the reply from {url} is larger than {self.max_reply_bytes} bytes")
        if response.content_length is not None and response.content_length > self.max_reply_bytes:
            raise too_big
        chunks, size = [], 0
        async for chunk in response.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > self.max_reply_bytes:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    def redacted(self, text: str) -> str:
        """`text` with the bearer token replaced, for anything a server's reply puts into records or messages."""
        return text.replace(self._key, "[api key]") if self._key else text


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end from synchronous code; inside a running event loop (a notebook), on a thread of
    its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
