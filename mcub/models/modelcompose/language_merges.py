"""The composition methods of `methods.py` at work: each composes the experts' language LoRAs into a language part,
low-rank factors routed like today's (weighted sums, the authors' factor merges, TSV, Iso-C) or, for the methods
that are not low-rank (TIES and DARE on the products), a dense delta per projection computed when it is applied.
The modality LoRAs, projectors and local tokens stay as `compose_experts` places them.

Conventions: an expert's delta of a projection is s B A (s = alpha / r); singular value decompositions are computed
from the factors (QR of B and of A^T, then the SVD of the small core), which is exact; dense deltas are computed
on the device of the base weights, in float32."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mcub.hashing import derived_seed
from mcub.modalities import Modality
from mcub.models.base import load_reference
from mcub.models.modelcompose.checkpoint import REFERENCE_NAME, Checkpoint
from mcub.models.modelcompose.compose import DAMC_STRATEGIES, Composition, compose_experts
from mcub.models.modelcompose.lora import LANGUAGE, LoraWeights, Route
from mcub.models.modelcompose.methods import method

Position = tuple[int, str]
DenseDelta = Callable[[Position, torch.device], Tensor]


@dataclass
class LanguagePart:
    """What a method gives the text tokens: low-rank adapters per projection and the route that weighs them, or
    `delta`, the dense merged delta of a projection (then no adapter)."""

    adapters: dict[Position, dict[str, LoraWeights]] = field(default_factory=dict)
    route: Route = Route(())
    delta: DenseDelta | None = None


def compose_by_method(
    experts: Mapping[Modality, Checkpoint], lambdas: Mapping[Modality, float], name: str, arguments: dict
) -> Composition:
    """The experts composed by the registered method `name` with its `arguments` (checked) and, for a method that
    uses them, the coefficients `lambdas`; the composition records the method and its arguments."""
    chosen = method(name)
    checked = chosen.checked_arguments(arguments)
    routing = chosen.routing or _experts_routing(experts)
    composition = compose_experts(experts, lambdas, routing)
    record = {"name": name, "arguments": checked.model_dump(mode="json"), "routing": routing}
    composition.method = record
    if not chosen.uses_lambdas:
        for source in composition.sources:
            source.pop("lambda")
    if chosen.name in ("damc", "naivemc"):
        return composition
    part = load_reference(chosen.language)(experts, lambdas, checked)
    for position, adapters in composition.adapters.items():
        for modality in experts:
            adapters.pop(f"default-{REFERENCE_NAME[modality]}")
        adapters.update(part.adapters.get(position, {}))
    composition.routes[LANGUAGE] = part.route
    composition.language_delta = part.delta
    return composition


def _experts_routing(experts: Mapping[Modality, Checkpoint]) -> str:
    """DAMC when the experts' merged configuration is DAMC's: the first truthy `lora_strategy`, as the authors'
    merge script merges configurations."""
    strategy = next((e.strategy for e in experts.values() if e.strategy), None)
    return "damc" if strategy in DAMC_STRATEGIES else "naivemc"


def _positions(experts: Mapping[Modality, Checkpoint]) -> list[Position]:
    return sorted(next(iter(experts.values())).lora)


def _scaled(expert: Checkpoint, position: Position) -> tuple[Tensor, Tensor]:
    """(s B, A) of the expert's language LoRA at a projection, in float32."""
    weights = expert.lora[position]["default"]
    return weights.b.to(torch.float32) * expert.lora_scaling, weights.a.to(torch.float32)


def weighted_sum(experts, lambdas, arguments) -> LanguagePart:
    """Sum over m of lambda_m s_m B_m A_m, as the stacked language LoRAs (the paper's composition)."""
    adapters = {
        position: {f"default-{REFERENCE_NAME[m]}": e.lora[position]["default"] for m, e in experts.items()}
        for position in _positions(experts)
    }
    route = Route(tuple((f"default-{REFERENCE_NAME[m]}", lambdas[m] * e.lora_scaling) for m, e in experts.items()))
    return LanguagePart(adapters, route)


def average(experts, lambdas, arguments) -> LanguagePart:
    """The mean of the experts' language deltas."""
    return weighted_sum(experts, {m: 1.0 / len(experts) for m in experts}, arguments)


def _merged_factors(experts, merge: Callable[[list[Tensor]], Tensor]) -> LanguagePart:
    """One `default` adapter whose A and B are each merged from the experts' (in their stored dtype), weighed by
    the first expert's scaling: the merged configuration's alpha / r, first truthy as the authors merge configs."""
    adapters = {}
    for position in _positions(experts):
        own = [e.lora[position]["default"] for e in experts.values()]
        adapters[position] = {"default": LoraWeights(merge([w.a for w in own]), merge([w.b for w in own]))}
    return LanguagePart(adapters, Route((("default", next(iter(experts.values())).lora_scaling),)))


def factor_sum(experts, lambdas, arguments) -> LanguagePart:
    """The authors' `sum`: the factors summed elementwise, in the experts' order."""
    return _merged_factors(experts, sum)


def factor_mean(experts, lambdas, arguments) -> LanguagePart:
    """The authors' `mean`: the factors' elementwise sum divided by the number of experts."""
    return _merged_factors(experts, lambda tensors: sum(tensors) / len(tensors))


def top_magnitude_mask(stacked: Tensor, kept: int) -> Tensor:
    """Per row, the entries at least as large in magnitude as the row's `kept`-th largest (ties at the threshold
    kept); every entry when `kept` covers the row."""
    width = stacked.shape[1]
    if kept >= width:
        return torch.ones_like(stacked, dtype=torch.bool)
    magnitude = stacked.abs()
    threshold = magnitude.kthvalue(width - kept + 1, dim=1, keepdim=True).values
    return magnitude >= threshold


def ties_merge(stacked: Tensor, kept: int, how: str) -> Tensor:
    """TIES over the rows of `stacked` (one per expert): trim each to its `kept` largest magnitudes, elect each
    coordinate's sign by the sum (a zero sum takes the majority sign of the elected signs), and merge the entries
    agreeing with it (`mean` over those present, `sum`, or `max` magnitude with the elected sign)."""
    trimmed = stacked * top_magnitude_mask(stacked, kept)
    sign = torch.sign(trimmed.sum(dim=0))
    sign[sign == 0] = torch.sign(sign.sum())
    selected = trimmed * torch.where(sign > 0, trimmed > 0, trimmed < 0)
    if how == "mean":
        return selected.sum(dim=0) / (selected != 0).sum(dim=0).clamp(min=1)
    if how == "sum":
        return selected.sum(dim=0)
    return selected.abs().amax(dim=0) * sign


def _authors_ties(experts, arguments, how: str) -> LanguagePart:
    """The authors' `ties-<how> -K`: every tensor that all experts hold (the `default` LoRA factors and the unused
    `default` local tokens) flattened into one vector per expert, TIES-merged, then cut back into factors (computed
    in float32, stored in the experts' dtype). As the authors' `topk_values_mask`, a vector keeps int(d K / 100) + 1
    entries: its threshold is the (d - int(d K / 100))-th smallest magnitude."""
    positions = _positions(experts)
    shared = sorted(set.intersection(*(set(e.aside) for e in experts.values())))
    pieces = [[w for p in positions for w in (e.lora[p]["default"].a, e.lora[p]["default"].b)]
              + [e.aside[key] for key in shared] for e in experts.values()]  # fmt: skip
    stacked = torch.stack([torch.cat([t.reshape(-1).to(torch.float32) for t in row]) for row in pieces])
    merged = ties_merge(stacked, int(stacked.shape[1] * (arguments.k / 100)) + 1, how)
    offsets = torch.tensor([0] + [t.numel() for t in pieces[0]]).cumsum(0).tolist()
    cut = [
        merged[start:end].reshape(t.shape).to(t.dtype)
        for start, end, t in zip(offsets[:-1], offsets[1:], pieces[0], strict=True)
    ]
    adapters = {p: {"default": LoraWeights(cut[2 * i], cut[2 * i + 1])} for i, p in enumerate(positions)}
    return LanguagePart(adapters, Route((("default", next(iter(experts.values())).lora_scaling),)))


def authors_ties_sum(experts, lambdas, arguments) -> LanguagePart:
    return _authors_ties(experts, arguments, "sum")


def authors_ties_mean(experts, lambdas, arguments) -> LanguagePart:
    return _authors_ties(experts, arguments, "mean")


def authors_ties_max(experts, lambdas, arguments) -> LanguagePart:
    return _authors_ties(experts, arguments, "max")


def _dense_deltas(experts, position: Position, device: torch.device) -> dict[Modality, Tensor]:
    deltas = {}
    for modality, expert in experts.items():
        b, a = _scaled(expert, position)
        deltas[modality] = b.to(device) @ a.to(device)
    return deltas


def ties(experts, lambdas, arguments) -> LanguagePart:
    """TIES on each projection: each expert's delta trimmed to its max(1, int(d k)) largest magnitudes (d entries),
    signs elected, the disjoint mean, times `scaling`."""

    def delta(position: Position, device: torch.device) -> Tensor:
        deltas = list(_dense_deltas(experts, position, device).values())
        stacked = torch.stack([d.reshape(-1) for d in deltas])
        merged = ties_merge(stacked, max(1, int(stacked.shape[1] * arguments.k)), "mean")
        return merged.reshape(deltas[0].shape) * arguments.scaling

    return LanguagePart(delta=delta)


def dare_seed(seed: int, position: Position, modality: Modality) -> int:
    """The seed of one expert's drop mask at one projection: independent of the order projections are merged in."""
    return derived_seed(seed, str(position[0]), position[1], modality) & ((1 << 63) - 1)


def dare(experts, lambdas, arguments) -> LanguagePart:
    """DARE: each entry of each expert's delta kept with probability 1 - p and rescaled by 1 / (1 - p), the masks
    drawn on the device from `dare_seed`; then the lambda-weighted sum."""

    def delta(position: Position, device: torch.device) -> Tensor:
        merged = None
        for modality, change in _dense_deltas(experts, position, device).items():
            generator = torch.Generator(device=device).manual_seed(dare_seed(arguments.seed, position, modality))
            kept = torch.rand(change.shape, generator=generator, device=device) >= arguments.p
            term = change * kept / (1 - arguments.p) * lambdas[modality]
            merged = term if merged is None else merged + term
        return merged

    return LanguagePart(delta=delta)


def lowrank_svd(b: Tensor, a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """U, S, V^T of B A from its factors (B: out x R, A: R x in), exactly: B = Q_B R_B, A^T = Q_A R_A, and the SVD
    of the small core R_B R_A^T."""
    q_b, r_b = torch.linalg.qr(b)
    q_a, r_a = torch.linalg.qr(a.T)
    u, s, vh = torch.linalg.svd(r_b @ r_a.T, full_matrices=False)
    return q_b @ u, s, vh @ q_a.T


def numerical_rank(s: Tensor, shape: tuple[int, int]) -> int:
    """The singular values above max(shape) x eps x the largest (numpy's matrix_rank rule, float32)."""
    if not len(s):
        return 0
    return int((s > s[0] * max(shape) * torch.finfo(torch.float32).eps).sum())


def _polar(matrix: Tensor) -> Tensor:
    """The orthonormal factor of a matrix (P Q^T of its SVD P D Q^T): the nearest matrix with orthonormal columns."""
    p, _, qh = torch.linalg.svd(matrix, full_matrices=False)
    return p @ qh


def tsv(experts, lambdas, arguments) -> LanguagePart:
    """Task singular vectors (TSV-Merge): per projection, each expert's delta truncated to its top `keep` fraction
    of singular directions (1/N by default), the left and the right directions of all experts stacked and each
    replaced by its orthonormal polar factor (decorrelated across experts), recombined with the kept singular
    values, times `alpha`. The result is low-rank: routed as one adapter."""
    keep = arguments.keep if arguments.keep is not None else 1.0 / len(experts)
    adapters = {}
    for position in _positions(experts):
        lefts, values, rights = [], [], []
        for expert in experts.values():
            u, s, vh = lowrank_svd(*_scaled(expert, position))
            kept = max(1, int(len(s) * keep))
            lefts.append(u[:, :kept])
            values.append(s[:kept])
            rights.append(vh[:kept])
        u, s, v = _polar(torch.cat(lefts, dim=1)), torch.cat(values), _polar(torch.cat(rights).T)
        adapters[position] = {"tsv": LoraWeights(v.T.contiguous(), u * s * arguments.alpha)}
    return LanguagePart(adapters, Route((("tsv", 1.0),)))


def iso_c(experts, lambdas, arguments) -> LanguagePart:
    """Iso-C: per projection, the sum of the experts' deltas with its singular spectrum (its nonzero part: the
    numerical rank of the sum) replaced by the spectrum's mean, times `alpha`. Low-rank: routed as one adapter."""
    adapters = {}
    for position in _positions(experts):
        factors = [_scaled(expert, position) for expert in experts.values()]
        b, a = torch.cat([f[0] for f in factors], dim=1), torch.cat([f[1] for f in factors])
        u, s, vh = lowrank_svd(b, a)
        rank = numerical_rank(s, (b.shape[0], a.shape[1]))
        flattened = u[:, :rank] * (s[:rank].mean() * arguments.alpha)
        adapters[position] = {"iso-c": LoraWeights(vh[:rank].contiguous(), flattened)}
    return LanguagePart(adapters, Route((("iso-c", 1.0),)))
