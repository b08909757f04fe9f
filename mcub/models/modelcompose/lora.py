"""Token-routed LoRA: a projection whose tokens take different weighted sums of LoRA adapters by span.

A *route* is a weighted set of adapters applied together (DAMC: the lambda-weighted language adapters for
text, one modality adapter for that modality's span; NaiveMC: the weighted sum everywhere). The adapters of a
route are stacked once into A (R x in) and B (out x R, weights folded in), so each route costs two matmuls
on its tokens, the base matmul runs once per token, and spans are contiguous row slices (several spans of
one route, across a batch, are taken with one index_select)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

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
    _indices: dict[tuple[str | None, torch.device], Tensor] = field(default_factory=dict)

    @classmethod
    def everywhere(cls, route: str, total_rows: int) -> RoutePlan:
        return cls(total_rows, {route: [(0, total_rows)]})

    def rows(self, route: str, device: torch.device) -> Tensor:
        """The route's row indices (built once per plan and device)."""
        return self._rows(route, self.ranges[route], device)

    @cached_property
    def uncovered(self) -> list[tuple[int, int]]:
        """The [start, end) row ranges in no route (padding), in order (worked out once per plan)."""
        covered = sorted(span for spans in self.ranges.values() for span in spans)
        gaps, position = [], 0
        for start, end in covered:
            if start > position:
                gaps.append((position, start))
            position = max(position, end)
        return gaps + ([(position, self.total_rows)] if position < self.total_rows else [])

    def uncovered_rows(self, device: torch.device) -> Tensor:
        """The row indices of `uncovered` (built once per plan and device)."""
        return self._rows(None, self.uncovered, device)

    def _rows(self, key: str | None, ranges: list[tuple[int, int]], device: torch.device) -> Tensor:
        if (key, device) not in self._indices:
            spans = [torch.arange(start, end) for start, end in ranges]
            self._indices[key, device] = torch.cat(spans).to(device, non_blocking=True)
        return self._indices[key, device]


class RoutingState:
    """The plan of the forward pass in progress, shared by every routed projection of a model."""

    def __init__(self, default_route: str = LANGUAGE):
        self.plan: RoutePlan | None = None
        self.default_route = default_route


# Projections that read the same input: their A factors are stacked and applied in one matmul per route.
INPUT_GROUPS = (
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    ("self_attn.o_proj",),
    ("mlp.gate_proj", "mlp.up_proj"),
    ("mlp.down_proj",),
)


# A route whose ranges average at least this many rows is computed range by range (views, no copies);
# one with shorter ranges (text between media, across a batch) is gathered into one matmul.
SLICED_RANGE_ROWS = 128


def sliced(ranges: list[tuple[int, int]]) -> bool:
    """Whether rows in these ranges are computed range by range (else gathered into one matmul)."""
    return len(ranges) == 1 or sum(end - start for start, end in ranges) >= SLICED_RANGE_ROWS * len(ranges)


class SharedLoraInput(nn.Module):
    """The A factors, per route, of the projections of one input group, stacked along the rank. The first
    projection of the group to run computes x A^T for every route; the others reuse it (in call order)."""

    def __init__(self, a_by_route: Mapping[str, Tensor]):
        super().__init__()
        self.route_names = list(a_by_route)
        for index, a in enumerate(a_by_route.values()):
            self.register_buffer(f"a{index}", a, persistent=False)
        self._source: int | None = None
        self._down: dict[str, Tensor] = {}

    def down(self, rows: Tensor, plan: RoutePlan, leader: bool) -> dict[str, Tensor | list[Tensor]]:
        """x A^T of each route present: one tensor per range when the route is sliced, else one gathered."""
        if leader:
            self._source = rows.data_ptr()
            self._down = {}
            for index, route in enumerate(self.route_names):
                if not plan.ranges.get(route):
                    continue
                a = getattr(self, f"a{index}")
                if sliced(plan.ranges[route]):
                    self._down[route] = [rows[start:end] @ a.T for start, end in plan.ranges[route]]
                else:
                    self._down[route] = rows.index_select(0, plan.rows(route, rows.device)) @ a.T
        elif rows.data_ptr() != self._source:
            raise RuntimeError("projections sharing a LoRA input ran out of order")
        return self._down


class RoutedLoraLinear(nn.Module):
    """A frozen base Linear plus, per route, B factors applied to that route's rows (their A side is computed
    by the group's SharedLoraInput; `columns[route]` are this projection's columns of it)."""

    def __init__(
        self,
        base: nn.Linear,
        group: SharedLoraInput,
        leader: bool,
        b_by_route: Mapping[str, Tensor],
        columns: Mapping[str, tuple[int, int]],
        state: RoutingState,
    ):
        super().__init__()
        self.base = base
        self.group = group
        self.leader = leader
        self.state = state
        self.columns = dict(columns)
        self.route_names = list(b_by_route)
        for index, b in enumerate(b_by_route.values()):
            self.register_buffer(f"b{index}", b, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)
        rows = x.reshape(-1, x.shape[-1])
        out = y.view(-1, y.shape[-1])
        plan = self.state.plan or RoutePlan.everywhere(self.state.default_route, rows.shape[0])
        down = self.group.down(rows, plan, self.leader)
        for index, route in enumerate(self.route_names):
            if route not in down:
                continue
            first, last = self.columns[route]
            b = getattr(self, f"b{index}")
            if isinstance(down[route], list):
                for (start, end), h in zip(plan.ranges[route], down[route], strict=True):
                    out[start:end].addmm_(h[:, first:last], b.T)
            else:
                index_rows = plan.rows(route, rows.device)
                out.index_copy_(0, index_rows, out.index_select(0, index_rows).addmm_(down[route][:, first:last], b.T))
        return y

    def route_factors(self) -> dict[str, tuple[Tensor, Tensor]]:
        """This projection's (A, B) of each route with adapters, the adapters' weights folded into B."""
        a_of = {route: getattr(self.group, f"a{index}") for index, route in enumerate(self.group.route_names)}
        factors = {}
        for index, route in enumerate(self.route_names):
            first, last = self.columns[route]
            factors[route] = (a_of[route][first:last], getattr(self, f"b{index}"))
        return factors


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

    `adapters[(layer, module)]` holds that projection's adapters by name (module as in TARGET_MODULES); routes
    without adapters leave their tokens on the base weights."""
    active = {name: route for name, route in routes.items() if route.adapters}
    for layer_index, layer in enumerate(layers):
        for members in INPUT_GROUPS:
            bases = [layer.get_submodule(path) for path in members]
            device, dtype = bases[0].weight.device, bases[0].weight.dtype
            stacked = {
                path: {name: stack_route(adapters[(layer_index, path)], route, dtype) for name, route in active.items()}
                for path in members
            }
            a_by_route, columns = {}, {path: {} for path in members}
            for name in active:
                offset = 0
                for path in members:
                    rank = stacked[path][name][0].shape[0]
                    columns[path][name] = (offset, offset + rank)
                    offset += rank
                a_by_route[name] = torch.cat([stacked[path][name][0] for path in members]).to(device)
            group = SharedLoraInput(a_by_route)
            for position, (path, base) in enumerate(zip(members, bases, strict=True)):
                b_by_route = {name: stacked[path][name][1].to(device) for name in active}
                parent_name, _, child_name = path.rpartition(".")
                routed = RoutedLoraLinear(base, group, position == 0, b_by_route, columns[path], state)
                setattr(layer.get_submodule(parent_name), child_name, routed)
