"""The LanguageBind_Video_merge vision tower: CLIP ViT layers with LanguageBind's temporal attention.

Every frame runs as an image through the CLIP vision embeddings; before each CLIP layer, each token is mixed
across the frames of its video (temporal embedding, then pre-LN temporal attention). Key names equal the HF
directory's vision keys minus the `vision_model.` prefix (reference/encoders.md section 3)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from transformers import CLIPVisionConfig
from transformers.models.clip.modeling_clip import CLIPAttention, CLIPEncoderLayer, CLIPVisionEmbeddings

from mcub.errors import CheckpointError
from mcub.models.modelcompose.weights import find_weights_file, read_json_object, read_state_dict

SELECT_LAYER = -2
VISION_PREFIX = "vision_model."
# The rest of a LanguageBindVideo export: the text tower, both projections, the logit scale, and the
# `position_ids` buffer some transformers versions wrote.
UNUSED_PREFIXES = ("text_model.",)
UNUSED_KEYS = frozenset(
    {"visual_projection.weight", "text_projection.weight", "logit_scale", "vision_model.embeddings.position_ids"}
)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
AttnImplementation = Literal["eager", "sdpa"]


@dataclass(frozen=True)
class LanguageBindVideoConfig:
    """The `vision_config` fields the tower uses. Defaults are those of the original LanguageBind
    `CLIPVisionConfig` class, which fills the fields a config.json omits. The other fields of the file
    (lora_*, force_patch_dropout, projection_dim, attention_dropout, video_decode_backend) are inert at eval."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    add_time_attn: bool = False
    num_frames: int = 1

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LanguageBindVideoConfig:
        return cls(**{field.name: values[field.name] for field in fields(cls) if field.name in values})

    @property
    def tokens_per_frame(self) -> int:
        """Patches plus the CLS token."""
        return (self.image_size // self.patch_size) ** 2 + 1

    def clip_config(self, attn_implementation: AttnImplementation = "sdpa") -> CLIPVisionConfig:
        """The transformers config of the spatial CLIP pieces."""
        return CLIPVisionConfig(
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_channels=self.num_channels,
            image_size=self.image_size,
            patch_size=self.patch_size,
            hidden_act=self.hidden_act,
            layer_norm_eps=self.layer_norm_eps,
            attn_implementation=attn_implementation,
        )


class LanguageBindVideoLayer(CLIPEncoderLayer):
    """A CLIP encoder layer; with `num_frames` set, each token is first mixed across its video's frames."""

    def __init__(self, clip: CLIPVisionConfig, num_frames: int | None):
        super().__init__(clip)
        self.time_attn = num_frames is not None
        if self.time_attn:
            self.temporal_embedding = nn.Parameter(
                torch.randn(1, num_frames, clip.hidden_size) * clip.hidden_size**-0.5
            )
            self.temporal_attn = CLIPAttention(clip)
            self.temporal_layer_norm1 = nn.LayerNorm(clip.hidden_size, eps=clip.layer_norm_eps)

    def forward(self, hidden_states: Tensor, frames: int) -> Tensor:
        """(videos * frames, tokens, hidden), video-major, to the same shape."""
        if self.time_attn:
            hidden_states = self._mix_frames(hidden_states, frames)
        return super().forward(hidden_states, None)

    def _mix_frames(self, hidden_states: Tensor, frames: int) -> Tensor:
        videos = hidden_states.unflatten(0, (-1, frames))  # (B, T, N, D)
        if frames > 1:  # as the original, a single frame gets no temporal embedding
            videos = videos + self.temporal_embedding[0, :frames, None]
        per_token = videos.transpose(1, 2).flatten(0, 1)  # (B * N, T, D)
        mixed, _ = self.temporal_attn(self.temporal_layer_norm1(per_token))
        videos = videos + mixed.unflatten(0, (videos.shape[0], -1)).transpose(1, 2)
        return videos.flatten(0, 1)


class LanguageBindVideoTower(nn.Module):
    """The vision tower of LanguageBind_Video_merge (`LanguageBindVideo.vision_model`), used as ModelCompose does."""

    def __init__(self, config: LanguageBindVideoConfig, attn_implementation: AttnImplementation = "sdpa"):
        super().__init__()
        self.config = config
        clip = config.clip_config(attn_implementation)
        num_frames = config.num_frames if config.add_time_attn else None
        self.embeddings = CLIPVisionEmbeddings(clip)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        layers = [LanguageBindVideoLayer(clip, num_frames) for _ in range(config.num_hidden_layers)]
        self.encoder = nn.ModuleDict({"layers": nn.ModuleList(layers)})
        # In the checkpoint and kept so it loads key for key; ModelCompose never applies it.
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values: Tensor, select_layer: int = SELECT_LAYER) -> Tensor:
        """Videos (B, 3, T, H, W) to the hidden states of `select_layer`, all tokens of every frame kept,
        frame-major: (B, T * tokens_per_frame, hidden), in the tower's dtype.

        `select_layer` indexes the num_hidden_layers + 1 hidden states (0: after `pre_layrnorm`); only the
        layers it needs are run. With temporal attention, T is `num_frames` or 1 (a still image, which the
        original runs without temporal embedding but through the temporal attention). Frames mix only within
        their own video; the original, whose frame count is fixed by the config, mixes stills across the
        batch once it holds `num_frames` or more of them (its eval runs one sample per batch)."""
        if pixel_values.dim() != 5:
            raise ValueError(f"pixel_values must be (B, 3, T, H, W); got shape {tuple(pixel_values.shape)}")
        batch, _, frames = pixel_values.shape[:3]
        if self.config.add_time_attn and frames not in (1, self.config.num_frames):
            raise ValueError(f"the temporal layers take {self.config.num_frames} frames or 1; got {frames}")
        depth = self._depth(select_layer)
        hidden_states = self.pre_layrnorm(self.embeddings(pixel_values.transpose(1, 2).flatten(0, 1)))
        for layer in self.encoder["layers"][:depth]:
            hidden_states = layer(hidden_states, frames)
        return hidden_states.reshape(batch, -1, hidden_states.shape[-1])

    def _depth(self, select_layer: int) -> int:
        states = self.config.num_hidden_layers + 1
        if not -states <= select_layer < states:
            raise ValueError(f"select_layer {select_layer} is out of range for {states} hidden states")
        return select_layer % states


def read_languagebind_video_config(directory: str | Path) -> LanguageBindVideoConfig:
    """The `vision_config` part of `directory/config.json`."""
    path = Path(directory) / "config.json"
    data = read_json_object(path, "point the video encoder to a local LanguageBind_Video_merge copy")
    vision = data.get("vision_config")
    if not isinstance(vision, dict):
        raise CheckpointError(f"{path}: no `vision_config` object (not a LanguageBindVideo config)")
    return LanguageBindVideoConfig.from_dict(vision)


def load_languagebind_video(
    directory: str | Path, *, dtype: torch.dtype = torch.float32, attn_implementation: AttnImplementation = "sdpa"
) -> LanguageBindVideoTower:
    """The tower of a local LanguageBind_Video_merge directory (config.json and model.safetensors or
    pytorch_model.bin), every vision key loaded, in eval mode, frozen, on the CPU."""
    config = read_languagebind_video_config(directory)
    path = find_weights_file(Path(directory), WEIGHT_FILES)
    with torch.device("meta"):
        tower = LanguageBindVideoTower(config, attn_implementation)
    tower.load_state_dict(_vision_state(read_state_dict(path), tower, path), strict=True, assign=True)
    # A non-persistent buffer, so neither in the file nor materialised by the load.
    tower.embeddings.position_ids = torch.arange(tower.embeddings.num_positions).expand((1, -1))
    return tower.to(dtype).eval().requires_grad_(False)


def _vision_state(weights: Mapping[str, Tensor], tower: LanguageBindVideoTower, path: Path) -> dict[str, Tensor]:
    """The tower's tensors from a whole-model file; the text side is skipped by name, anything else is an error."""
    expected = {key: value.shape for key, value in tower.state_dict().items()}
    state: dict[str, Tensor] = {}
    unexpected: list[str] = []
    for key, tensor in weights.items():
        if key in UNUSED_KEYS or key.startswith(UNUSED_PREFIXES):
            continue
        name = key.removeprefix(VISION_PREFIX)
        if key.startswith(VISION_PREFIX) and name in expected:
            state[name] = tensor
        else:
            unexpected.append(key)
    missing = [VISION_PREFIX + key for key in expected if key not in state]
    mismatched = [
        f"{VISION_PREFIX}{key} {tuple(tensor.shape)} (expected {tuple(expected[key])})"
        for key, tensor in state.items()
        if tensor.shape != expected[key]
    ]
    problems = [
        f"{label}: {', '.join(keys)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched))
        if keys
    ]
    if problems:
        raise CheckpointError(f"{path}: does not match the LanguageBind video tower; " + "; ".join(problems))
    return state
