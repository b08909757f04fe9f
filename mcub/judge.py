"""An LLM judge behind any OpenAI-compatible endpoint (a local server or a hosted API), pinned and audited:
temperature 0, PointLLM's three judgement formats, retries with backoff, every request and reply returned for the
records with the prompt's hash, judgements cached by (judge model, prompt hash), many asked at once with bounded
concurrency. An unreachable judge or an unparseable judgement is reported as such; nothing falls back to another
judge or to a random class."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from mcub.schema import JudgeConfig

JUDGEMENTS = ("classification", "caption", "close-set")


@dataclass
class Judgement:
    """One judged answer: the verdict in percent (None when the judge failed or its reply is unparseable)."""

    kind: str
    model: str
    prompt_sha256: str
    prompt: str
    reply: str | None
    verdict: float | None
    error: str | None
    attempts: int
    cached: bool

    def record(self) -> dict[str, Any]:
        return asdict(self)


def judge_prompt(kind: str, answer: str, reference: str, classes: Mapping[str, str] | None = None) -> str:
    """PointLLM's three judgements, asking for its reply formats (T/F; score#reason; index#class#reason)."""
    if kind == "classification":
        return (
            "You are evaluating a model's answer about a 3D object. Ground-truth description: "
            f"{reference!r}. Model answer: {answer!r}. Does the answer name the same type of object as the "
            "ground truth (synonyms and more specific or more general names of the same object count)? "
            "Reply with T or F as the first character, then a short reason."
        )
    if kind == "caption":
        return (
            "You are evaluating a model's caption of a 3D object against a human caption. Human caption: "
            f"{reference!r}. Model caption: {answer!r}. Score from 0 to 100 how well the model caption matches the "
            "human caption in object type, shape, colour, parts and use; hallucinated details lower the score. "
            "Reply exactly as `score#reason`, e.g. `70#the type matches but the colour is wrong`."
        )
    if kind == "close-set":
        listing = "; ".join(f"{index}: {name}" for index, name in enumerate((classes or {}).values()))
        return (
            f"Map the model's description of a 3D object to exactly one of these classes: {listing}. "
            f"Model description: {answer!r}. Reply exactly as `index#class#reason`, or `-1#NA#reason` if none fits."
        )
    raise ValueError(f"unknown judgement {kind!r}; known: {', '.join(JUDGEMENTS)}")


def parse_verdict(kind: str, reply: str, reference: str, classes: Mapping[str, str] | None = None) -> float | None:
    """The verdict in percent, or None when the reply does not follow the asked format."""
    text = reply.strip()
    if kind == "classification":
        return {"T": 100.0, "F": 0.0}.get(text[:1])
    if kind == "caption":
        match = re.match(r"^\s*(\d{1,3})\s*#", text)
        return float(match.group(1)) if match and int(match.group(1)) <= 100 else None
    match = re.match(r"^\s*(-?\d+)\s*#", text)
    keys = list(classes or {})
    if not match or not -1 <= int(match.group(1)) < len(keys):
        return None
    index = int(match.group(1))
    return 100.0 if index >= 0 and keys[index] == reference else 0.0


@dataclass(frozen=True)
class JudgeRequest:
    """One answer to judge: the judgement kind, the model's answer, the reference and, for close-set, the classes."""

    kind: str
    answer: str
    reference: str
    classes: Mapping[str, str] | None = None

    @property
    def prompt(self) -> str:
        return judge_prompt(self.kind, self.answer, self.reference, self.classes)


@dataclass(frozen=True)
class _Reply:
    """What asking one prompt gave: the reply text or an error, after how many attempts, and whether from the cache."""

    text: str | None
    error: str | None
    attempts: int
    cached: bool


class Judge:
    """Asks the configured endpoint; see the module docstring. Thread-safe: `judge_all` asks from worker threads."""

    def __init__(self, config: JudgeConfig):
        self.config = config
        self.api_key = Path(config.api_key_file).read_text().strip() if config.api_key_file else None
        self.cache = Path(config.cache_dir) if config.cache_dir else None

    def judge(self, kind: str, answer: str, reference: str, classes: Mapping[str, str] | None = None) -> Judgement:
        return self.judge_all([JudgeRequest(kind, answer, reference, classes)])[0]

    def judge_all(self, requests: Sequence[JudgeRequest]) -> list[Judgement]:
        """The judgements in request order, at most `config.concurrency` prompts asked at once; identical prompts
        are asked once (each request's verdict is still parsed against its own reference)."""
        prompts = [request.prompt for request in requests]
        unique = list(dict.fromkeys(prompts))
        workers = max(1, min(self.config.concurrency, len(unique)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            replies = dict(zip(unique, pool.map(self._reply, unique), strict=True))
        return [self._judgement(r, prompt, replies[prompt]) for r, prompt in zip(requests, prompts, strict=True)]

    def _judgement(self, request: JudgeRequest, prompt: str, reply: _Reply) -> Judgement:
        text, error = reply.text, reply.error
        verdict = parse_verdict(request.kind, text, request.reference, request.classes) if text is not None else None
        if text is not None and verdict is None:
            error = f"unparseable judgement for the {request.kind} format"
        digest = _sha256(prompt)
        return Judgement(
            request.kind, self.config.model, digest, prompt, text, verdict, error, reply.attempts, reply.cached
        )

    def _reply(self, prompt: str) -> _Reply:
        digest = _sha256(prompt)
        cached = self._cached(digest)
        if cached is not None:
            return _Reply(cached, None, 0, True)
        text, error, attempts = self._ask(prompt)
        if text is not None:
            self._store(digest, text)
        return _Reply(text, error, attempts, False)

    def _ask(self, prompt: str) -> tuple[str | None, str | None, int]:
        body = json.dumps({
            "model": self.config.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }).encode()  # fmt: skip
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = self.config.base_url.rstrip("/") + "/chat/completions"
        error = "no attempt"
        for attempt in range(1, self.config.retries + 2):
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                    payload = json.loads(response.read())
                return str(payload["choices"][0]["message"]["content"]), None, attempt
            except urllib.error.HTTPError as failure:
                error = f"HTTP {failure.code} from {url}"
                if failure.code < 500 and failure.code != 429:
                    return None, error, attempt
            except (urllib.error.URLError, TimeoutError, ConnectionError) as failure:
                error = f"judge unreachable at {url} ({failure})"
            except (KeyError, IndexError, TypeError, json.JSONDecodeError) as failure:
                return None, f"malformed reply from {url} ({type(failure).__name__}: {failure})", attempt
            if attempt <= self.config.retries:
                time.sleep(self.config.backoff_s * 2 ** (attempt - 1))
        return None, error, self.config.retries + 1

    def _cache_path(self, digest: str) -> Path | None:
        if self.cache is None:
            return None
        key = hashlib.sha256(f"{self.config.model}\0{self.config.temperature}\0{digest}".encode()).hexdigest()
        return self.cache / f"{key}.json"

    def _cached(self, digest: str) -> str | None:
        """The cached reply; None when there is none or the entry is damaged (then it is asked again and rewritten)."""
        path = self._cache_path(digest)
        if path is None or not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text())
        except ValueError:
            return None
        reply = entry.get("reply") if isinstance(entry, dict) else None
        return reply if isinstance(reply, str) else None

    def _store(self, digest: str, reply: str) -> None:
        """Write the entry to a temporary file and rename it, so no reader or concurrent writer sees half of it."""
        path = self._cache_path(digest)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as file:
                json.dump({"model": self.config.model, "prompt_sha256": digest, "reply": reply}, file)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise


@lru_cache(maxsize=4)
def judge_for(config: JudgeConfig) -> Judge:
    """One Judge per configuration for a whole run (its key file is read once)."""
    return Judge(config)


def _sha256(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()
