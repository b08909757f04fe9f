"""The arguments of the ModelCompose adapters: a composition of released experts or a merged checkpoint on a base
LLM (`modelcompose`), and the generated tiny model (`modelcompose-tiny`). Importable without torch."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, ClassVar, Literal

from pydantic import model_validator

from mcub.modalities import MODALITIES, Modality
from mcub.models.arguments import AdapterArguments, in_modality_order

RouteWeights = Literal["factors", "merged"]
"""How a composed model applies its routes (see `merged_routes.py`)."""


class ModelComposeArguments(AdapterArguments):
    """Either `experts` (one released checkpoint per modality, composed at load time by `composition`, a method of
    `methods.METHODS` (DAMC by default) with its arguments `composition_args` (given as `METHOD.ARG=VALUE`) and,
    for a method that weighs the experts, the coefficients `lambdas`, 1/N each by default; the modalities are the
    experts') or `merged` (a checkpoint the authors' merge script wrote, holding its composition and coefficients;
    `modalities` states what it takes and is checked against its config.json). `encoders` places the encoders by
    modality (only those of the model's modalities are used; the others fall back on the checkpoints'
    config.json); `point_encoder` holds Point-BERT config fields when its weights are not the released size;
    `feature_cache` is a directory where encoder features are kept between runs; `allow_nonfinite_weights` loads
    checkpoints holding NaN or infinities (for debugging: refused otherwise); `share_prefixes: false` prefills every
    sample whole, never a prefix shared by samples of a batch once (the same results up to the dtype's rounding);
    `route_weights: merged` keeps one merged weight per route instead of LoRA factors beside the base weight (a
    routed forward then costs a dense one, at the memory of one more copy of the LLM's projections per route with
    adapters; the same results up to rounding each merged weight once)."""

    builder: ClassVar[str] = "mcub.models.modelcompose.model:ModelComposeModel"
    cuda_dtype: ClassVar[str] = "float16"  # as the authors ran every ModelCompose model
    fp8_prefill: ClassVar[bool] = True
    # the experts' config.json place the encoders and choose their output layer
    encoder_arguments: ClassVar[frozenset[str]] = frozenset({"experts", "merged", "encoders", "point_encoder"})

    base: str
    experts: dict[Modality, str] | None = None
    merged: str | None = None
    modalities: tuple[Modality, ...] | None = None
    composition: str | None = None
    composition_args: dict[str, Any] = {}
    lambdas: dict[Modality, float] | None = None
    encoders: dict[Modality, str] = {}
    point_encoder: dict[str, int] | None = None
    feature_cache: str | None = None
    allow_nonfinite_weights: bool = False
    share_prefixes: bool = True
    route_weights: RouteWeights = "factors"

    @model_validator(mode="before")
    @classmethod
    def _method_arguments(cls, given: Any) -> Any:
        return gather_method_arguments(given)

    @model_validator(mode="after")
    def _one_form(self) -> ModelComposeArguments:
        if (self.experts is None) == (self.merged is None):
            raise ValueError("a ModelCompose model takes either `experts` (composed at load time) or `merged`")
        if self.experts is not None:
            if not self.experts:
                raise ValueError("`experts` names no checkpoint")
            if self.modalities is not None:
                raise ValueError("`modalities` follow from `experts`; state them only for a `merged` checkpoint")
            check_composition(self.kind, self.composition_args, self.lambdas, self.experts)
            return self
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(
                "a `merged` checkpoint needs its `modalities`, each once (checked against its config.json)"
            )
        for name in ("composition", "lambdas", "composition_args"):
            if getattr(self, name):
                raise ValueError(f"`{name}` is not an argument of a `merged` checkpoint: its config.json holds it")
        return self

    @property
    def kind(self) -> str:
        """The composition method of `experts` (DAMC unless told)."""
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
        arguments = _method_arguments_as_given(super().effective(), self.kind)
        if "encoders" in arguments:
            arguments["encoders"] = self.used_encoders()
        return arguments


class TinyDamcArguments(AdapterArguments):
    """The tiny DAMC of four tiny experts, generated on first use under `cache_dir` (default ~/.cache/mcub); the
    other arguments are ModelComposeArguments'."""

    builder: ClassVar[str] = "mcub.models.modelcompose.tiny:build_tiny_damc"
    cuda_dtype: ClassVar[str] = "float16"
    fp8_prefill: ClassVar[bool] = True
    encoder_arguments: ClassVar[frozenset[str]] = frozenset({"cache_dir"})

    cache_dir: str | None = None
    composition: str | None = None
    composition_args: dict[str, Any] = {}
    lambdas: dict[Modality, float] | None = None
    feature_cache: str | None = None
    share_prefixes: bool = True
    route_weights: RouteWeights = "factors"

    @model_validator(mode="before")
    @classmethod
    def _method_arguments(cls, given: Any) -> Any:
        return gather_method_arguments(given)

    @model_validator(mode="after")
    def _lambdas_of_every_expert(self) -> TinyDamcArguments:
        check_composition(self.composition or "damc", self.composition_args, self.lambdas, MODALITIES)
        return self

    def effective(self) -> dict[str, Any]:
        return _method_arguments_as_given(super().effective(), self.composition or "damc")


def gather_method_arguments(given: Any) -> Any:
    """`METHOD: {ARG: VALUE}` (from `--model-arg METHOD.ARG=VALUE`) moved into `composition_args`; arguments of a
    method other than the chosen one are an error naming both."""
    from mcub.models.modelcompose.methods import METHODS

    if not isinstance(given, dict) or not any(name in METHODS for name in given):
        return given
    given = dict(given)
    chosen = given.get("composition") or "damc"
    for name in [name for name in given if name in METHODS]:
        if name != chosen:
            raise ValueError(f"`{name}.*` arguments given, but the composition is {chosen}")
        values = given.pop(name)
        if not isinstance(values, dict):
            raise ValueError(f"`{name}` takes its arguments as `{name}.ARG=VALUE`")
        given["composition_args"] = {**given.get("composition_args", {}), **values}
    return given


def _method_arguments_as_given(arguments: dict[str, Any], name: str) -> dict[str, Any]:
    """`composition_args` shown as `METHOD: {ARG: VALUE}`, the form they are given in."""
    if "composition_args" in arguments:
        arguments[name] = arguments.pop("composition_args")
    return arguments


def check_composition(
    name: str, arguments: Mapping[str, Any], lambdas: Mapping[Modality, float] | None, experts: Collection[Modality]
) -> None:
    """A registered method with valid arguments, and lambdas (one per expert) only for a method that takes them."""
    from mcub.models.modelcompose.methods import method

    chosen = method(name)
    chosen.checked_arguments(dict(arguments))
    if lambdas is None:
        return
    if not chosen.uses_lambdas:
        raise ValueError(f"composition {name} does not weigh the experts by `lambdas`")
    check_lambdas(lambdas, experts)


def check_lambdas(lambdas: Mapping[Modality, float], experts: Collection[Modality]) -> None:
    """One coefficient per expert, none for a modality without one."""
    missing = [m for m in experts if m not in lambdas]
    extra = [m for m in lambdas if m not in experts]
    if missing or extra:
        problems = [f"no lambda for the {', '.join(missing)} expert(s)"] if missing else []
        problems += [f"a lambda for {', '.join(extra)}, which has no expert"] if extra else []
        raise ValueError("; ".join(problems))
