"""The arguments of the baselines `random` and `blind` (both take every modality: they read no media)."""

from __future__ import annotations

from typing import ClassVar

from mcub.models.arguments import AdapterArguments


class RandomArguments(AdapterArguments):
    builder: ClassVar[str] = "mcub.models.baselines:RandomModel"
    computes_on_device: ClassVar[bool] = False

    seed: int | None = None
    """The seed of the per-sample choices (default: the run's seed)."""


class BlindArguments(AdapterArguments):
    builder: ClassVar[str] = "mcub.models.baselines:BlindModel"

    pretrained: str
    """A Hugging Face causal LM: a hub id or a local directory."""

    def components(self) -> list[str]:
        return [f"pretrained={self.pretrained}"]
