"""Routes as merged weights: each projection keeps one dense weight per route, W + B A of the route's stacked
adapters (and the dense language delta on the language route), so a routed forward is the dense forward cut into
its routes' rows, with no LoRA matmuls at all; rows in no route (padding) and routes without adapters take the base
weight. Exact up to rounding the merged weight once (computed in float32, stored in the LLM's dtype), at the memory
of one more copy of the seven projections per route with adapters (`route_weights: merged`); the factored routes of
`lora.py` stay the default."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mcub.models.modelcompose.language_delta import LanguageDeltaLinear
from mcub.models.modelcompose.lora import LANGUAGE, TARGET_MODULES, RoutedLoraLinear, RoutePlan, RoutingState, sliced


class MergedRouteLinear(nn.Module):
    """A projection whose rows of each route are multiplied by that route's merged weight: range by range (views,
    no copies) where the route's ranges are long, gathered into one matmul where they are short (see `sliced`)."""

    def __init__(self, base: nn.Linear, weights: Mapping[str, Tensor], state: RoutingState):
        super().__init__()
        self.base = base
        self.state = state
        self.route_names = list(weights)
        for index, weight in enumerate(weights.values()):
            self.register_buffer(f"w{index}", weight, persistent=False)

    def weight_of(self, route: str | None) -> Tensor:
        """The route's merged weight; the base weight for rows in no route or on a route without adapters."""
        if route in self.route_names:
            return getattr(self, f"w{self.route_names.index(route)}")
        return self.base.weight

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, x.shape[-1])
        plan = self.state.plan or RoutePlan.everywhere(self.state.default_route, rows.shape[0])
        if len(plan.ranges) == 1:
            [(route, ranges)] = plan.ranges.items()
            if ranges == [(0, rows.shape[0])]:
                return nn.functional.linear(x, self.weight_of(route), self.base.bias)
        out = rows.new_empty(rows.shape[0], self.base.out_features)
        for route, ranges in [*plan.ranges.items(), (None, plan.uncovered())]:
            if not ranges:
                continue
            weight = self.weight_of(route)
            if sliced(ranges):
                for start, end in ranges:
                    self._matmul(rows[start:end], weight, out[start:end])
            else:
                index = plan.rows(route, rows.device) if route is not None else plan.uncovered_rows(rows.device)
                out.index_copy_(0, index, self._matmul(rows.index_select(0, index), weight))
        return out.view(*x.shape[:-1], self.base.out_features)

    def _matmul(self, rows: Tensor, weight: Tensor, out: Tensor | None = None) -> Tensor:
        if self.base.bias is None:
            return torch.mm(rows, weight.T, out=out)
        return torch.addmm(self.base.bias, rows, weight.T, out=out)


def merge_route_weights(layers: Sequence[nn.Module], state: RoutingState) -> None:
    """Replace every routed projection of every decoder layer (as `install_routed_lora` and `apply_language_delta`
    left it) by a MergedRouteLinear of the same routes, one projection at a time."""
    for layer in layers:
        for path in TARGET_MODULES:
            projection = layer.get_submodule(path)
            delta = None
            if isinstance(projection, LanguageDeltaLinear):
                projection, delta = projection.inner, projection.delta
            if not isinstance(projection, RoutedLoraLinear):
                raise TypeError(f"{path} is a {type(projection).__name__}, not a routed projection")
            weights = merged_weights(projection.base.weight, projection.route_factors(), delta)
            parent_name, _, child_name = path.rpartition(".")
            setattr(layer.get_submodule(parent_name), child_name, MergedRouteLinear(projection.base, weights, state))


def merged_weights(
    base: Tensor, factors: Mapping[str, tuple[Tensor, Tensor]], language_delta: Tensor | None
) -> dict[str, Tensor]:
    """W + B A per route (and + the language delta on the language route), summed in float32."""
    deltas = {route: b.to(torch.float32) @ a.to(torch.float32) for route, (a, b) in factors.items()}
    if language_delta is not None:
        deltas[LANGUAGE] = deltas.get(LANGUAGE, 0) + language_delta.to(torch.float32)
    return {route: (base.to(torch.float32) + delta).to(base.dtype) for route, delta in deltas.items()}
