"""Point-BERT v1.2 as PointLLM configures it: (B, N, 6) xyz+rgb points -> (B, 513, 384) tokens, CLS first.

Key-compatible with `point_bert_v1.2.pt` (flat or PointLLM's nested layout, see `load_pointbert`).
One deliberate difference from the reference: farthest-point sampling starts from a fixed point (index 0,
or an index drawn from `seed`) instead of a random one, so the same cloud always gives the same tokens.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mcub.errors import CheckpointError
from mcub.models.modelcompose.triton_support import on_triton_device

NESTED_PREFIX = "module.point_encoder."
"""Prefix of the encoder's keys under `state_dict` in PointLLM's (ULIP-style) checkpoint."""


@dataclass(frozen=True)
class PointBERTConfig:
    """The `model` section of PointLLM's `PointTransformer_8192point_2layer.yaml`, with `point_dims = 6`."""

    trans_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    group_size: int = 32
    num_group: int = 512
    encoder_dims: int = 256
    point_dims: int = 6

    def __post_init__(self) -> None:
        if self.trans_dim % self.num_heads:
            raise ValueError(f"trans_dim {self.trans_dim} is not divisible by num_heads {self.num_heads}")
        if self.point_dims < 3:
            raise ValueError(f"point_dims {self.point_dims} < 3: every point needs xyz")


def fps_start_index(num_points: int, seed: int | None) -> int:
    """The index every row's farthest-point sampling starts from: 0, or one drawn from a CPU generator seeded with
    `seed` (the same for every row, so a row's picks do not depend on the rest of the batch)."""
    if seed is None:
        return 0
    return int(torch.randint(num_points, (), generator=torch.Generator().manual_seed(seed)))


def farthest_point_sample(xyz: Tensor, count: int, seed: int | None = None) -> Tensor:
    """Indices (B, count) of `count` farthest-point picks from xyz (B, N, 3), in selection order.

    The reference starts every row at a random index; here every row starts at `fps_start_index(N, seed)`. Ties
    go to the lowest index. As in the reference, squared distances are computed in the input dtype and the
    running minimum is kept in at least float32. CUDA clouds the Triton kernel takes (`fps_kernel.supports`:
    float32, float16 or bfloat16, at most `fps_kernel.MAX_POINTS` points) run in one launch with the same picks
    as `loop_farthest_point_sample` on that device; the rest (CPU, float64, larger clouds, no triton) run the loop.
    """
    if count < 1:
        raise ValueError(f"farthest-point sampling needs a count of at least 1, got {count}")
    start = fps_start_index(xyz.shape[1], seed)
    if on_triton_device(xyz):
        from mcub.models.modelcompose.encoders import fps_kernel

        if fps_kernel.supports(xyz):
            return fps_kernel.kernel_farthest_point_sample(xyz, count, start)
    return loop_farthest_point_sample(xyz, count, start)


def loop_farthest_point_sample(xyz: Tensor, count: int, start: int) -> Tensor:
    """The reference's loop, every row starting at `start`: per step six small kernels (bound by issuing them on a
    GPU), with no host synchronisation; the squares are summed by ATen's reduction, in its order on the device."""
    batch, num_points, _ = xyz.shape
    current = torch.full((batch, 1, 1), start, dtype=torch.long, device=xyz.device)
    running_dtype = torch.promote_types(xyz.dtype, torch.float32)
    running = torch.full((batch, num_points), 1e10, dtype=running_dtype, device=xyz.device)
    picks = []
    for _ in range(count):
        picks.append(current)
        centre = xyz.gather(1, current.expand(-1, -1, 3))
        torch.minimum(running, (xyz - centre).square().sum(-1), out=running)
        current = running.argmax(-1).view(batch, 1, 1)
    return torch.cat(picks, dim=1).view(batch, count)


def knn_indices(centres: Tensor, xyz: Tensor, k: int) -> Tensor:
    """Indices (B, G, k) of the k points of xyz (B, N, 3) nearest each centre (B, G, 3), nearest first.

    Squared distances are expanded as -2 c.x + |c|^2 + |x|^2 in the input dtype, as in the reference.
    """
    distance = -2 * centres @ xyz.transpose(1, 2)
    distance = distance + centres.square().sum(-1, keepdim=True) + xyz.square().sum(-1).unsqueeze(1)
    return distance.topk(k, dim=-1, largest=False, sorted=True).indices


def gather_points(values: Tensor, indices: Tensor) -> Tensor:
    """values (B, N, C) at indices (B, ...) -> (B, ..., C)."""
    flat = indices.reshape(indices.shape[0], -1, 1).expand(-1, -1, values.shape[-1])
    return values.gather(1, flat).reshape(*indices.shape, values.shape[-1])


def group_points(points: Tensor, num_group: int, group_size: int, seed: int | None = None) -> tuple[Tensor, Tensor]:
    """Neighbourhoods (B, G, K, C) and centres (B, G, 3): xyz relative to the centre, other channels raw."""
    xyz = points[..., :3]
    centres = gather_points(xyz, farthest_point_sample(xyz, num_group, seed))
    neighbours = gather_points(points, knn_indices(centres, xyz, group_size))
    relative = neighbours[..., :3] - centres.unsqueeze(2)
    return torch.cat([relative, neighbours[..., 3:]], dim=-1), centres


class MiniPointNet(nn.Module):
    """Per-group PointNet: (B, G, K, C) neighbourhoods -> (B, G, encoder_dims)."""

    def __init__(self, point_dims: int, encoder_dims: int):
        super().__init__()
        self.first_conv = nn.Sequential(
            nn.Conv1d(point_dims, 128, 1), nn.BatchNorm1d(128), nn.ReLU(), nn.Conv1d(128, 256, 1)
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(), nn.Conv1d(512, encoder_dims, 1)
        )

    def forward(self, groups: Tensor) -> Tensor:
        batch, num_group, group_size, channels = groups.shape
        local = self.first_conv(groups.reshape(batch * num_group, group_size, channels).transpose(1, 2))
        pooled = local.amax(dim=2, keepdim=True).expand(-1, -1, group_size)
        features = self.second_conv(torch.cat([pooled, local], dim=1)).amax(dim=2)
        return features.reshape(batch, num_group, -1)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a bias-free fused qkv projection, split [q | k | v] x heads."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, dim))


class FeedForward(nn.Module):
    """fc1, exact GELU, fc2 (hidden width 4 x dim)."""

    def __init__(self, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerStack(nn.Module):
    """The blocks, with the positional embedding re-added before every one (the checkpoint's `blocks.blocks.N`)."""

    def __init__(self, dim: int, depth: int, num_heads: int):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, num_heads) for _ in range(depth))

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x + pos)
        return x


class PointBERT(nn.Module):
    """Point-BERT v1.2 encoder: (B, N, point_dims) -> (B, num_group + 1, trans_dim), CLS token first.

    Group tokens follow farthest-point-sampling order. Call `.eval()` before use (batch norm must use its
    running statistics); `load_pointbert` returns the module in eval mode.
    """

    def __init__(self, config: PointBERTConfig | None = None):
        super().__init__()
        self.config = config or PointBERTConfig()
        dim = self.config.trans_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.cls_pos = nn.Parameter(torch.randn(1, 1, dim))
        self.encoder = MiniPointNet(self.config.point_dims, self.config.encoder_dims)
        self.reduce_dim = nn.Linear(self.config.encoder_dims, dim)
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, dim))
        self.blocks = TransformerStack(dim, self.config.depth, self.config.num_heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, points: Tensor, seed: int | None = None) -> Tensor:
        """Tokens for points (B, N, point_dims); `seed` picks the FPS start index (None: index 0)."""
        self._check_points(points)
        groups, centres = group_points(points, self.config.num_group, self.config.group_size, seed)
        tokens = self.reduce_dim(self.encoder(groups))
        batch = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1)
        pos = torch.cat([self.cls_pos.expand(batch, -1, -1), self.pos_embed(centres)], dim=1)
        return self.norm(self.blocks(x, pos))

    def _check_points(self, points: Tensor) -> None:
        config = self.config
        if points.ndim != 3 or points.shape[-1] != config.point_dims:
            raise ValueError(
                f"Point-BERT expects points of shape (B, N, {config.point_dims}) "
                f"({'xyz+rgb' if config.point_dims == 6 else 'xyz + features'}), got {tuple(points.shape)}"
            )
        needed = max(config.num_group, config.group_size)
        if points.shape[1] < needed:
            raise ValueError(
                f"Point-BERT needs at least {needed} points per cloud ({config.num_group} group centres "
                f"of {config.group_size} neighbours each), got {points.shape[1]}"
            )


def _encoder_state(checkpoint: object, path: str) -> tuple[dict[str, Tensor], str]:
    """The bare encoder keys of a loaded checkpoint and the layout they were read from.

    Flat: the whole dict, as ModelCompose loads it. Nested (PointLLM / ULIP): the `module.point_encoder.*`
    keys of `checkpoint['state_dict']` with the prefix stripped, every other key ignored, as PointLLM loads it.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"{path}: a Point-BERT checkpoint must be a dict of tensors, got {type(checkpoint).__name__}"
        )
    nested = checkpoint.get("state_dict")
    if isinstance(nested, Mapping):
        state = {key[len(NESTED_PREFIX) :]: value for key, value in nested.items() if key.startswith(NESTED_PREFIX)}
        return state, f"nested layout, {len(state)} keys under state_dict[{NESTED_PREFIX!r}...]"
    return dict(checkpoint), f"flat layout, {len(checkpoint)} keys"


def _shape(value: object) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__


def load_pointbert(path: str | Path, config: PointBERTConfig | None = None) -> PointBERT:
    """The encoder with the weights of `path` (flat or nested layout), loaded strictly, in eval mode, frozen."""
    path = str(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: not loadable with weights_only=True (it holds more than tensors): {error}"
        ) from None
    state, layout = _encoder_state(checkpoint, path)
    model = PointBERT(config)
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    mismatched = sorted(
        f"{key} {_shape(state[key])} != {_shape(expected[key])}"
        for key in expected.keys() & state.keys()
        if _shape(state[key]) != _shape(expected[key])
    )
    if missing or unexpected or mismatched:
        problems = [
            f"{label} ({len(keys)}): {', '.join(keys)}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched))
            if keys
        ]
        raise CheckpointError(
            f"{path}: not a Point-BERT checkpoint for {model.config} ({layout}); " + "; ".join(problems)
        )
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)
