"""Routes as merged weights: each projection keeps one dense weight per route, W + B A of the route's stacked
adapters (and the dense language delta on the language route), so a routed forward is the dense forward cut into
its routes' rows, with no LoRA matmuls at all; routes without adapters take the base weight. Exact up to rounding
the merged weight once (computed in float32, stored in the LLM's dtype), at the memory of one copy of the seven
projections per route with adapters, less the base weights where every route has adapters
(`route_weights: merged`); the factored routes of `lora.py` stay the default."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from mcub.models.modelcompose.language_delta import LanguageDeltaLinear
from mcub.models.modelcompose.lora import LANGUAGE, TARGET_MODULES, RoutedLoraLinear, RoutingState, sliced


class MergedRouteLinear(nn.Module):
    """A projection whose rows of each route are multiplied by that route's weight: range by range (views, no
    copies) where the route's ranges are long, gathered into one matmul where they are short (see `sliced`). Rows in
    no route (padding, which no other row reads) take the default route's weight."""

    def __init__(self, weights: Mapping[str, Tensor], bias: Tensor | None, state: RoutingState):
        super().__init__()
        if state.default_route not in weights:
            raise ValueError(f"no weight for the default route {state.default_route!r}")
        self.state = state
        self.route_names = list(weights)
        self.out_features = next(iter(weights.values())).shape[0]
        for index, weight in enumerate(weights.values()):
            self.register_buffer(f"w{index}", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)

    def weight_of(self, route: str | None) -> Tensor:
        """The route's weight (None: rows in no route)."""
        name = self.state.default_route if route is None else route
        if name not in self.route_names:
            raise KeyError(f"route {name!r} is not one of this model's routes ({', '.join(self.route_names)})")
        return getattr(self, f"w{self.route_names.index(name)}")

    def forward(self, x: Tensor) -> Tensor:
        plan = self.state.plan
        if plan is None:  # every row on the default route (a decoding step, a continuation pass)
            return nn.functional.linear(x, self.weight_of(self.state.default_route), self.bias)
        rows = x.reshape(-1, x.shape[-1])
        if len(plan.ranges) == 1:
            [(route, ranges)] = plan.ranges.items()
            if ranges == [(0, rows.shape[0])]:
                return nn.functional.linear(x, self.weight_of(route), self.bias)
        out = rows.new_empty(rows.shape[0], self.out_features)
        for route, ranges in [*plan.ranges.items(), (None, plan.uncovered)]:
            if not ranges:
                continue
            weight = self.weight_of(route)
            if sliced(ranges):
                for start, end in ranges:
                    self._matmul(rows[start:end], weight, out[start:end])
            else:
                index = plan.rows(route, rows.device) if route is not None else plan.uncovered_rows(rows.device)
                out.index_copy_(0, index, self._matmul(rows.index_select(0, index), weight))
        return out.view(*x.shape[:-1], self.out_features)

    def _matmul(self, rows: Tensor, weight: Tensor, out: Tensor | None = None) -> Tensor:
        if self.bias is None:
            return torch.mm(rows, weight.T, out=out)
        return torch.addmm(self.bias, rows, weight.T, out=out)


def merge_route_weights(layers: Sequence[nn.Module], state: RoutingState, routes: Iterable[str]) -> None:
    """Replace every routed projection of every decoder layer (as `install_routed_lora` and `apply_language_delta`
    left it) by a MergedRouteLinear holding a weight for each of `routes` (the routes a plan may name): merged where
    the route has adapters or the language delta, the base weight itself (no copy) where it has neither. One
    projection is merged at a time."""
    routes = list(routes)
    for layer in layers:
        for path in TARGET_MODULES:
            projection, delta = routed_parts(layer, path)
            base = projection.base
            merged = merged_weights(base.weight, projection.route_factors(), delta)
            weights = {route: merged.get(route, base.weight) for route in routes}
            parent_name, _, child_name = path.rpartition(".")
            setattr(layer.get_submodule(parent_name), child_name, MergedRouteLinear(weights, base.bias, state))


def routed_parts(layer: nn.Module, path: str) -> tuple[RoutedLoraLinear, Tensor | None]:
    """The routed projection at `path` of a decoder layer, and the dense language delta applied beside it (if any)."""
    projection, delta = layer.get_submodule(path), None
    if isinstance(projection, LanguageDeltaLinear):
        projection, delta = projection.inner, projection.delta
    if not isinstance(projection, RoutedLoraLinear):
        raise TypeError(f"{path} is a {type(projection).__name__}, not a routed projection")
    return projection, delta


def added_bytes(layers: Sequence[nn.Module], routes: Iterable[str]) -> int:
    """The memory `merge_route_weights` adds to the routed layers: per projection, one weight for each of `routes`
    with adapters or the language delta, less the base weight where every route has one (the factors it frees are
    not counted)."""
    routes = list(routes)
    total = 0
    for layer in layers:
        for path in TARGET_MODULES:
            routed, delta = routed_parts(layer, path)
            merged = set(routed.route_factors()) | ({LANGUAGE} if delta is not None else set())
            copies = sum(route in merged for route in routes) - all(route in merged for route in routes)
            weight = routed.base.weight
            total += copies * weight.numel() * weight.element_size()
    return total


def merged_weights(
    base: Tensor, factors: Mapping[str, tuple[Tensor, Tensor]], language_delta: Tensor | None
) -> dict[str, Tensor]:
    """W + B A per route (and + the language delta on the language route), summed in float32."""
    deltas = {route: b.to(torch.float32) @ a.to(torch.float32) for route, (a, b) in factors.items()}
    if language_delta is not None:
        deltas[LANGUAGE] = deltas.get(LANGUAGE, 0) + language_delta.to(torch.float32)
    base32 = base.to(torch.float32)
    return {route: (base32 + delta).to(base.dtype) for route, delta in deltas.items()}
