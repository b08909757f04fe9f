"""The Model interface the runner drives, and the registry of `models/*.yaml`."""

from __future__ import annotations

import difflib
import importlib
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from mcub.errors import McubError, UnsupportedInput, problem_location, validation_problems
from mcub.media import MediaInput
from mcub.modalities import Modality
from mcub.models.arguments import AdapterArguments
from mcub.models.feature_cache import FeatureCache
from mcub.schema import MediaReceipt, ModelDescription, Sample, SharedPrefix, Stop

MODELS_DIR = Path(__file__).resolve().parent.parent.parent / "models"
# Each adapter's typed arguments (`module:class`, importable without torch); they name the model's builder.
ADAPTERS = {
    "random": "mcub.models.baseline_arguments:RandomArguments",
    "blind": "mcub.models.baseline_arguments:BlindArguments",
    "modelcompose": "mcub.models.modelcompose.arguments:ModelComposeArguments",
    "modelcompose-tiny": "mcub.models.modelcompose.arguments:TinyDamcArguments",
    "qwen-omni": "mcub.models.qwen_omni.arguments:QwenOmniArguments",
    "openai-compatible": "mcub.models.openai_compatible.arguments:OpenAICompatibleArguments",
}
# --model-arg names that are not Python identifiers, and the argument each stands for.
ARGUMENT_ALIASES = {"lambda": "lambdas"}
FP8 = "fp8"
"""The dtype of a run whose prefill computes the linear layers in FP8 (ModelCompose models only; see
modelcompose/fp8.py); everything else of it computes in FP8_COMPUTE_DTYPE."""
FP8_COMPUTE_DTYPE = "bfloat16"
DTYPES = ("float32", "bfloat16", "float16", FP8)


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
    """Samples made ready for a model: `prompts` are the rendered prompts, `inputs` the model's own tensors, and
    `receipts` per sample what the model consumes of each of its media inputs (set by `prepare`, or by `generate`
    and `loglik` where only the answer shows it; see `mcub.runner.receipts`); `prefixes` per sample the input prefix
    it shares with others of the batch (None where it shares none)."""

    samples: list[Sample]
    prompts: list[str]
    inputs: Any = None
    receipts: list[list[MediaReceipt]] | None = None
    prefixes: list[SharedPrefix | None] | None = None


class Model(ABC):
    """A model under evaluation. `media_preprocessing` names the media preprocessing per modality the runner's
    workers apply before `prepare`; None means the model never reads media (files are only checked). With a
    `feature_cache`, the workers hand over stored encoder features instead of decoding, where there are some."""

    modalities: frozenset[Modality]
    media_preprocessing: dict[Modality, str] | None
    feature_cache: FeatureCache | None = None
    reads_media: bool = True
    """False only for the null baselines that answer without media by design (random, blind): their samples carry
    no receipts. Every other model must give a receipt per media input, or its answer is an error record."""

    @abstractmethod
    def prepare(self, samples: list[Sample], media: list[list[MediaInput]]) -> PreparedBatch:
        """Render prompts and turn decoded media into model inputs."""

    @abstractmethod
    def generate(self, batch: PreparedBatch, max_new_tokens: int, stop: Stop = "eos") -> list[str]:
        """Greedy answers, one per sample; `first-character` may stop once the first non-space character is whole
        (see `first_character_complete`)."""

    @abstractmethod
    def loglik(self, batch: PreparedBatch, continuations: list[list[str]]) -> list[list[float]]:
        """Log-probability of each continuation (an option letter or text) as the start of the answer."""

    @abstractmethod
    def describe(self) -> ModelDescription:
        """What identifies this model in a run summary: its adapter, the hashes of its weights, and the rest."""


def first_character_complete(text: str) -> bool:
    """Whether decoded new text holds its first non-space character whole. A partial UTF-8 sequence of byte-fallback
    tokens decodes to U+FFFD, so a leading U+FFFD never ends a first-character generation (one the model means
    as such runs on to EOS or the token limit, which changes nothing but time)."""
    stripped = text.lstrip()
    return bool(stripped) and stripped[0] != "\ufffd"


class FirstCharacterStop:
    """Stops each row once its new text holds its first non-space character whole (the first-character score
    cannot change after that)."""

    def __init__(self, tokenizer: Any, prompt_length: int):
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        return torch.tensor([first_character_complete(text) for text in texts], device=input_ids.device)


def scored_from(context: Sequence[Hashable], full: Sequence[Hashable]) -> int:
    """Where the scored tokens of `full` (prompt + continuation) start: after the longest prefix it shares with
    `context` (the prompt alone), so that a token merged across the boundary is scored, not dropped; at least the last
    token is scored, never position 0."""
    shared = 0
    for a, b in zip(context, full, strict=False):
        if a != b:
            break
        shared += 1
    return max(1, min(shared, len(full) - 1))


def refuse_beyond_context(samples: list[Sample], lengths: list[int], limit: int) -> None:
    """Raise UnsupportedInput naming every sample whose input positions exceed the LLM's context: positions past
    `max_position_embeddings` would run (rotary embeddings extrapolate) but were never trained."""
    too_long = [f"sample {s.id}: {n} positions" for s, n in zip(samples, lengths, strict=True) if n > limit]
    if too_long:
        raise UnsupportedInput(
            f"{'; '.join(too_long)}: longer than the LLM's context of {limit} (max_position_embeddings)"
        )


class ModelSpec(BaseModel):
    """A model id of `models/*.yaml`: its adapter, its arguments (its family defaults' with its own on top) and the
    modalities they amount to (derived by the adapter's arguments, never stated twice)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    adapter: str
    description: str
    modalities: tuple[Modality, ...]
    args: dict[str, Any] = {}

    def arguments(self, overrides: dict[str, Any] | None = None) -> AdapterArguments:
        """The adapter's typed arguments, `overrides` on top of the spec's."""
        return validate_arguments(self.adapter, merge_args(self.args, overrides or {}), f"model {self.name}")

    def components(self) -> list[str]:
        """The weights the model is built from, as `role=reference` (hub ids or local paths)."""
        return self.arguments().components()


class ModelFile(BaseModel):
    """One `models/*.yaml` file as written: `defaults` names a family's shared arguments
    (`models/defaults/<name>.yaml`), under which the file's own `args` are merged."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    defaults: str | None = None
    adapter: str | None = None
    args: dict[str, Any] = {}


class FamilyDefaults(BaseModel):
    """`models/defaults/<family>.yaml`: the adapter and arguments the models of a family share."""

    model_config = ConfigDict(extra="forbid")

    adapter: str
    args: dict[str, Any] = {}


def adapter_arguments(adapter: str, where: str) -> type[AdapterArguments]:
    """The typed arguments of an adapter; `where` names the model or file asking, in the error of an unknown one."""
    if adapter not in ADAPTERS:
        raise ModelError(f"{where}: unknown adapter {adapter!r}; known: {', '.join(ADAPTERS)}")
    return load_reference(ADAPTERS[adapter])


def validate_arguments(adapter: str, args: dict[str, Any], where: str) -> AdapterArguments:
    """`args` as the adapter's typed arguments; a ModelError (prefixed by `where`) names each unknown or invalid
    argument."""
    arguments = adapter_arguments(adapter, where)
    try:
        return arguments.model_validate(args)
    except ValidationError as error:
        problems = error.errors()
        unknown = [problem_location(p) for p in problems if p["type"] == "extra_forbidden"]
        if unknown:
            accepted = ", ".join(arguments.model_fields)
            raise ModelError(
                f"{where}: unknown argument(s) {', '.join(sorted(unknown))}; accepted: {accepted}"
            ) from None
        raise ModelError(f"{where}: invalid argument(s): {validation_problems(error, 'arguments')}") from None


def load_model_specs(models_dir: Path = MODELS_DIR) -> dict[str, ModelSpec]:
    """Every `models_dir/*.yaml` by model id, each merged with its family defaults and its arguments checked."""
    specs: dict[str, ModelSpec] = {}
    families: dict[str, FamilyDefaults] = {}
    for path in sorted(models_dir.glob("*.yaml")):
        try:
            written = ModelFile.model_validate(_read_yaml(path))
        except ValidationError as error:
            raise ModelError(f"{path}: invalid model definition:\n{error}") from None
        adapter, args = written.adapter, written.args
        if written.defaults:
            if written.defaults not in families:
                families[written.defaults] = _family_defaults(
                    path, models_dir / "defaults" / f"{written.defaults}.yaml"
                )
            family = families[written.defaults]
            if adapter not in (None, family.adapter):
                raise ModelError(
                    f"{path}: adapter {adapter!r}, but its defaults {written.defaults!r} are {family.adapter!r}'s"
                )
            adapter, args = family.adapter, merge_args(family.args, args)
        if adapter is None:
            raise ModelError(f"{path}: no adapter (give `adapter`, or `defaults` naming a family)")
        if written.name in specs:
            raise ModelError(f"{path}: model {written.name!r} is defined twice")
        arguments = validate_arguments(adapter, args, str(path))
        specs[written.name] = ModelSpec(
            name=written.name,
            adapter=adapter,
            description=written.description,
            modalities=arguments.input_modalities(),
            args=args,
        )
    return specs


def _family_defaults(model_file: Path, path: Path) -> FamilyDefaults:
    if not path.is_file():
        raise ModelError(f"{model_file}: its defaults {path}: no such family defaults file")
    try:
        return FamilyDefaults.model_validate(_read_yaml(path))
    except ValidationError as error:
        raise ModelError(f"{path}: invalid family defaults:\n{error}") from None


def _read_yaml(path: Path) -> Any:
    import yaml

    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


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


def checked_arguments(spec: ModelSpec, overrides: dict[str, Any]) -> AdapterArguments:
    """The spec's typed arguments with `overrides` on top; an override the model would not use (the encoder of a
    modality it lacks) is an error, not silently dropped."""
    arguments = spec.arguments(overrides)
    missing = arguments.missing()
    if missing:
        raise ModelError(f"model {spec.name}: give {', '.join(f'--model-arg {name}=...' for name in missing)}")
    effective = arguments.effective()
    unused = [path for path in _leaf_paths(overrides) if not _holds(effective, path)]
    if unused:
        raise ModelError(
            f"model {spec.name}: argument(s) {', '.join(unused)} not used by this model "
            f"(it takes {'+'.join(arguments.input_modalities())})"
        )
    return arguments


def check_model_args(spec: ModelSpec, overrides: dict[str, Any]) -> dict[str, Any]:
    """The arguments the model will be built with (the spec's, `overrides` on top), validated by its adapter's
    argument model; reads no weight file and imports no torch."""
    return checked_arguments(spec, overrides).effective()


def build_model(spec: ModelSpec, overrides: dict[str, Any], runtime: Runtime) -> Model:
    """Instantiate the spec's adapter with its arguments, `overrides` taking precedence."""
    arguments = checked_arguments(spec, overrides)
    check_dtype(spec, runtime.dtype)
    return load_reference(arguments.builder)(runtime, arguments)


def resolve_dtype(spec: ModelSpec, device: str, requested: str) -> str:
    """`auto`: the adapter's dtype on CUDA (float16 for ModelCompose, as the authors ran it; bfloat16 otherwise),
    float32 elsewhere. An explicit dtype is kept, once the model is known to take it."""
    if requested != "auto":
        check_dtype(spec, requested)
        return requested
    return adapter_arguments(spec.adapter, f"model {spec.name}").cuda_dtype if device.startswith("cuda") else "float32"


def check_dtype(spec: ModelSpec, dtype: str) -> None:
    """A ModelError unless `dtype` is one of DTYPES that the spec's adapter takes (fp8: only those that say so)."""
    if dtype not in DTYPES:
        raise ModelError(f"model {spec.name}: unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
    if dtype == FP8 and not adapter_arguments(spec.adapter, f"model {spec.name}").fp8_prefill:
        raise ModelError(
            f"model {spec.name}: dtype {FP8} (an FP8 prefill) is only for the ModelCompose adapters, "
            f"not {spec.adapter}; give float32, bfloat16 or float16"
        )


def compute_dtype_name(dtype: str) -> str:
    """The dtype a run of `dtype` (one of DTYPES) computes in, FP8 projections aside: FP8_COMPUTE_DTYPE for fp8."""
    return FP8_COMPUTE_DTYPE if dtype == FP8 else dtype


def compute_dtype(dtype: str):
    """The torch dtype of `compute_dtype_name(dtype)`."""
    import torch

    return getattr(torch, compute_dtype_name(dtype))


def load_reference(reference: str) -> Any:
    """The object a `module:name` reference names, its module imported now."""
    module_name, _, name = reference.partition(":")
    return getattr(importlib.import_module(module_name), name)


def _leaf_paths(args: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in args.items():
        path = f"{prefix}{key}"
        paths += _leaf_paths(value, f"{path}.") if isinstance(value, dict) and value else [path]
    return paths


def _holds(args: dict[str, Any], path: str) -> bool:
    target: Any = args
    for key in path.split("."):
        if not isinstance(target, dict) or key not in target:
            return False
        target = target[key]
    return True
