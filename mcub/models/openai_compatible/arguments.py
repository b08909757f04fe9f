"""The arguments of the `openai-compatible` adapter. Importable without torch or aiohttp; `model` and `base_url`
may be left to `--model-arg`, so a model file can name the adapter alone."""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from mcub.modalities import Modality
from mcub.models.arguments import AdapterArguments

LOGLIK_REFUSAL = (
    "the server is not declared to return prompt log-probabilities; "
    "pass --model-arg prompt_logprobs=true if it does (vLLM does)"
)


class OpenAICompatibleArguments(AdapterArguments):
    """A served model (`model`, as the server names it) at one or more `base_url`s (`http://host:8000/v1`; several,
    comma-separated, are data-parallel replicas served round-robin). A bearer token comes from `api_key_file` or
    from the environment variable `api_key_env` names (never from the arguments themselves). `concurrency` bounds
    the requests in flight (pass `--batch-size` at least as large: a batch is what is in flight at once); each
    attempt has `timeout_s` in all, and 429, 5xx, timeouts and connection errors are retried `retries` times with
    backoff `backoff_s` * 2^k. `seed` is sent with every request (default: the run's `--seed`)."""

    builder: ClassVar[str] = "mcub.models.openai_compatible.model:OpenAICompatibleModel"
    computes_on_device: ClassVar[bool] = False

    model: str | None = None
    base_url: list[str] | None = None
    api_key_file: str | None = None
    api_key_env: str | None = None
    concurrency: int = Field(default=8, ge=1)
    timeout_s: float = Field(default=120.0, gt=0)
    retries: int = Field(default=3, ge=0)
    backoff_s: float = Field(default=1.0, ge=0)
    seed: int | None = None
    prompt_logprobs: bool = False
    """Whether the server returns prompt log-probabilities (vLLM's `prompt_logprobs` extension): needed by loglik."""
    system_prompt: str | None = None

    @field_validator("base_url", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        return [url.strip() for url in value.split(",")] if isinstance(value, str) else value

    @field_validator("base_url")
    @classmethod
    def _http_urls(cls, urls: list[str] | None) -> list[str] | None:
        if urls is None:
            return None
        if not urls:
            raise ValueError("no URL given")
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
                raise ValueError(f"{url!r} is not an http(s) base URL such as http://localhost:8000/v1")
        return [url.rstrip("/") for url in urls]

    @model_validator(mode="after")
    def _one_key_source(self) -> OpenAICompatibleArguments:
        if self.api_key_file is not None and self.api_key_env is not None:
            raise ValueError("give `api_key_file` or `api_key_env`, not both")
        return self

    def input_modalities(self) -> tuple[Modality, ...]:
        return ("image", "video", "audio")

    def missing(self) -> list[str]:
        return [name for name in ("model", "base_url") if getattr(self, name) is None]

    def decoding_refusal(self, kind: str) -> str | None:
        return LOGLIK_REFUSAL if kind == "loglik" and not self.prompt_logprobs else None
