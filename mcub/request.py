"""The request of an evaluation: one typed object that the command line, a YAML config file (`mcub eval --config`)
and the lm-eval bridge all build, and that every run writes back resolved (`run.yaml`), so that
`mcub eval --config RUN_DIR/run.yaml` repeats the run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mcub.errors import McubError, validation_problems
from mcub.schema import DEFAULT_DATA_ROOT, DataPaths, ScorerSettings

if TYPE_CHECKING:
    from mcub.media.limits import MediaLimits
    from mcub.tracking import Tracker

DEFAULT_OUTPUT_DIR = Path("results")
Dtype = Literal["auto", "float32", "bfloat16", "float16", "fp8"]
"""`auto`, or one of mcub.models.base.DTYPES (`fp8`: the prefill's linear layers in FP8, ModelCompose models only)."""


class RequestError(McubError):
    """A request (flags or config file) is invalid."""


class EvalRequest(BaseModel):
    """Everything `mcub eval` needs: which model and tasks, where the data and results are, how to run and score."""

    model_config = ConfigDict(extra="forbid")

    model: str
    """A model id of models/*.yaml."""
    model_args: dict[str, Any] = {}
    """Overrides of the model's arguments (nested: `{lambdas: {image: 0.5}}`)."""
    tasks: list[str] | None = None
    """Task and group names; None: every task the model can take (the others are skipped, with the reason)."""
    data_root: Path = DEFAULT_DATA_ROOT
    media_root: Path | None = None
    download: bool = True
    output_dir: Path = DEFAULT_OUTPUT_DIR
    run_name: str | None = None
    resume: bool = False
    protocol: str | None = None
    """Every task's protocol (None: each task's own)."""
    batch_size: int | None = Field(default=1, ge=1)
    """Samples per batch; None (`auto` in YAML and flags): the largest that fits."""
    num_workers: int = Field(default=2, ge=0)
    device: str = "auto"
    dtype: Dtype = "auto"
    max_new_tokens: int = Field(default=128, ge=1)
    limit: int | None = Field(default=None, ge=1)
    seed: int = 0
    strict: bool = False
    scoring: ScorerSettings = ScorerSettings()
    media_limits: dict[str, float] = {}
    """Limits on what a media file may ask the decoders for, over the defaults (see mcub.media.limits)."""
    conditions: list[str] = []
    """Run conditions applied to every task's samples in this order (`drop:audio`, ...; see mcub.conditions), kept
    in their canonical text."""
    progress: bool = True
    log: str | None = None
    """An experiment tracker the finished run is logged to: `wandb[:PROJECT]` or `trackio[:PROJECT]` (mcub.tracking)."""

    @field_validator("log")
    @classmethod
    def _known_tracker(cls, value: str | None) -> str | None:
        from mcub.tracking import Tracker, TrackerError

        if value is not None:
            try:
                Tracker.parse(value)
            except TrackerError as error:
                raise ValueError(str(error)) from None
        return value

    @field_validator("batch_size", mode="before")
    @classmethod
    def _auto(cls, value: Any) -> Any:
        return None if value == "auto" else value

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, value: str | None) -> str | None:
        from mcub.protocols import ProtocolError, get_protocol

        if value is not None:
            try:
                get_protocol(value)
            except ProtocolError as error:
                raise ValueError(str(error)) from None
        return value

    @field_validator("conditions")
    @classmethod
    def _known_conditions(cls, value: list[str]) -> list[str]:
        from mcub.conditions import ConditionError, canonical_specs

        try:
            return canonical_specs(value)
        except ConditionError as error:
            raise ValueError(str(error)) from None

    @field_validator("media_limits")
    @classmethod
    def _known_limits(cls, value: dict[str, float]) -> dict[str, float]:
        from mcub.media.limits import MediaLimits

        MediaLimits.from_values(value)
        return value

    @property
    def limits(self) -> MediaLimits:
        from mcub.media.limits import MediaLimits

        return MediaLimits.from_values(self.media_limits)

    @property
    def tracker(self) -> Tracker | None:
        from mcub.tracking import Tracker

        return Tracker.parse(self.log) if self.log is not None else None

    @property
    def data_paths(self) -> DataPaths:
        return DataPaths(data_root=self.data_root, media_root=self.media_root, download=self.download)

    @classmethod
    def build(cls, values: dict[str, Any], source: str) -> EvalRequest:
        """A request from plain values; an invalid one is a RequestError naming `source` and the key."""
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            raise RequestError(f"{source}: {validation_problems(error, 'request')}") from None

    @classmethod
    def read_yaml(cls, path: Path) -> dict[str, Any]:
        """The values of a YAML request file (`mcub eval --config FILE`), before flags are laid over them."""
        import yaml

        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise RequestError(f"{path}: cannot read the config ({error.strerror})") from None
        except yaml.YAMLError as error:
            raise RequestError(f"{path}: not YAML ({error})") from None
        if not isinstance(values, dict):
            raise RequestError(f"{path}: a config is a mapping of request fields, not a {type(values).__name__}")
        return values

    def to_yaml(self) -> str:
        import yaml

        values = self.model_dump(mode="json")
        values["batch_size"] = values["batch_size"] or "auto"
        return yaml.safe_dump(values, sort_keys=False)
