"""Scoring a task's records: a pure function of (records, task, protocol, scorer settings) that fills each record's
outcome. It needs no model: the runner writes raw records, and this runs after generation (in `mcub eval`), on a
finished run (`mcub score RUN_DIR`) and in `leaderboard validate`. A task's LLM judgements are asked at once, with
the judge's bounded concurrency, never inside the batch loop."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any

from mcub.protocols import Answer, Protocol, ProtocolError
from mcub.schema import Record, ScorerSettings
from mcub.tasks import TaskSpec


class ScoringContext:
    """The scorer settings made usable: the sentence embedder (loaded on first use) and the judge's verdicts, asked
    live or, with `recorded` (prompt sha256 -> a record's stored judgement), replayed from the records: the stored
    reply is parsed again, and a prompt with no stored judgement counts as a failed judgement."""

    def __init__(self, settings: ScorerSettings, recorded: Mapping[str, dict[str, Any]] | None = None):
        self.settings = settings
        self.recorded = recorded
        self._verdicts: dict[str, Any] = {}

    @property
    def judges(self) -> bool:
        return self.settings.judge is not None

    def embedder(self):
        from mcub.open_metrics import embedder

        return embedder(self.settings.embedder)

    def prefetch(self, requests: Iterable[Any]) -> None:
        """Ask the judge every request not asked yet, all at once (its bounded concurrency)."""
        if not self.judges or self.recorded is not None:
            return
        from mcub.judge import judge_for

        wanted = {_prompt_sha256(request): request for request in requests}
        wanted = {digest: request for digest, request in wanted.items() if digest not in self._verdicts}
        if wanted:
            verdicts = judge_for(self.settings.judge).judge_all(list(wanted.values()))
            self._verdicts.update(zip(wanted, verdicts, strict=True))

    def judgement(self, request: Any):
        """The judge's verdict on one request (a Judgement)."""
        digest = _prompt_sha256(request)
        if self.recorded is not None:
            return _replayed(request, digest, self.recorded.get(digest), self.settings.judge.model)
        if digest not in self._verdicts:
            self.prefetch([request])
        return self._verdicts[digest]


def _prompt_sha256(request: Any) -> str:
    return hashlib.sha256(request.prompt.encode()).hexdigest()


def _replayed(request: Any, digest: str, stored: dict[str, Any] | None, model: str):
    from mcub.judge import Judgement, parse_verdict

    if stored is None:
        missing = "no recorded judgement of this prompt"
        return Judgement(request.kind, model, digest, request.prompt, None, None, missing, 0, True)
    judgement = Judgement(**stored)
    verdict = parse_verdict(request.kind, judgement.reply, request.reference, request.classes)
    return replace(judgement, verdict=verdict if judgement.reply is not None else None)


def recorded_judgements(records: Iterable[Record]) -> dict[str, dict[str, Any]]:
    """The stored judgements of some records, by prompt sha256 (what `ScoringContext(recorded=...)` replays)."""
    return {
        r.judgement["prompt_sha256"]: r.judgement for r in records if r.judgement and "prompt_sha256" in r.judgement
    }


def check_scorable(records: Iterable[Record], task: TaskSpec, protocol: Protocol, max_new_tokens: int) -> None:
    """A ProtocolError saying why the answered records cannot be scored under `protocol` (their decoding cannot
    support it), naming the task and how many records are concerned."""
    reasons: dict[str, int] = {}
    for record in records:
        if record.error is not None:
            continue
        reason = (
            "it holds records of mcub's first schema, which do not say how they were decoded"
            if record.decoding is None
            else protocol.unscorable(record.decoding, task, max_new_tokens)
        )
        if reason is not None:
            reasons[reason] = reasons.get(reason, 0) + 1
    if reasons:
        listing = "; ".join(f"{reason} ({count} record(s))" for reason, count in reasons.items())
        raise ProtocolError(
            f"task {task.name} cannot be scored under `{protocol.name}`: {listing}; "
            f"run it again with --protocol {protocol.name}"
        )


def score_records(records: list[Record], task: TaskSpec, protocol: Protocol, context: ScoringContext) -> list[Record]:
    """The records with their outcome filled under `protocol` (in the same order); unanswered records stay wrong."""
    outcomes = outcome_fields(records, task, protocol, context)
    return [record.model_copy(update=fields) for record, fields in zip(records, outcomes, strict=True)]


def outcome_fields(
    records: list[Record], task: TaskSpec, protocol: Protocol, context: ScoringContext
) -> Iterator[dict[str, Any]]:
    """Each record's outcome under `protocol` as the Record fields it sets (`score_records` without the copies)."""
    answered = [record for record in records if record.error is None]
    if context.judges:
        requests = (protocol.judge_request(Answer.of(record), task) for record in answered)
        context.prefetch(request for request in requests if request is not None)
    for record in records:
        fields: dict[str, Any] = {"protocol": protocol.name, "scored": True}
        if record.error is None:
            try:
                outcome = protocol.score(Answer.of(record), task, context)
            except ProtocolError as error:
                raise ProtocolError(f"task {task.name} sample {record.id}: {error}") from None
            fields |= {"extracted": outcome.extracted, "extraction": outcome.method, "correct": outcome.correct,
                       "unparseable": outcome.unparseable, "scores": outcome.scores,
                       "judgement": outcome.judgement}  # fmt: skip
        else:
            fields |= {"extracted": None, "extraction": None, "unparseable": False, "scores": None,
                       "judgement": None, "correct": protocol.unanswered(task)}  # fmt: skip
        yield fields
