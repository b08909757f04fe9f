"""Released ModelCompose checkpoints: `config.json` + `adapter_model.bin` (or `.safetensors`), read strictly.

Every tensor must land somewhere: LoRA factors, a modality projector or a local (prefix/suffix) token block.
Tensors the authors' forward never reads (the `default` local tokens, and the `default-<m>` local tokens a merge
writes) are kept aside and reported, and anything else is an error that lists the keys. Every tensor must be of a
floating dtype and finite: an int tensor or a NaN is refused with its key (`allow_nonfinite` loads NaN and
infinities anyway, with a warning, for debugging)."""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from mcub.errors import CheckpointError
from mcub.hashing import file_sha256
from mcub.modalities import REFERENCE_KEYS, Modality
from mcub.models.modelcompose.lora import TARGET_MODULES, LoraWeights
from mcub.models.modelcompose.weights import read_json_object, read_state_dict

REFERENCE_NAME: dict[Modality, str] = {ours: theirs for theirs, ours in REFERENCE_KEYS.items()}
ENCODER_FIELDS: dict[Modality, tuple[str, ...]] = {
    "image": ("mm_vision_tower", "mm_vision_encoder"),
    "video": ("mm_video_encoder",),
    "audio": ("mm_audio_encoder",),
    "point": ("mm_point_encoder",),
}
PROJECTOR_FIELDS: dict[Modality, tuple[str, str]] = {
    "image": ("mm_projector_type", "mm_hidden_size"),
    "video": ("mm_video_projector_type", "mm_video_hidden_size"),
    "audio": ("mm_audio_projector_type", "mm_audio_hidden_size"),
    "point": ("mm_point_projector_type", "mm_point_hidden_size"),
}
SELECT_LAYER_FIELDS: dict[Modality, str] = {"image": "mm_vision_select_layer", "video": "mm_video_select_layer"}
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
_LORA_KEY = re.compile(
    r"^model\.layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)\.lora_([AB])\.([^.]+)\.weight$"
)
_PROJECTOR_KEY = re.compile(r"^model\.modal_projectors\.(vision|video|audio|point)\.(.+)$")
_LOCAL_TOKENS_KEY = re.compile(r"^(prefix|suffix)_tokens\.(.+)$")


@dataclass
class Checkpoint:
    """A checkpoint directory's configuration and tensors, sorted by role."""

    directory: Path
    weights_file: Path
    sha256: str
    config: dict[str, Any]
    modalities: tuple[Modality, ...]
    lora: dict[tuple[int, str], dict[str, LoraWeights]]
    projectors: dict[Modality, dict[str, Tensor]]
    prefix_tokens: dict[str, Tensor]
    suffix_tokens: dict[str, Tensor]
    unused: list[str] = field(default_factory=list)
    aside: dict[str, Tensor] = field(default_factory=dict)
    """The tensors of `unused`, by key (the authors' factor merges read them)."""

    @property
    def lora_r(self) -> int:
        return int(self.config.get("lora_r") or 0)

    @property
    def lora_scaling(self) -> float:
        """alpha / r, the scale of every LoRA delta."""
        return float(self.config["lora_alpha"]) / self.lora_r

    @property
    def strategy(self) -> str | None:
        return self.config.get("lora_strategy")

    @property
    def adapter_names(self) -> set[str]:
        return {name for adapters in self.lora.values() for name in adapters}

    def encoder_path(self, modality: Modality) -> str | None:
        return next((self.config[f] for f in ENCODER_FIELDS[modality] if self.config.get(f)), None)

    def projector_spec(self, modality: Modality) -> tuple[str, int]:
        kind_field, width_field = PROJECTOR_FIELDS[modality]
        if not self.config.get(kind_field) or not self.config.get(width_field):
            raise CheckpointError(f"{self.directory}/config.json: no {kind_field} / {width_field} for {modality}")
        return self.config[kind_field], int(self.config[width_field])

    def select_layer(self, modality: Modality) -> int:
        return int(self.config.get(SELECT_LAYER_FIELDS.get(modality, ""), -2))

    def local_token_count(self, modality: Modality, side: str) -> int:
        """The configured number of prefix or suffix tokens of a modality (0 when it has none)."""
        own = self.config.get(f"local_{REFERENCE_NAME[modality]}_{side}_tokens")
        return int(own if own is not None else self.config.get(f"local_{side}_tokens") or 0)


def read_checkpoint(directory: Path | str, allow_nonfinite: bool = False) -> Checkpoint:
    """Read and sort a checkpoint directory; fail on missing files, unknown keys, inconsistent LoRA, non-floating
    tensors, and (unless `allow_nonfinite`) non-finite values."""
    directory = Path(directory)
    config = read_json_object(directory / "config.json", "is this a ModelCompose checkpoint directory?")
    weights_file = next((directory / name for name in WEIGHT_FILES if (directory / name).is_file()), None)
    if weights_file is None:
        raise CheckpointError(f"{directory}: none of {', '.join(WEIGHT_FILES)} found")
    tensors = read_state_dict(weights_file)
    _check_values(weights_file, tensors, allow_nonfinite)
    modalities = tuple(m for m in ENCODER_FIELDS if any(config.get(f) for f in ENCODER_FIELDS[m]))
    lora, projectors, prefix, suffix, unused, unknown = _sort_keys(tensors)
    if unknown:
        raise CheckpointError(f"{weights_file}: {len(unknown)} key(s) map onto nothing: {', '.join(sorted(unknown))}")
    checkpoint = Checkpoint(
        directory, weights_file, file_sha256(weights_file), config, modalities, lora, projectors, prefix, suffix,
        unused, {key: tensors[key] for key in unused},
    )  # fmt: skip
    _check_lora(checkpoint)
    return checkpoint


def _check_values(weights_file: Path, tensors: dict[str, Tensor], allow_nonfinite: bool) -> None:
    """Every tensor of a floating dtype; every value finite, or a warning when `allow_nonfinite`."""
    import torch

    def listing(keys: list[str]) -> str:
        return ", ".join(keys[:10]) + (f" and {len(keys) - 10} more" if len(keys) > 10 else "")

    wrong = [
        f"{key} ({str(t.dtype).removeprefix('torch.')})" for key, t in tensors.items() if not t.is_floating_point()
    ]
    if wrong:
        raise CheckpointError(
            f"{weights_file}: {len(wrong)} tensor(s) of a non-floating dtype (LoRA factors, projectors and local "
            f"tokens are float16, bfloat16 or float32): {listing(wrong)}"
        )
    nonfinite = [key for key, tensor in tensors.items() if not bool(torch.isfinite(tensor).all())]
    if not nonfinite:
        return
    message = f"{weights_file}: {len(nonfinite)} tensor(s) hold NaN or infinite values: {listing(nonfinite)}"
    if not allow_nonfinite:
        raise CheckpointError(f"{message}; --model-arg allow_nonfinite_weights=true loads them anyway (for debugging)")
    warnings.warn(f"{message}; loaded as allow_nonfinite_weights asks", stacklevel=3)


def _sort_keys(tensors: dict[str, Tensor]):
    lora: dict[tuple[int, str], dict[str, dict[str, Tensor]]] = defaultdict(lambda: defaultdict(dict))
    projectors: dict[Modality, dict[str, Tensor]] = defaultdict(dict)
    prefix: dict[str, Tensor] = {}
    suffix: dict[str, Tensor] = {}
    unused: list[str] = []
    unknown: list[str] = []
    for key, tensor in tensors.items():
        if match := _LORA_KEY.match(key):
            layer, module, factor, adapter = match.groups()
            lora[(int(layer), module)][adapter][factor] = tensor
        elif match := _PROJECTOR_KEY.match(key):
            projectors[REFERENCE_KEYS[match.group(1)]][match.group(2)] = tensor
        elif match := _LOCAL_TOKENS_KEY.match(key):
            side, name = match.groups()
            if name == "default" or name.startswith("default-"):
                unused.append(key)
            elif name in REFERENCE_KEYS:
                (prefix if side == "prefix" else suffix)[name] = tensor
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    pairs: dict[tuple[int, str], dict[str, LoraWeights]] = {}
    for (layer, module), adapters in lora.items():
        pairs[(layer, module)] = {}
        for adapter, factors in adapters.items():
            if set(factors) != {"A", "B"}:
                missing = "B" if "A" in factors else "A"
                unknown.append(f"model.layers.{layer}.{module}.lora_{missing}.{adapter}.weight (missing)")
                continue
            pairs[(layer, module)][adapter] = LoraWeights(factors["A"], factors["B"])
    return pairs, dict(projectors), prefix, suffix, unused, unknown


def _check_lora(checkpoint: Checkpoint) -> None:
    """Every layer has every target module, each with the same adapters, at the configured rank."""
    if not checkpoint.lora:
        return
    layers = sorted({layer for layer, _ in checkpoint.lora})
    names = checkpoint.adapter_names
    problems = []
    for layer in range(layers[-1] + 1):
        for module in TARGET_MODULES:
            have = set(checkpoint.lora.get((layer, module), {}))
            if have != names:
                problems.append(f"model.layers.{layer}.{module}: adapters {sorted(have)}, expected {sorted(names)}")
    rank = checkpoint.lora_r
    for (layer, module), adapters in checkpoint.lora.items():
        for name, weights in adapters.items():
            if weights.a.shape[0] != rank or weights.b.shape[1] != rank:
                problems.append(
                    f"model.layers.{layer}.{module}.lora_A.{name}.weight: rank {weights.a.shape[0]} "
                    f"(B: {weights.b.shape[1]}), but config.json says lora_r = {rank}"
                )
    if problems:
        listing = "\n  ".join(problems[:20])
        raise CheckpointError(
            f"{checkpoint.weights_file}: inconsistent LoRA ({len(problems)} problem(s)):\n  {listing}"
        )
