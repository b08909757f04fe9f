"""The Model interface the runner drives, and the registry of `models/*.yaml`."""

from __future__ import annotations

import difflib
import importlib
import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from mcub.data import Sample
from mcub.errors import McubError, UnsupportedInput
from mcub.media import MediaInput
from mcub.modalities import Modality
from mcub.models.feature_cache import FeatureCache

MODELS_DIR = Path(__file__).resolve().parent.parent.parent / "models"
ADAPTERS = {
    "random": "mcub.models.baselines:RandomModel",
    "blind": "mcub.models.baselines:BlindModel",
    "modelcompose": "mcub.models.modelcompose.model:ModelComposeModel",
    "modelcompose-tiny": "mcub.models.modelcompose.tiny:TinyDamcModel",
}
# --model-arg names that are not Python identifiers, and the argument each stands for.
ARGUMENT_ALIASES = {"lambda": "lambdas"}
Stop = Literal["eos", "first-character"]


class ModelError(McubError):
    """A model name, adapter or argument is unknown or invalid."""


@dataclass(frozen=True)
class Runtime:
    """Where and how a model runs."""

    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    offline: bool = False


@dataclass
class PreparedBatch:
    """Samples made ready for a model: `prompts` are the rendered prompts, `inputs` the model's own tensors."""

    samples: list[Sample]
    prompts: list[str]
    inputs: Any = None


class Model(ABC):
    """A model under evaluation. `media_preprocessing` names the media preprocessing per modality the runner's
    workers apply before `prepare`; None means the model never reads media (files are only checked). With a
    `feature_cache`, the workers hand over stored encoder features instead of decoding, where there are some."""

    modalities: frozenset[Modality]
    media_preprocessing: dict[Modality, str] | None
    feature_cache: FeatureCache | None = None

    @abstractmethod
    def prepare(self, samples: list[Sample], media: list[list[MediaInput]]) -> PreparedBatch:
        """Render prompts and turn decoded media into model inputs."""

    @abstractmethod
    def generate(self, batch: PreparedBatch, max_new_tokens: int, stop: Stop = "eos") -> list[str]:
        """Greedy answers, one per sample; `first-character` may stop once a non-space character exists."""

    @abstractmethod
    def loglik(self, batch: PreparedBatch, continuations: list[list[str]]) -> list[list[float]]:
        """Log-probability of each continuation (an option letter or text) as the start of the answer."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What identifies this model in a run summary: adapter, arguments, weights and their hashes."""


def refuse_beyond_context(samples: list[Sample], lengths: list[int], limit: int) -> None:
    """Raise UnsupportedInput naming every sample whose input positions exceed the LLM's context: positions past
    `max_position_embeddings` would run (rotary embeddings extrapolate) but were never trained."""
    too_long = [f"sample {s.id}: {n} positions" for s, n in zip(samples, lengths, strict=True) if n > limit]
    if too_long:
        raise UnsupportedInput(
            f"{'; '.join(too_long)}: longer than the LLM's context of {limit} (max_position_embeddings)"
        )


class ModelSpec(BaseModel):
    """One `models/*.yaml` file: a model id, its adapter and the adapter's arguments."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    adapter: str
    description: str
    modalities: tuple[Modality, ...]
    args: dict[str, Any] = {}

    def components(self) -> list[str]:
        """The weights the model is built from, as `role=reference` (hub ids or local paths)."""
        found = []
        for key in ("base", "merged", "pretrained"):
            if key in self.args:
                found.append(f"{key}={self.args[key]}")
        for key in ("experts", "encoders"):
            found += [f"{key}.{m}={ref}" for m, ref in self.args.get(key, {}).items()]
        return found


def load_model_specs(models_dir: Path = MODELS_DIR) -> dict[str, ModelSpec]:
    import yaml

    specs: dict[str, ModelSpec] = {}
    for path in sorted(models_dir.glob("*.yaml")):
        with path.open(encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
        try:
            spec = ModelSpec.model_validate(raw)
        except ValidationError as error:
            raise ModelError(f"{path}: invalid model definition:\n{error}") from None
        if spec.adapter not in ADAPTERS:
            raise ModelError(f"{path}: unknown adapter {spec.adapter!r}; known: {', '.join(ADAPTERS)}")
        if spec.name in specs:
            raise ModelError(f"{path}: model {spec.name!r} is defined twice")
        specs[spec.name] = spec
    return specs


def find_model_spec(name: str, specs: dict[str, ModelSpec]) -> ModelSpec:
    if name in specs:
        return specs[name]
    close = difflib.get_close_matches(name, list(specs), n=4, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(specs)}"
    raise ModelError(f"unknown model {name!r}{hint}")


def parse_model_args(pairs: list[str]) -> dict[str, Any]:
    """`key=value` strings; values are read as YAML scalars; a dotted key sets one entry of a mapping
    (`lambda.image=0.5`, `encoders.audio=/models/BEATs.pt`)."""
    import yaml

    flat: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ModelError(f"--model-arg {pair!r} is not key=value")
        flat[key.strip()] = yaml.safe_load(value) if value else ""
    return nest_model_args(flat)


def nest_model_args(flat: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys (`lambda.image`) as nested mappings, with the aliases of ARGUMENT_ALIASES applied."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        target = nested
        for parent in parents:
            target = target.setdefault(ARGUMENT_ALIASES.get(parent, parent), {})
        target[leaf if parents else ARGUMENT_ALIASES.get(leaf, leaf)] = value
    return nested


def merge_args(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` on top of `base`, mappings merged key by key."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_args(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_model(spec: ModelSpec, overrides: dict[str, Any], runtime: Runtime) -> Model:
    """Instantiate the spec's adapter with its arguments, `overrides` taking precedence."""
    module_name, _, class_name = ADAPTERS[spec.adapter].partition(":")
    adapter = getattr(importlib.import_module(module_name), class_name)
    args = merge_args(spec.args, overrides)
    accepted = [name for name in inspect.signature(adapter).parameters if name != "runtime"]
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        raise ModelError(
            f"model {spec.name}: unknown argument(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}"
        )
    return adapter(**args, runtime=runtime)
