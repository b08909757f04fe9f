"""The registry of composition methods over released unimodal experts: each method's name, its typed arguments,
whether it takes the experts' coefficients (`lambdas`), the routing it fixes (NaiveMC, DAMC, or the experts' own)
and the function that composes the language part. Importable without torch: arguments are checked before any
weight is read; the tensor work lives in `language_merges.py`.

`--model-arg composition=NAME` selects a method; its arguments are `--model-arg NAME.ARG=VALUE` (`ties.k=0.3`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Routing = Literal["damc", "naivemc"]


class NoArguments(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthorsTiesArguments(NoArguments):
    """The authors' `-K`: the percentage of each expert's shared factors kept by magnitude."""

    k: int = Field(default=20, ge=1, le=99)


class TiesArguments(NoArguments):
    """`k`: the fraction of each expert's delta kept by magnitude, per projection; `scaling`: of the merged delta."""

    k: float = Field(default=0.2, gt=0, le=1)
    scaling: float = 1.0


class DareArguments(NoArguments):
    """`p`: the drop probability of each entry of each expert's delta; `seed`: of the drop masks."""

    p: float = Field(default=0.5, ge=0, lt=1)
    seed: int = 0


class TsvArguments(NoArguments):
    """`keep`: the fraction of each expert's delta's singular directions kept (default 1/N for N experts);
    `alpha`: the scaling of the merged delta."""

    keep: float | None = Field(default=None, gt=0, le=1)
    alpha: float = 1.0


class IsoCArguments(NoArguments):
    """`alpha`: the scaling of the merged, isotropic delta."""

    alpha: float = 1.0


@dataclass(frozen=True)
class CompositionMethod:
    """A registered method. `uses_lambdas`: it weighs the experts by `lambdas` (1/N each by default; others refuse
    them); `routing`: the routing it fixes, or None for the experts' own (DAMC when their merged configuration,
    first truthy `lora_strategy` as the authors' merge reads it, is DAMC's); `language`: `module:function` composing
    the language part; `dense`: whether that part is a dense delta per projection (not low-rank)."""

    name: str
    arguments: type[NoArguments]
    uses_lambdas: bool
    routing: Routing | None
    language: str
    dense: bool
    summary: str

    def checked_arguments(self, given: dict) -> NoArguments:
        from mcub.errors import validation_problems

        try:
            return self.arguments(**given)
        except ValidationError as error:
            problems = validation_problems(error, self.name)
            raise ValueError(f"composition {self.name}: {problems} (as `{self.name}.ARG=VALUE`)") from None


_MERGES = "mcub.models.modelcompose.language_merges"
METHODS: dict[str, CompositionMethod] = {}


def register_method(method: CompositionMethod) -> None:
    if method.name in METHODS:
        raise ValueError(f"composition method {method.name} is registered twice")
    METHODS[method.name] = method


for _method in (
    CompositionMethod("damc", NoArguments, True, "damc", f"{_MERGES}:weighted_sum", False,
                      "modality LoRAs on their own tokens, the lambda-weighted language LoRAs on text (the paper)"),
    CompositionMethod("naivemc", NoArguments, True, "naivemc", f"{_MERGES}:weighted_sum", False,
                      "every token through the lambda-weighted sum of the language LoRAs (the paper)"),
    CompositionMethod("task-arithmetic", NoArguments, True, None, f"{_MERGES}:weighted_sum", False,
                      "the lambda-scaled sum of the experts' language deltas (any lambdas)"),
    CompositionMethod("weight-average", NoArguments, False, None, f"{_MERGES}:average", False,
                      "the mean of the experts' language deltas"),
    CompositionMethod("sum", NoArguments, False, None, f"{_MERGES}:factor_sum", False,
                      "the authors' `sum`: the A and B factors summed separately"),
    CompositionMethod("mean", NoArguments, False, None, f"{_MERGES}:factor_mean", False,
                      "the authors' `mean`: the A and B factors averaged separately"),
    *(
        CompositionMethod(f"ties-{how}", AuthorsTiesArguments, False, None, f"{_MERGES}:authors_ties_{how}", False,
                          f"the authors' `ties-{how} -K`: TIES on the shared factors, disjoint {how}")
        for how in ("sum", "mean", "max")
    ),
    CompositionMethod("ties", TiesArguments, False, None, f"{_MERGES}:ties", True,
                      "TIES on each projection's deltas: top-k magnitudes, elected signs, disjoint mean"),
    CompositionMethod("dare", DareArguments, True, None, f"{_MERGES}:dare", True,
                      "DARE: each delta's entries dropped with probability p and rescaled, then lambda-summed"),
    CompositionMethod("tsv", TsvArguments, False, None, f"{_MERGES}:tsv", False,
                      "task singular vectors: each delta's top singular directions, decorrelated, summed"),
    CompositionMethod("iso-c", IsoCArguments, False, None, f"{_MERGES}:iso_c", False,
                      "the summed delta with its singular spectrum flattened to its mean"),
):  # fmt: skip
    register_method(_method)


def method(name: str) -> CompositionMethod:
    if name not in METHODS:
        raise ValueError(f"unknown composition {name!r}; one of {', '.join(METHODS)}")
    return METHODS[name]
