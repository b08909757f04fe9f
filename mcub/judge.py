"""An LLM judge behind any OpenAI-compatible endpoint (a local server or a hosted API), pinned and audited:
temperature 0, PointLLM's three judgement formats, retries with backoff, every request and reply returned for the
records with the prompt's hash, judgements cached by (judge model, prompt hash) in entries bound to what they
answer, many asked at once with bounded concurrency. An unreachable judge or an unparseable judgement is reported as
such; nothing falls back to another judge or to a random class."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from mcub.schema import JudgeConfig

JUDGEMENTS = ("classification", "caption", "close-set")
_CLASSIFICATION_REPLY = re.compile(r"^(T|F|true|false)(?![A-Za-z0-9])", re.IGNORECASE)
"""T or F (or the word true or false) as the reply's first word: "Too many requests" is no verdict."""


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
    """The verdict in percent, or None when the reply does not follow the asked format (classification: T or F,
    or the word true or false, as its first word)."""
    text = reply.strip()
    if kind == "classification":
        match = _CLASSIFICATION_REPLY.match(text)
        return (100.0 if match.group(1).upper().startswith("T") else 0.0) if match else None
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
    """Asks the configured endpoint through `mcub.chat_client.ChatClient`: at most `config.concurrency` requests at
    once, `config.timeout_s` for the whole of each attempt (a reply dripped byte by byte included), replies of at
    most `config.max_reply_bytes`, no redirect followed (the key goes to the configured origin only), and the key
    redacted from every reply and error before it is stored. Whatever goes wrong with one prompt (an unreachable
    judge, a malformed reply, a cache entry that does not match its prompt) is a failed judgement of that prompt's
    samples, never an aborted run. Thread-safe."""

    def __init__(self, config: JudgeConfig):
        from mcub.chat_client import ChatClient

        self.config = config
        self.api_key = Path(config.api_key_file).read_text().strip() if config.api_key_file else None
        self.cache = Path(config.cache_dir) if config.cache_dir else None
        self.client = ChatClient(
            [config.base_url],
            self.api_key or None,
            config.concurrency,
            config.timeout_s,
            config.retries,
            config.backoff_s,
            config.max_reply_bytes,
        )

    def judge(self, kind: str, answer: str, reference: str, classes: Mapping[str, str] | None = None) -> Judgement:
        return self.judge_all([JudgeRequest(kind, answer, reference, classes)])[0]

    def judge_all(self, requests: Sequence[JudgeRequest]) -> list[Judgement]:
        """The judgements in request order, at most `config.concurrency` prompts asked at once; identical prompts
        are asked once (each request's verdict is still parsed against its own reference)."""
        prompts = [request.prompt for request in requests]
        replies = {prompt: self._cached(_sha256(prompt)) for prompt in dict.fromkeys(prompts)}
        missing = [prompt for prompt, reply in replies.items() if reply is None]
        for prompt, answer in zip(missing, self.client.post_all([self._body(p) for p in missing]), strict=True):
            replies[prompt] = reply = self._reply(answer)
            if reply.text is not None:
                self._store(_sha256(prompt), reply.text)
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

    def _body(self, prompt: str) -> bytes:
        return json.dumps({
            "model": self.config.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }).encode()  # fmt: skip

    def _reply(self, answer: Any) -> _Reply:
        """The judge's text from a chat-completions reply (redacted of the key), or why there is none."""
        from mcub.chat_client import RequestFailed

        if isinstance(answer, RequestFailed):
            return _Reply(None, self.client.redacted(str(answer)), answer.attempts, False)
        try:
            content = answer.payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as failure:
            problem = f"malformed reply from {answer.url} (no choices[0].message.content: {type(failure).__name__})"
            return _Reply(None, problem, answer.attempts, False)
        if not isinstance(content, str):
            problem = f"malformed reply from {answer.url} (message.content is {type(content).__name__}, not text)"
            return _Reply(None, problem, answer.attempts, False)
        return _Reply(self.client.redacted(content), None, answer.attempts, False)

    def _cache_path(self, digest: str) -> Path | None:
        if self.cache is None:
            return None
        key = hashlib.sha256(f"{self.config.model}\0{self.config.temperature}\0{digest}".encode()).hexdigest()
        return self.cache / f"{key}.json"

    def _entry_sha256(self, digest: str, reply: str) -> str:
        """What a cache entry answers, bound to its reply: an entry moved to another prompt or edited no longer
        matches."""
        identity = f"{self.config.model}\0{self.config.temperature}\0{digest}\0{reply}"
        return hashlib.sha256(identity.encode()).hexdigest()

    def _cached(self, digest: str) -> _Reply | None:
        """The cached reply; None when there is none; a failed judgement naming the file when the entry is
        unreadable or does not match the prompt it is filed under (delete it to ask again)."""
        path = self._cache_path(digest)
        if path is None or not path.is_file():
            return None
        try:
            entry = json.loads(path.read_bytes())
        except (OSError, ValueError) as error:
            return _Reply(None, f"judge cache entry {path} is unreadable ({error}); delete it to ask again", 0, True)
        reply = entry.get("reply") if isinstance(entry, dict) else None
        expected = {"model": self.config.model, "prompt_sha256": digest}
        if (
            not isinstance(reply, str)
            or any(entry.get(name) != value for name, value in expected.items())
            or entry.get("entry_sha256") != self._entry_sha256(digest, reply)
        ):
            problem = f"judge cache entry {path} does not match the prompt it is filed under; delete it to ask again"
            return _Reply(None, problem, 0, True)
        return _Reply(reply, None, 0, True)

    def _store(self, digest: str, reply: str) -> None:
        """Write the entry to a temporary file and rename it, so no reader or concurrent writer sees half of it."""
        path = self._cache_path(digest)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "model": self.config.model,
            "prompt_sha256": digest,
            "reply": reply,
            "entry_sha256": self._entry_sha256(digest, reply),
        }
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as file:
                json.dump(entry, file)
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
