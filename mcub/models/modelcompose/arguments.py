"""The arguments of the ModelCompose adapters: a composition of released experts or a merged checkpoint on a base
LLM (`modelcompose`), and the generated tiny model (`modelcompose-tiny`). Importable without torch."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, ClassVar, Literal

from pydantic import model_validator

from mcub.modalities import MODALITIES, Modality
from mcub.models.arguments import AdapterArguments, in_modality_order

Kind = Literal["damc", "naivemc"]


class ModelComposeArguments(AdapterArguments):
    """Either `experts` (one released checkpoint per modality, composed at load time by `composition` with the
    coefficients `lambdas`, 1/N each by default; the modalities are the experts') or `merged` (a checkpoint the
    authors' merge script wrote, holding its composition and coefficients; `modalities` states what it takes and
    is checked against its config.json). `encoders` places the encoders by modality (only those of the model's
    modalities are used; the others fall back on the checkpoints' config.json); `point_encoder` holds Point-BERT
    config fields when its weights are not the released size; `feature_cache` is a directory where encoder
    features are kept between runs; `allow_nonfinite_weights` loads checkpoints holding NaN or infinities (for
    debugging: refused otherwise)."""

    builder: ClassVar[str] = "mcub.models.modelcompose.model:ModelComposeModel"
    cuda_dtype: ClassVar[str] = "float16"  # as the authors ran every ModelCompose model

    base: str
    experts: dict[Modality, str] | None = None
    merged: str | None = None
    modalities: tuple[Modality, ...] | None = None
    composition: Kind | None = None
    lambdas: dict[Modality, float] | None = None
    encoders: dict[Modality, str] = {}
    point_encoder: dict[str, int] | None = None
    feature_cache: str | None = None
    allow_nonfinite_weights: bool = False

    @model_validator(mode="after")
    def _one_form(self) -> ModelComposeArguments:
        if (self.experts is None) == (self.merged is None):
            raise ValueError("a ModelCompose model takes either `experts` (composed at load time) or `merged`")
        if self.experts is not None:
            if not self.experts:
                raise ValueError("`experts` names no checkpoint")
            if self.modalities is not None:
                raise ValueError("`modalities` follow from `experts`; state them only for a `merged` checkpoint")
            if self.lambdas is not None:
                check_lambdas(self.lambdas, self.experts)
            return self
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(
                "a `merged` checkpoint needs its `modalities`, each once (checked against its config.json)"
            )
        for name in ("composition", "lambdas"):
            if getattr(self, name) is not None:
                raise ValueError(f"`{name}` is not an argument of a `merged` checkpoint: its config.json holds it")
        return self

    @property
    def kind(self) -> Kind:
        """The composition of `experts` (DAMC unless told)."""
        return self.composition or "damc"

    def coefficients(self) -> dict[Modality, float]:
        """Each expert's lambda, in the experts' order."""
        experts = self.experts or {}
        return dict(self.lambdas) if self.lambdas is not None else {m: 1.0 / len(experts) for m in experts}

    def input_modalities(self) -> tuple[Modality, ...]:
        return in_modality_order(self.experts if self.experts is not None else self.modalities or ())

    def used_encoders(self) -> dict[Modality, str]:
        """The encoders given for the model's modalities."""
        return {m: ref for m, ref in self.encoders.items() if m in self.input_modalities()}

    def components(self) -> list[str]:
        found = [f"base={self.base}"] + ([f"merged={self.merged}"] if self.merged else [])
        found += [f"experts.{m}={ref}" for m, ref in (self.experts or {}).items()]
        return found + [f"encoders.{m}={ref}" for m, ref in self.used_encoders().items()]

    def effective(self) -> dict[str, Any]:
        arguments = super().effective()
        if "encoders" in arguments:
            arguments["encoders"] = self.used_encoders()
        return arguments


class TinyDamcArguments(AdapterArguments):
    """The tiny DAMC of four tiny experts, generated on first use under `cache_dir` (default ~/.cache/mcub)."""

    builder: ClassVar[str] = "mcub.models.modelcompose.tiny:build_tiny_damc"
    cuda_dtype: ClassVar[str] = "float16"

    cache_dir: str | None = None
    lambdas: dict[Modality, float] | None = None
    feature_cache: str | None = None

    @model_validator(mode="after")
    def _lambdas_of_every_expert(self) -> TinyDamcArguments:
        if self.lambdas is not None:
            check_lambdas(self.lambdas, MODALITIES)
        return self


def check_lambdas(lambdas: Mapping[Modality, float], experts: Collection[Modality]) -> None:
    """One coefficient per expert, none for a modality without one."""
    missing = [m for m in experts if m not in lambdas]
    extra = [m for m in lambdas if m not in experts]
    if missing or extra:
        problems = [f"no lambda for the {', '.join(missing)} expert(s)"] if missing else []
        problems += [f"a lambda for {', '.join(extra)}, which has no expert"] if extra else []
        raise ValueError("; ".join(problems))
