"""Composition at load time: NaiveMC and DAMC from unimodal expert checkpoints with coefficients, or from a
checkpoint the authors' merge script already wrote (`online-merge-reset-...`). Both give the same adapters,
routes and weights, hence the same logits."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor

from mcub.errors import CheckpointError
from mcub.modalities import Modality
from mcub.models.modelcompose.checkpoint import REFERENCE_NAME, Checkpoint
from mcub.models.modelcompose.lora import LANGUAGE, LoraWeights, Route

Kind = Literal["damc", "naivemc"]
DAMC_STRATEGIES = {"modal", "modal+language"}


@dataclass
class ModalityParts:
    """What one modality brings: its projector, local tokens, encoder location and the route of its span."""

    projector_kind: str
    projector_width: int
    projector_state: dict[str, Tensor]
    prefix: Tensor | None
    suffix: Tensor | None
    encoder: str | None
    select_layer: int
    route: str


@dataclass
class Composition:
    """A composed model's LoRA adapters and routes, and its modalities' parts; `method` records the composition
    method of experts composed at load time (name, arguments, routing); `language_delta`, for a method that is not
    low-rank, gives the dense language delta of a projection (see `language_delta.py`)."""

    kind: Kind
    adapters: dict[tuple[int, str], dict[str, LoraWeights]]
    routes: dict[str, Route]
    modalities: dict[Modality, ModalityParts]
    sources: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    method: dict[str, Any] | None = None
    language_delta: Callable[[tuple[int, str], Any], Tensor] | None = None


def compose_experts(
    experts: Mapping[Modality, Checkpoint], lambdas: Mapping[Modality, float], kind: Kind
) -> Composition:
    """NaiveMC: every token takes the lambda-weighted sum of the experts' `default` LoRAs. DAMC: text does,
    and the span of modality m takes expert m's own modality LoRA, unscaled by lambda."""
    if not experts:
        raise CheckpointError("a composition needs at least one expert checkpoint")
    missing = [m for m in experts if m not in lambdas]
    if missing:
        raise CheckpointError(f"no coefficient (lambda) for the {', '.join(missing)} expert(s)")
    _check_experts(experts)
    adapters: dict[tuple[int, str], dict[str, LoraWeights]] = {}
    language: list[tuple[str, float]] = []
    routes: dict[str, Route] = {}
    parts: dict[Modality, ModalityParts] = {}
    notes: list[str] = []
    for modality, expert in experts.items():
        reference = REFERENCE_NAME[modality]
        language_name = f"default-{reference}"
        for position, own in expert.lora.items():
            adapters.setdefault(position, {})[language_name] = own["default"]
            if kind == "damc" and reference in own:
                adapters[position][reference] = own[reference]
        language.append((language_name, lambdas[modality] * expert.lora_scaling))
        route = LANGUAGE
        if kind == "damc":
            route = modality
            has_own = reference in expert.adapter_names
            routes[modality] = Route(((reference, expert.lora_scaling),) if has_own else ())
            if not has_own:
                notes.append(
                    f"{expert.directory}: no {reference} LoRA ({expert.strategy} training); its tokens use the base "
                    "weights, as in the authors' merge"
                )
        parts[modality] = _parts(expert, modality, route)
    routes[LANGUAGE] = Route(tuple(language))
    sources = [
        {"modality": m, "checkpoint": str(e.directory), "sha256": e.sha256, "lambda": lambdas[m]}
        for m, e in experts.items()
    ]
    return Composition(kind, adapters, routes, parts, sources, notes)


def compose_merged(checkpoint: Checkpoint) -> Composition:
    """A checkpoint written by `merge_unimodal_modelcompose.py --strategy online-merge-reset-...`."""
    coefficients = parse_reset_weights(checkpoint.config.get("reset_scaling_weights") or "")
    names = checkpoint.adapter_names
    scaling = checkpoint.lora_scaling
    language = tuple(
        (name, coefficients.get(name, 1.0) * scaling) for name in sorted(names) if name.startswith("default")
    )
    kind: Kind = "damc" if checkpoint.strategy in DAMC_STRATEGIES else "naivemc"
    routes = {LANGUAGE: Route(language)}
    parts = {}
    for modality in checkpoint.modalities:
        reference = REFERENCE_NAME[modality]
        route = LANGUAGE
        if kind == "damc":
            route = modality
            own = ((reference, coefficients.get(reference, 1.0) * scaling),) if reference in names else ()
            routes[modality] = Route(own)
        parts[modality] = _parts(checkpoint, modality, route)
    sources = [
        {"merged_checkpoint": str(checkpoint.directory), "sha256": checkpoint.sha256, "coefficients": coefficients}
    ]
    return Composition(kind, checkpoint.lora, routes, parts, sources)


def parse_reset_weights(text: str) -> dict[str, float]:
    """`default-video=0.333,default-audio=0.333` -> {adapter: coefficient}."""
    coefficients = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise CheckpointError(f"reset_scaling_weights item {item!r} is not name=value")
        coefficients[name] = float(value)
    return coefficients


def _parts(checkpoint: Checkpoint, modality: Modality, route: str) -> ModalityParts:
    if modality not in checkpoint.projectors:
        raise CheckpointError(
            f"{checkpoint.weights_file}: no model.modal_projectors.{REFERENCE_NAME[modality]}.* tensors"
        )
    kind, width = checkpoint.projector_spec(modality)
    reference = REFERENCE_NAME[modality]
    for side, stored in (("prefix", checkpoint.prefix_tokens), ("suffix", checkpoint.suffix_tokens)):
        expected = checkpoint.local_token_count(modality, side)
        found = stored[reference].shape[1] if reference in stored else 0
        if found != expected:
            raise CheckpointError(
                f"{checkpoint.weights_file}: {side}_tokens.{reference} holds {found} tokens, "
                f"config.json says {expected}"
            )
    return ModalityParts(
        projector_kind=kind,
        projector_width=width,
        projector_state=checkpoint.projectors[modality],
        prefix=checkpoint.prefix_tokens.get(reference),
        suffix=checkpoint.suffix_tokens.get(reference),
        encoder=checkpoint.encoder_path(modality),
        select_layer=checkpoint.select_layer(modality),
        route=route,
    )


def _check_experts(experts: Mapping[Modality, Checkpoint]) -> None:
    for modality, expert in experts.items():
        if expert.modalities != (modality,):
            found = ", ".join(expert.modalities) or "no modality"
            raise CheckpointError(
                f"{expert.directory}: given as the {modality} expert, but it is configured for {found}"
            )
        if "default" not in expert.adapter_names:
            raise CheckpointError(f"{expert.directory}: no `default` (language) LoRA adapter")
        unexpected = expert.adapter_names - {"default", REFERENCE_NAME[modality]}
        if unexpected:
            raise CheckpointError(
                f"{expert.directory}: unexpected LoRA adapters {sorted(unexpected)} in a unimodal expert"
            )
    items = list(experts.items())
    first_modality, first = items[0]
    for modality, expert in items[1:]:
        if expert.lora_r != first.lora_r:
            raise CheckpointError(
                f"LoRA ranks differ: {expert.directory} ({modality}) has r = {expert.lora_r}, "
                f"{first.directory} ({first_modality}) has r = {first.lora_r}"
            )
        if set(expert.lora) != set(first.lora):
            raise CheckpointError(f"{expert.directory} and {first.directory} do not cover the same layers")
