"""Reading chat-completions replies: the answer text, the prompt's token count, and the prompt log-probabilities
of vLLM's `prompt_logprobs` extension (per position a mapping of token id to `{logprob, rank, decoded_token}`, the
prompt's own token first; position 0 is null)."""

from __future__ import annotations

import math
from typing import Any

from mcub.errors import McubError
from mcub.models.base import scored_from

TokenLogprob = tuple[str, float]


class ReplyError(McubError):
    """A reply that lacks what was asked for."""


def reply_text(payload: Any) -> str:
    """`choices[0].message.content`: the answer, "" when the server answered nothing."""
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ReplyError("the reply has no choices[0].message.content") from None
    if not isinstance(content, str):
        raise ReplyError(f"choices[0].message.content is {type(content).__name__}, not text")
    return content


def prompt_tokens(payload: Any) -> int | None:
    """`usage.prompt_tokens`, where the server reports it."""
    usage = payload.get("usage") if isinstance(payload, dict) else None
    count = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return count if isinstance(count, int) else None


def prompt_logprobs(payload: Any) -> list[TokenLogprob | None]:
    """Per prompt position its token id and log-probability (None at position 0, which has none)."""
    entries = payload.get("prompt_logprobs") if isinstance(payload, dict) else None
    if not isinstance(entries, list) or len(entries) < 2:
        raise ReplyError("the reply has no prompt_logprobs (does the server return prompt log-probabilities?)")
    positions: list[TokenLogprob | None] = [None]
    for index, entry in enumerate(entries[1:], start=1):
        if not isinstance(entry, dict) or not entry:
            raise ReplyError(f"prompt_logprobs[{index}] is not a mapping of token id to log-probability")
        token, value = next(iter(entry.items()))
        logprob = value.get("logprob") if isinstance(value, dict) else None
        if not isinstance(logprob, int | float) or math.isnan(logprob):
            raise ReplyError(f"prompt_logprobs[{index}] has no numeric logprob for token {token}")
        positions.append((token, float(logprob)))
    return positions


def continuation_logprob(context: list[TokenLogprob | None], full: list[TokenLogprob | None]) -> float:
    """The sum of the log-probabilities of the tokens of `full` (prompt + continuation) after the longest prefix it
    shares with `context` (the prompt alone), so that a token merged across the boundary is scored, not dropped;
    at least the last token is scored, never position 0."""
    start = scored_from([entry and entry[0] for entry in context], [entry and entry[0] for entry in full])
    return sum(logprob for _, logprob in full[start:])
