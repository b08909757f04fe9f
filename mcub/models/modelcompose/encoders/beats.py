"""BEATs iter3+ AS2M audio encoder, key-compatible with `BEATs_iter3_plus_AS2M.pt`; inference only.

Fbank (B, frames, 128) -> 16x16 patches (time-major tokens) -> LayerNorm -> Linear 512->768 -> convolutional
position embedding -> 12 post-LN deep-norm layers with gated relative-position bias -> (B, 512, 768) for 1024 frames.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mcub.errors import CheckpointError

# cfg entries whose stored value must be exactly this: the only variant of BEATs this module implements.
FIXED_CFG: dict[str, Any] = {
    "activation_fn": "gelu",
    "layer_norm_first": False,
    "relative_position_embedding": True,
    "gru_rel_pos": True,
    "finetuned_model": False,
}
# cfg entries that only act in training (dropouts, layer drop, gradient decay, the fine-tuning head): not read.
TRAINING_CFG_KEYS = frozenset(
    {
        "dropout",
        "attention_dropout",
        "activation_dropout",
        "dropout_input",
        "encoder_layerdrop",
        "layer_wise_gradient_decay_ratio",
        "predictor_dropout",
        "predictor_class",
    }
)
# The original scales queries down by this factor, the max-subtracted scores back up, and gates with the query
# scaled back (an fp16 overflow guard); the same steps here keep fp16 rounding the same.
SCORE_SCALE = 32.0


@dataclass(frozen=True)
class BEATsConfig:
    """The architecture fields of the checkpoint's cfg; the defaults are those of BEATs_iter3_plus_AS2M.pt."""

    input_patch_size: int = 16
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    deep_norm: bool = True
    conv_pos: int = 128
    conv_pos_groups: int = 16
    num_buckets: int = 320
    max_distance: int = 800

    def __post_init__(self) -> None:
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise ValueError(f"encoder_embed_dim {self.encoder_embed_dim} is not divisible by the head count")
        if self.encoder_embed_dim % self.conv_pos_groups:
            raise ValueError(f"encoder_embed_dim {self.encoder_embed_dim} is not divisible by conv_pos_groups")

    @property
    def head_dim(self) -> int:
        return self.encoder_embed_dim // self.encoder_attention_heads

    @classmethod
    def from_checkpoint_cfg(cls, cfg: Any, source: str) -> BEATsConfig:
        """Validate the cfg dict stored in a checkpoint file (`source` names it in errors) and keep its fields."""
        if not isinstance(cfg, Mapping):
            raise CheckpointError(f"{source}: 'cfg' is a {type(cfg).__name__}, not a dict")
        defaults = {field.name: field.default for field in fields(cls)}
        problems = [f"missing {name!r}" for name in [*defaults, *FIXED_CFG] if name not in cfg]
        problems += [f"unknown {name!r}" for name in cfg if name not in {*defaults, *FIXED_CFG, *TRAINING_CFG_KEYS}]
        problems += [
            f"{name!r} is {cfg[name]!r}, only {value!r} is implemented"
            for name, value in FIXED_CFG.items()
            if name in cfg and (type(cfg[name]) is not type(value) or cfg[name] != value)
        ]
        problems += [
            f"{name!r} is {cfg[name]!r}, not a {type(default).__name__}"
            for name, default in defaults.items()
            if name in cfg and type(cfg[name]) is not type(default)
        ]
        if problems:
            raise CheckpointError(f"{source}: unusable 'cfg': " + "; ".join(problems))
        return cls(**{name: cfg[name] for name in defaults})


def relative_position_buckets(length: int, num_buckets: int, max_distance: int, device: torch.device) -> Tensor:
    """Bucket of key j for query i, (length, length): T5-style bidirectional log buckets of j - i."""
    offsets = torch.arange(length, device=device)
    relative = offsets[None, :] - offsets[:, None]
    half = num_buckets // 2
    exact = half // 2
    distance = relative.abs()
    scaled = torch.log(distance.clamp(min=exact).float() / exact) / math.log(max_distance / exact) * (half - exact)
    far = (exact + scaled.long()).clamp(max=half - 1)
    return (relative > 0).long() * half + torch.where(distance < exact, distance, far)


def token_padding_mask(frame_mask: Tensor, num_tokens: int) -> Tensor:
    """Per-token padding (B, tokens) from per-frame padding (B, frames), derived as the original does.

    Drop `frames % tokens` trailing frames; token i is padding iff every frame of the i-th consecutive group is.
    For 1024 frames that is frames 2i and 2i+1, which ignores the time-major patch layout: it agrees with the patches
    only for padding that starts on a multiple of 16 frames.
    """
    frames = frame_mask.shape[1] - frame_mask.shape[1] % num_tokens
    return frame_mask[:, :frames].bool().reshape(frame_mask.shape[0], num_tokens, -1).all(-1)


class _PositionalConv(nn.Module):
    """Grouped Conv1d with weight norm over the kernel axis (stored as weight_g, weight_v), cropped to length T."""

    def __init__(self, channels: int, kernel_size: int, groups: int):
        super().__init__()
        self.groups = groups
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel_size))
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        norm = torch.linalg.vector_norm(self.weight_v, dim=(0, 1), keepdim=True)
        weight = self.weight_v * (self.weight_g / norm)
        out = F.conv1d(x, weight, self.bias, padding=weight.shape[-1] // 2, groups=self.groups)
        return out[..., : x.shape[-1]]


class _SelfAttention(nn.Module):
    """Multi-head self-attention with the relative-position bias gated per query by `grep_linear` and `grep_a`."""

    def __init__(self, cfg: BEATsConfig, relative_attention_bias: nn.Embedding):
        super().__init__()
        dim, heads = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.grep_linear = nn.Linear(cfg.head_dim, 8)
        self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))
        self.relative_attention_bias = relative_attention_bias

    def _split_heads(self, x: Tensor) -> Tensor:
        """(B, T, C) -> (B, H, T, C / H)."""
        return x.view(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(self, x: Tensor, position_bias: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        """x (B, T, C), position_bias (H, T, T), key_padding_mask (B, T) with True at padding."""
        batch, length, dim = x.shape
        q, k, v = (self._split_heads(proj(x)) for proj in (self.q_proj, self.k_proj, self.v_proj))
        scaling = q.shape[-1] ** -0.5
        q_scaled = q * scaling / SCORE_SCALE
        scores = q_scaled @ k.transpose(-1, -2)
        scores = (scores - scores.amax(dim=-1, keepdim=True)) * SCORE_SCALE
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        gate_logits = self.grep_linear(q_scaled * SCORE_SCALE / scaling).view(batch, self.heads, length, 2, 4).sum(-1)
        gate_a, gate_b = torch.sigmoid(gate_logits).chunk(2, dim=-1)
        gate = gate_a * (gate_b * self.grep_a - 1.0) + 2.0
        attention = torch.softmax(scores + gate * position_bias, dim=-1)
        return self.out_proj((attention @ v).transpose(1, 2).reshape(batch, length, dim))


class _EncoderLayer(nn.Module):
    """Post-LN transformer layer with deep-norm residual scaling and an fp32 exact GELU."""

    def __init__(self, cfg: BEATsConfig, relative_attention_bias: nn.Embedding):
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.residual_scale = math.pow(2 * cfg.encoder_layers, 0.25) if cfg.deep_norm else 1.0
        self.self_attn = _SelfAttention(cfg, relative_attention_bias)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, position_bias: Tensor, padding_mask: Tensor | None) -> Tensor:
        x = self.self_attn_layer_norm(x * self.residual_scale + self.self_attn(x, position_bias, padding_mask))
        hidden = F.gelu(self.fc1(x).float()).type_as(x)
        return self.final_layer_norm(x * self.residual_scale + self.fc2(hidden))


class _Encoder(nn.Module):
    """Convolutional position embedding, LayerNorm, then the layers; one bias table shared by every layer."""

    def __init__(self, cfg: BEATsConfig):
        super().__init__()
        self.num_buckets, self.max_distance = cfg.num_buckets, cfg.max_distance
        self.pos_conv = nn.Sequential(
            _PositionalConv(cfg.encoder_embed_dim, cfg.conv_pos, cfg.conv_pos_groups), nn.GELU()
        )
        shared_bias = nn.Embedding(cfg.num_buckets, cfg.encoder_attention_heads)
        self.layers = nn.ModuleList(_EncoderLayer(cfg, shared_bias) for _ in range(cfg.encoder_layers))
        self.layer_norm = nn.LayerNorm(cfg.encoder_embed_dim)

    def forward(self, x: Tensor, padding_mask: Tensor | None) -> Tensor:
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[..., None], 0.0)
        x = self.layer_norm(x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2))
        buckets = relative_position_buckets(x.shape[1], self.num_buckets, self.max_distance, x.device)
        position_bias = self.layers[0].self_attn.relative_attention_bias(buckets).permute(2, 0, 1)
        for layer in self.layers:
            x = layer(x, position_bias, padding_mask)
        return x


class BEATs(nn.Module):
    """The BEATs backbone; `state_dict()` has the names and shapes of the original checkpoint's 'model'."""

    def __init__(self, cfg: BEATsConfig | None = None):
        super().__init__()
        cfg = BEATsConfig() if cfg is None else cfg
        self.cfg = cfg
        patch = cfg.input_patch_size
        self.patch_embedding = nn.Conv2d(1, cfg.embed_dim, patch, stride=patch, bias=cfg.conv_bias)
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.post_extract_proj = (
            nn.Linear(cfg.embed_dim, cfg.encoder_embed_dim) if cfg.embed_dim != cfg.encoder_embed_dim else nn.Identity()
        )
        self.encoder = _Encoder(cfg)

    def forward(self, fbank: Tensor, padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Features (B, tokens, encoder_embed_dim) of a normalised fbank (B, frames, mel bins), and the token padding.

        A (1024, 128) fbank gives 64 x 8 patches: 512 tokens, time-major. `padding_mask` (B, frames) marks padded
        frames (nonzero = padding). Padded tokens are zeroed before the position convolution and never attended to;
        their own outputs are computed and returned, as the original does.
        """
        if padding_mask is not None and padding_mask.shape != fbank.shape[:2]:
            raise ValueError(f"padding_mask {tuple(padding_mask.shape)} does not match fbank {tuple(fbank.shape)}")
        patches = self.patch_embedding(fbank.unsqueeze(1))
        tokens = self.layer_norm(patches.flatten(2).transpose(1, 2))
        token_mask = None
        if padding_mask is not None:
            token_mask = token_padding_mask(padding_mask, tokens.shape[1])
            empty = token_mask.all(-1).nonzero().flatten().tolist()
            if empty:
                raise ValueError(f"batch items {empty} are padding only (the original returns NaN for them)")
        return self.encoder(self.post_extract_proj(tokens), token_mask), token_mask


def _state_dict_problems(model: BEATs, state: Mapping[str, Any]) -> list[str]:
    """Every missing, unexpected, non-tensor or mis-shaped key, and unequal copies of the shared bias table."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    problems = [f"missing keys ({len(missing)}): {', '.join(missing)}"] if missing else []
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
    present = [key for key in expected if key in state]
    problems += [f"{key} is a {type(state[key]).__name__}" for key in present if not isinstance(state[key], Tensor)]
    problems += [
        f"{key} has shape {tuple(state[key].shape)}, expected {tuple(expected[key].shape)}"
        for key in present
        if isinstance(state[key], Tensor) and state[key].shape != expected[key].shape
    ]
    if problems:
        return problems
    tables = [key for key in expected if key.endswith("self_attn.relative_attention_bias.weight")]
    differing = [key for key in tables[1:] if not torch.equal(state[key], state[tables[0]])]
    if differing:
        return [f"the shared relative position bias differs from {tables[0]} in {', '.join(differing)}"]
    return []


def _load_failure(error: Exception) -> str:
    """The cause in a torch.load error, without torch's advice to load unsafely."""
    detail = str(error).partition("WeightsUnpickler error:")[2].strip().split("\n")[0].split(". Please")[0]
    return detail or str(error) or "empty or truncated file"


def load_beats(path: str | Path) -> BEATs:
    """The encoder of an original BEATs checkpoint (a dict with 'cfg' and 'model'), on CPU in eval mode, frozen.

    `torch.load(weights_only=True)` needs no allow-list: the original file holds only dicts, primitives and tensors.
    """
    source = str(path)
    if not Path(path).is_file():
        raise CheckpointError(f"{source}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        reason = f"not readable by torch.load(weights_only=True): {_load_failure(error)}"
        raise CheckpointError(f"{source}: {reason}") from None
    if not isinstance(checkpoint, Mapping) or "cfg" not in checkpoint or "model" not in checkpoint:
        found = type(checkpoint).__name__
        if isinstance(checkpoint, Mapping):
            found = f"{found} of {len(checkpoint)} entries starting {list(checkpoint)[:3]}"
        reason = f"expected a dict with 'cfg' and 'model' (the original layout), found a {found}"
        raise CheckpointError(f"{source}: {reason}")
    model = BEATs(BEATsConfig.from_checkpoint_cfg(checkpoint["cfg"], source))
    state = checkpoint["model"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source}: 'model' is a {type(state).__name__}, not a state dict")
    problems = _state_dict_problems(model, state)
    if problems:
        raise CheckpointError(f"{source}: the state dict does not match BEATs: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)
