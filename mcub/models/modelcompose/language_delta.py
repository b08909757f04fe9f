"""The language part of a composition put into the LLM, and its hash: a dense language delta (a composition method
that is not low-rank) is folded into the base weights when every token takes the language route (NaiveMC), or
applied to the language route's rows beside the routed LoRA otherwise (DAMC: the modality tokens keep the base
weights and their own LoRA, at the memory of one more copy of the projections). Either way one projection's
delta is computed at a time."""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

from mcub.models.modelcompose.compose import Composition
from mcub.models.modelcompose.lora import LANGUAGE, TARGET_MODULES, RoutePlan, RoutingState, stack_route


class LanguageDeltaLinear(nn.Module):
    """A routed projection plus a dense delta on the rows of the language route."""

    def __init__(self, inner: nn.Module, delta: Tensor, state: RoutingState):
        super().__init__()
        self.inner = inner
        self.state = state
        self.register_buffer("delta", delta, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        y = self.inner(x)
        rows = x.reshape(-1, x.shape[-1])
        plan = self.state.plan or RoutePlan.everywhere(self.state.default_route, rows.shape[0])
        if not plan.ranges.get(LANGUAGE):
            return y
        index = plan.rows(LANGUAGE, rows.device)
        y.view(-1, y.shape[-1]).index_add_(0, index, rows.index_select(0, index) @ self.delta.T)
        return y


def language_route_sha256(composition: Composition, dtype: torch.dtype) -> hashlib._Hash:
    """A running SHA-256 of the language route's stacked factors (weights folded in, in the LLM's dtype), per
    projection in layer and module order; dense deltas are added to it as they are applied."""
    digest = hashlib.sha256()
    route = composition.routes.get(LANGUAGE)
    if route is None or not route.adapters:
        return digest
    for position in sorted(composition.adapters):
        a, b = stack_route(composition.adapters[position], route, dtype)
        digest.update(_bytes(a))
        digest.update(_bytes(b))
    return digest


def apply_language_delta(layers, composition: Composition, state: RoutingState, digest: hashlib._Hash) -> None:
    """Put the composition's dense language delta (if any) into the routed layers, adding each to `digest`."""
    if composition.language_delta is None:
        return
    everywhere = all(parts.route == LANGUAGE for parts in composition.modalities.values())
    for layer_index, layer in enumerate(layers):
        for path in TARGET_MODULES:
            projection = layer.get_submodule(path)
            weight = projection.base.weight
            delta = composition.language_delta((layer_index, path), weight.device)
            digest.update(_bytes(delta.to(weight.dtype)))
            if everywhere:
                weight.data.copy_((weight.to(torch.float32) + delta).to(weight.dtype))
            else:
                parent_name, _, child_name = path.rpartition(".")
                routed = LanguageDeltaLinear(projection, delta.to(weight.dtype), state)
                setattr(layer.get_submodule(parent_name), child_name, routed)
            del delta
    composition.language_delta = None


def _bytes(tensor: Tensor) -> bytes:
    return tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()
