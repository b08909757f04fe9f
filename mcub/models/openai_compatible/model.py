"""The `openai-compatible` Model: each sample is one chat-completions request (its media read from the files in
`prepare` and sent as content parts), a batch's requests are in flight at once, and each sample's receipts record
the bytes sent of every media input, the request's sha256, the replica that answered and its prompt token count."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mcub.chat_client import ChatClient, Reply, RequestFailed
from mcub.media import MediaInput
from mcub.models.base import Model, ModelError, PreparedBatch, Runtime
from mcub.models.openai_compatible.arguments import OpenAICompatibleArguments
from mcub.models.openai_compatible.payload import (
    EncodedMedia,
    body_bytes,
    chat_messages,
    encode_media,
    generation_body,
    prompt_logprobs_body,
    rendered_prompt,
)
from mcub.models.openai_compatible.replies import (
    ReplyError,
    continuation_logprob,
    prompt_logprobs,
    prompt_tokens,
    reply_text,
)
from mcub.schema import MediaReceipt, ModelDescription, Sample, Stop

T = TypeVar("T")


@dataclass(frozen=True)
class _Request:
    """A sample's messages and its encoded media."""

    messages: list[dict[str, Any]]
    media: list[EncodedMedia]


@dataclass(frozen=True)
class _Answer:
    """What a sample's requests gave: the value asked for, and per request what identifies it."""

    value: Any
    requests: list[dict[str, Any]]


class OpenAICompatibleModel(Model):
    """A model behind an OpenAI-compatible server. Greedy (temperature 0, seeded); `stop` is not sent (the server
    generates up to `max_new_tokens`, which a first-character score reads the first character of). A sample whose
    request fails (after its retries) raises an error naming it; its batch-mates' answers are kept and replayed
    when the runner poses the batch again sample by sample, so no request is sent twice."""

    modalities = frozenset(("image", "video", "audio"))
    media_preprocessing = None

    def __init__(self, runtime: Runtime, arguments: OpenAICompatibleArguments):
        self.arguments = arguments
        self.seed = runtime.seed if arguments.seed is None else arguments.seed
        self.client = ChatClient(
            arguments.base_url or [],
            read_api_key(arguments.api_key_file, arguments.api_key_env),
            arguments.concurrency,
            arguments.timeout_s,
            arguments.retries,
            arguments.backoff_s,
        )
        self._replay: dict[str, _Answer | str] = {}

    def prepare(self, samples: list[Sample], media: list[list[MediaInput]]) -> PreparedBatch:
        """Read and encode every media file (each once per batch) and build each sample's messages."""
        encoded: dict[tuple[str, str], EncodedMedia] = {}
        prompts, requests, receipts = [], [], []
        for sample in samples:
            items = [encoded.get(key) or encoded.setdefault(key, encode_media(*key)) for key in sample.media]
            messages = chat_messages(sample, items, self.arguments.system_prompt)
            prompts.append(rendered_prompt(messages, items))
            requests.append(_Request(messages, items))
            receipts.append([MediaReceipt(modality=m.modality, path=m.path, positions=None, details=m.details)
                             for m in items])  # fmt: skip
        return PreparedBatch(samples, prompts, requests, receipts)

    def generate(self, batch: PreparedBatch, max_new_tokens: int, stop: Stop = "eos") -> list[str]:
        bodies = [
            [body_bytes(generation_body(self.arguments.model, r.messages, max_new_tokens, self.seed))]
            for r in batch.inputs
        ]
        return self._answer_all(batch, bodies, lambda replies: reply_text(replies[0].payload))

    def loglik(self, batch: PreparedBatch, continuations: list[list[str]]) -> list[list[float]]:
        """Per continuation, the sum of its tokens' prompt log-probabilities after the prompt: one request of the
        prompt alone and one per continuation (as the assistant's answer begun); the continuation's tokens are
        those after the longest token prefix the two share (`continuation_logprob`)."""
        model = self.arguments.model
        bodies = [
            [body_bytes(prompt_logprobs_body(model, r.messages, self.seed, text)) for text in [None, *options]]
            for r, options in zip(batch.inputs, continuations, strict=True)
        ]

        def read(replies: list[Reply]) -> list[float]:
            context, *full = [prompt_logprobs(reply.payload) for reply in replies]
            return [continuation_logprob(context, tokens) for tokens in full]

        return self._answer_all(batch, bodies, read)

    def _answer_all(self, batch: PreparedBatch, bodies: list[list[bytes]], read: Callable[[list[Reply]], T]) -> list[T]:
        """Send every sample's requests at once and read each sample's replies; the receipts gain the requests.
        Any failure raises, naming the samples (after keeping every sample's outcome for a replay)."""
        if len(bodies) > 1:
            self._replay.clear()
        keys = [_replay_key(sample, own) for sample, own in zip(batch.samples, bodies, strict=True)]
        outcomes = {key: self._replay.pop(key) for key in keys if key in self._replay}
        pending = [index for index, key in enumerate(keys) if key not in outcomes]
        flat = [body for index in pending for body in bodies[index]]
        replies = iter(self.client.post_all(flat) if flat else [])
        for index in pending:
            own = [next(replies) for _ in bodies[index]]
            outcomes[keys[index]] = _outcome(batch.samples[index], bodies[index], own, read)
        failures = [outcome for outcome in (outcomes[key] for key in keys) if isinstance(outcome, str)]
        if failures:
            if len(bodies) > 1:
                self._replay.update(outcomes)
            raise RequestFailed("; ".join(failures))
        answers = [outcomes[key] for key in keys]
        batch.receipts = [
            [r.model_copy(update={"details": {**r.details, "requests": answer.requests}}) for r in receipts]
            for receipts, answer in zip(batch.receipts, answers, strict=True)
        ]
        return [answer.value for answer in answers]

    def describe(self) -> ModelDescription:
        arguments = self.arguments
        return ModelDescription(
            adapter="openai-compatible",
            weights={},
            details={
                "model": arguments.model,
                "base_urls": arguments.base_url,
                "weights": "served by the server: not hashed (a client cannot read them)",
                "temperature": 0,
                "seed": self.seed,
                "prompt_logprobs": arguments.prompt_logprobs,
                "system_prompt": arguments.system_prompt,
                "concurrency": arguments.concurrency,
                "timeout_s": arguments.timeout_s,
                "retries": arguments.retries,
                "backoff_s": arguments.backoff_s,
            },
        )


def _replay_key(sample: Sample, bodies: list[bytes]) -> str:
    """What identifies a sample's requests: the sample and the bytes of each."""
    digest = hashlib.sha256(f"{sample.task}\0{sample.id}\0".encode())
    for body in bodies:
        digest.update(hashlib.sha256(body).digest())
    return digest.hexdigest()


def _outcome(
    sample: Sample, bodies: list[bytes], replies: list[Reply | RequestFailed], read: Callable[[list[Reply]], T]
) -> _Answer | str:
    """A sample's answer, or why it has none (a message naming it)."""
    failed = next((reply for reply in replies if isinstance(reply, RequestFailed)), None)
    if failed is not None:
        return f"sample {sample.id}: {failed}"
    try:
        value = read(replies)
    except ReplyError as error:
        return f"sample {sample.id}: {error} (from {replies[0].url})"
    requests = [
        {"payload_sha256": hashlib.sha256(body).hexdigest(), "server": reply.url, "attempts": reply.attempts,
         "prompt_tokens": prompt_tokens(reply.payload)}
        for body, reply in zip(bodies, replies, strict=True)
    ]  # fmt: skip
    return _Answer(value, requests)


def read_api_key(api_key_file: str | None, api_key_env: str | None) -> str | None:
    """The bearer token from a file or from the environment variable named; None when neither is given."""
    if api_key_file is not None:
        try:
            key = Path(api_key_file).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ModelError(f"api_key_file {api_key_file}: cannot be read ({error.strerror})") from None
        if not key:
            raise ModelError(f"api_key_file {api_key_file}: the file is empty")
        return key
    if api_key_env is not None:
        key = os.environ.get(api_key_env, "").strip()
        if not key:
            raise ModelError(f"api_key_env: the environment variable {api_key_env} is not set or empty")
        return key
    return None
