"""The typed arguments of a model adapter: what names and values it takes, the modalities and weights they amount
to, the dtype `auto` means on CUDA and the callable that builds the model. Importable without torch (the registry,
`--list-models` and the checks before a run use it)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from mcub.modalities import MODALITIES, Modality


class AdapterArguments(BaseModel):
    """The base of every adapter's arguments; a subclass declares its fields and overrides what differs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    builder: ClassVar[str]
    """`module:callable` that builds the Model from `(runtime, arguments)`; imported only to build it."""
    cuda_dtype: ClassVar[str] = "bfloat16"
    """The dtype `--dtype auto` stands for on CUDA (float32 elsewhere)."""
    fp8_prefill: ClassVar[bool] = False
    """Whether the model takes `--dtype fp8` (its prefill's linear layers in FP8, the rest in bfloat16)."""
    computes_on_device: ClassVar[bool] = True
    """Whether the model computes with torch on the run's device; False (a seeded chance model, a served model):
    `--device auto` is the CPU, found without importing torch."""
    encoder_arguments: ClassVar[frozenset[str]] = frozenset()
    """The arguments that change what the encoders compute (their weights or configuration): runs that differ in one
    cannot share encoder features, so `mcub sweep` refuses a grid over them."""

    def input_modalities(self) -> tuple[Modality, ...]:
        """The modalities the model takes, in the order of MODALITIES."""
        return MODALITIES

    def components(self) -> list[str]:
        """The weights the model is built from, as `role=reference` (hub ids or local paths)."""
        return []

    def missing(self) -> list[str]:
        """Arguments a run needs that a model file may leave to the command line (`model`, `base_url` of a server)."""
        return []

    def decoding_refusal(self, kind: str) -> str | None:
        """Why the model cannot answer a decoding kind (`generate`, `loglik`), checked before any weight is read;
        None: it can."""
        return None

    def effective(self) -> dict[str, Any]:
        """The arguments the model uses, as given (defaults not given are left out)."""
        return self.model_dump(mode="json", exclude_unset=True)


def in_modality_order(modalities: Collection[Modality]) -> tuple[Modality, ...]:
    return tuple(m for m in MODALITIES if m in modalities)
