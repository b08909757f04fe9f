"""Token-routed LoRA: a projection whose tokens take different weighted sums of LoRA adapters by span.

A *route* is a weighted set of adapters applied together (DAMC: the lambda-weighted language adapters for
text, one modality adapter for that modality's span; NaiveMC: the weighted sum everywhere). The adapters of a
route are stacked once into A (R x in) and B (out x R, weights folded in), so each route costs two matmuls
on its tokens, the base matmul runs once per token, and spans are contiguous row slices (several spans of
one route, across a batch, are taken with one index_select)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

TARGET_MODULES = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)
LANGUAGE = "language"


@dataclass(frozen=True)
class LoraWeights:
    """One adapter of one projection: A (r x in), B (out x r)."""

    a: Tensor
    b: Tensor


@dataclass(frozen=True)
class Route:
    """Adapters applied together, each with its weight (lambda x alpha / r)."""

    adapters: tuple[tuple[str, float], ...]


@dataclass
class RoutePlan:
    """Which rows of the flattened (batch x time) tokens take which route, for one forward pass.

    `ranges[route]` are contiguous [start, end) row ranges; rows in no range get no LoRA (padding)."""

    total_rows: int
    ranges: dict[str, list[tuple[int, int]]]
    _indices: dict[tuple[str, torch.device], Tensor] = field(default_factory=dict)

    @classmethod
    def everywhere(cls, route: str, total_rows: int) -> RoutePlan:
        return cls(total_rows, {route: [(0, total_rows)]})

    def rows(self, route: str, device: torch.device) -> Tensor:
        """The route's row indices (built once per plan and device)."""
        key = (route, device)
        if key not in self._indices:
            spans = [torch.arange(start, end) for start, end in self.ranges[route]]
            self._indices[key] = torch.cat(spans).to(device)
        return self._indices[key]


class RoutingState:
    """The plan of the forward pass in progress, shared by every routed projection of a model."""

    def __init__(self, default_route: str = LANGUAGE):
        self.plan: RoutePlan | None = None
        self.default_route = default_route


class RoutedLoraLinear(nn.Module):
    """A frozen base Linear plus, per route, stacked LoRA factors applied to that route's rows."""

    def __init__(self, base: nn.Linear, routes: Mapping[str, tuple[Tensor, Tensor]], state: RoutingState):
        super().__init__()
        self.base = base
        self.state = state
        self.route_names = list(routes)
        for index, (a, b) in enumerate(routes.values()):
            self.register_buffer(f"a{index}", a, persistent=False)
            self.register_buffer(f"b{index}", b, persistent=False)

    def factors(self, route: str) -> tuple[Tensor, Tensor]:
        index = self.route_names.index(route)
        return getattr(self, f"a{index}"), getattr(self, f"b{index}")

    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)
        plan = self.state.plan
        rows = x.reshape(-1, x.shape[-1])
        out = y.view(-1, y.shape[-1])
        if plan is None:
            plan = RoutePlan.everywhere(self.state.default_route, rows.shape[0])
        for route, ranges in plan.ranges.items():
            if not ranges or route not in self.route_names:
                continue
            a, b = self.factors(route)
            if len(ranges) == 1:
                start, end = ranges[0]
                out[start:end].addmm_(rows[start:end] @ a.T, b.T)
            else:
                index = plan.rows(route, x.device)
                out.index_add_(0, index, (rows.index_select(0, index) @ a.T) @ b.T)
        return y


def stack_route(adapters: Mapping[str, LoraWeights], route: Route, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """One route's factors: A stacked along the rank, B side by side with each adapter's weight folded in."""
    a = torch.cat([adapters[name].a.to(torch.float32) for name, _ in route.adapters])
    b = torch.cat([adapters[name].b.to(torch.float32) * weight for name, weight in route.adapters], dim=1)
    return a.to(dtype), b.to(dtype)


def install_routed_lora(
    layers: Sequence[nn.Module],
    adapters: Mapping[tuple[int, str], Mapping[str, LoraWeights]],
    routes: Mapping[str, Route],
    state: RoutingState,
) -> None:
    """Replace every target projection of every decoder layer by a routed one.

    `adapters[(layer, module)]` holds that projection's adapters by name (module as in TARGET_MODULES)."""
    for layer_index, layer in enumerate(layers):
        for module_path in TARGET_MODULES:
            parent_name, _, child_name = module_path.rpartition(".")
            parent = layer.get_submodule(parent_name)
            base = getattr(parent, child_name)
            dtype = base.weight.dtype
            own = adapters[(layer_index, module_path)]
            stacked = {
                name: tuple(t.to(base.weight.device) for t in stack_route(own, route, dtype))
                for name, route in routes.items()
            }
            setattr(parent, child_name, RoutedLoraLinear(base, stacked, state))
