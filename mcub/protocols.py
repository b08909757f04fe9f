"""The scoring protocols, registered by name: `paper`, `generate`, `loglik`, `open`. Each says which tasks it takes,
what it asks the model for (the decoding recorded with each sample), which recorded decodings it can score, and how
it scores one answer. The runner, `mcub score`, `leaderboard validate` and the lm-eval bridge all use these objects;
adding a protocol is adding one registered class here."""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from mcub.errors import McubError
from mcub.schema import Decoding, Outcome, Record
from mcub.scoring import authors_postprocess, score_generated, score_loglik, score_paper

if TYPE_CHECKING:
    from mcub.scorer import ScoringContext
    from mcub.tasks import TaskSpec


class ProtocolError(McubError):
    """A protocol is unknown, or cannot run or score a task as asked."""


@dataclass(frozen=True)
class Answer:
    """What a protocol scores: the gold answer and options of a sample, and what the model returned for it."""

    gold: str
    options: dict[str, str]
    output: str | None = None
    option_logliks: dict[str, float] | None = None

    @classmethod
    def of(cls, record: Record) -> Answer:
        return cls(record.gold, record.options, record.output, record.option_logliks)


class Protocol(ABC):
    """How a task is asked and scored."""

    name: ClassVar[str]
    summary: ClassVar[str]

    def refusal(self, task: TaskSpec) -> str | None:
        """Why this protocol cannot run `task` (None: it can)."""
        return None

    @abstractmethod
    def decoding(self, task: TaskSpec, max_new_tokens: int) -> Decoding:
        """What the model is asked for each sample of `task`."""

    @abstractmethod
    def score(self, answer: Answer, task: TaskSpec, context: ScoringContext) -> Outcome:
        """The outcome of one answered sample."""

    def score_prediction(self, answer: Answer, task: TaskSpec, context: ScoringContext) -> Outcome:
        """The outcome of a line of the authors' prediction files, whose text went through their post-processing."""
        return self.score(answer, task, context)

    def continuations(self, answer: Answer, task: TaskSpec) -> list[str]:
        """The texts whose log-likelihoods a `loglik` decoding asks for, in option order."""
        raise NotImplementedError(f"protocol {self.name} asks for text, not log-likelihoods")

    def unscorable(self, recorded: Decoding, task: TaskSpec, max_new_tokens: int) -> str | None:
        """Why an answer made with the `recorded` decoding cannot be scored under this protocol (None: it can)."""
        wanted = self.decoding(task, max_new_tokens)
        if recorded == wanted:
            return None
        if wanted.kind == "generate" and recorded.kind == "generate":
            if wanted.stop == "first-character" and recorded.stop == "eos":
                return None  # greedy decoding: the stopped output is a prefix of the whole one
            if recorded.stop == "first-character":
                return "its outputs were cut at their first character, and this protocol reads whole outputs"
            return f"its outputs were generated with up to {recorded.max_new_tokens} new tokens, not {max_new_tokens}"
        return f"it holds {recorded.describe()}, and this protocol needs {wanted.describe()}"

    def judge_request(self, answer: Answer, task: TaskSpec):
        """The LLM-judge request of one answer (None: this protocol does not judge it)."""
        return None

    def unanswered(self, task: TaskSpec) -> bool | None:
        """`correct` of a sample the model did not answer: wrong, or None where answers have no right or wrong."""
        return False


PROTOCOLS: dict[str, Protocol] = {}


def register(cls: type[Protocol]) -> type[Protocol]:
    """Add a protocol to the registry under its name."""
    if cls.name in PROTOCOLS:
        raise ValueError(f"protocol {cls.name!r} is registered twice")
    PROTOCOLS[cls.name] = cls()
    return cls


def get_protocol(name: str) -> Protocol:
    if name in PROTOCOLS:
        return PROTOCOLS[name]
    close = difflib.get_close_matches(name, list(PROTOCOLS), n=2, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(PROTOCOLS)}"
    raise ProtocolError(f"unknown protocol {name!r}; {hint}")


def protocol_for(task: TaskSpec, name: str | None) -> Protocol:
    """The protocol `task` runs under (`name`, else the task's own), or a ProtocolError saying why it cannot."""
    protocol = get_protocol(name or task.protocol)
    reason = protocol.refusal(task)
    if reason is not None:
        raise ProtocolError(f"task {task.name} {reason}")
    return protocol


def _generation(max_new_tokens: int, stop: str = "eos") -> Decoding:
    return Decoding(kind="generate", max_new_tokens=max_new_tokens, stop=stop)


@register
class PaperProtocol(Protocol):
    name = "paper"
    summary = "the authors' scorers: first character (MCUB, AVQA), EvalAI exact match (MUSIC-AVQA)"

    def refusal(self, task: TaskSpec) -> str | None:
        if task.paper_match is None:
            return "has no `paper` protocol (the authors scored it with a GPT judge); use --protocol loglik or generate"
        return None

    def decoding(self, task: TaskSpec, max_new_tokens: int) -> Decoding:
        """Greedy; when only the first character is scored, generation stops once it exists."""
        return _generation(max_new_tokens, "first-character" if task.paper_match == "first-character" else "eos")

    def score(self, answer: Answer, task: TaskSpec, context: ScoringContext) -> Outcome:
        return score_paper(authors_postprocess(answer.output or ""), answer.gold, answer.options, task.paper_match)

    def score_prediction(self, answer: Answer, task: TaskSpec, context: ScoringContext) -> Outcome:
        """As the authors' scorer reads their prediction files: the text as it stands."""
        return score_paper(answer.output or "", answer.gold, answer.options, task.paper_match)


@register
class GenerateProtocol(Protocol):
    name = "generate"
    summary = "greedy text read by one tested extractor, with an explicit unparseable outcome"

    def decoding(self, task: TaskSpec, max_new_tokens: int) -> Decoding:
        return _generation(max_new_tokens)

    def score(self, answer: Answer, task: TaskSpec, context: ScoringContext) -> Outcome:
        return score_generated(answer.output or "", answer.gold, answer.options)


@register
class LoglikProtocol(Protocol):
    name = "loglik"
    summary = "the log-likelihood of each option's letter (or class name) after the prompt; the argmax"

    def refusal(self, task: TaskSpec) -> str | None:
        if task.answer_type == "text":
            return "has open answers; `loglik` needs options (use paper or generate)"
        return None

    def decoding(self, task: TaskSpec, max_new_tokens: int) -> Decoding:
        return Decoding(kind="loglik", continuations="option-key" if task.answer_type == "letter" else "option-text")

    def continuations(self, answer: Answer, task: TaskSpec) -> list[str]:
        return list(answer.options) if task.answer_type == "letter" else list(answer.options.values())

    def score(self, answer: Answer, task: TaskSpec, context: ScoringContext) -> Outcome:
        if not answer.option_logliks:
            raise ProtocolError("a loglik answer needs its option log-likelihoods")
        return score_loglik(answer.option_logliks, answer.gold)


@register
class OpenProtocol(Protocol):
    name = "open"
    summary = "greedy answers scored without a judge (Sentence-BERT, BLEU-1, ROUGE-L, class named), optional judge"

    def refusal(self, task: TaskSpec) -> str | None:
        if not task.metrics:
            return "declares no open-answer metrics; use paper, generate or loglik"
        return None

    def decoding(self, task: TaskSpec, max_new_tokens: int) -> Decoding:
        return _generation(max_new_tokens)

    def unanswered(self, task: TaskSpec) -> bool | None:
        return False if "class_named" in task.metrics else None

    def judge_request(self, answer: Answer, task: TaskSpec):
        from mcub.judge import JudgeRequest

        if task.judgement is None:
            return None
        closed = task.judgement == "close-set"
        reference = answer.gold if closed else answer.options.get(answer.gold, answer.gold)
        text = authors_postprocess(answer.output or "")
        return JudgeRequest(task.judgement, text, reference, answer.options or None)

    def score(self, answer: Answer, task: TaskSpec, context: ScoringContext) -> Outcome:
        from mcub.open_metrics import open_scores

        text = authors_postprocess(answer.output or "")
        needs_encoder = {"sbert", "class_nearest"} & set(task.metrics)
        encoder = context.embedder() if needs_encoder else None
        scores = open_scores(text, answer.gold, answer.options, task.metrics, encoder)
        correct = scores["class_named"] == 100.0 if "class_named" in scores else None
        judgement = None
        request = self.judge_request(answer, task)
        if request is not None and context.judges:
            verdict = context.judgement(request)
            judgement = verdict.record()
            scores["judge"] = verdict.verdict if verdict.verdict is not None else 0.0
        return Outcome(None, "open", correct, False, scores, judgement)
