"""The CLIP ViT image tower (reference/encoders.md section 5): transformers' `CLIPVisionModel` read from a local
HF directory, giving the patch features of one hidden layer as ModelCompose feeds them to the image projector."""

from __future__ import annotations

from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from torch import Tensor, nn
from transformers import CLIPConfig, CLIPVisionConfig, CLIPVisionModel

from mcub.errors import CheckpointError
from mcub.models.modelcompose.weights import find_weights_file, read_json_object, read_state_dict

SELECT_LAYER = -2
VISION_PREFIX = "vision_model."
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# The rest of a full CLIPModel export; `position_ids` buffers, which older transformers versions saved, end in
# `position_ids` and are skipped too.
UNUSED_PREFIXES = ("text_model.",)
UNUSED_KEYS = frozenset({"visual_projection.weight", "text_projection.weight", "logit_scale"})
CONFIG_TYPES = ("clip", "clip_vision_model")


class ClipImageTower(nn.Module):
    """A `CLIPVisionModel` giving `hidden_states[select_layer]` without the CLS token (the 'patch' features)."""

    def __init__(self, clip: CLIPVisionModel, select_layer: int = SELECT_LAYER):
        super().__init__()
        states = clip.config.num_hidden_layers + 1
        if not -states <= select_layer < states:
            raise ValueError(f"select_layer {select_layer} is out of range for {states} hidden states")
        self.clip = clip
        self.select_layer = select_layer
        self.depth = select_layer % states

    def forward(self, pixel_values: Tensor) -> Tensor:
        """Images (B, 3, H, W), cast to the tower's dtype, to (B, num_patches, hidden) in that dtype:
        (B, 576, 1024) for ViT-L/14 at 336 px. Hidden state 0 is the `pre_layrnorm` output; only the layers up to
        `select_layer` run, and `post_layernorm` is never applied."""
        if pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must be (B, 3, H, W); got shape {tuple(pixel_values.shape)}")
        clip = self.clip
        hidden_states = clip.pre_layrnorm(clip.embeddings(pixel_values.to(clip.dtype)))
        for layer in clip.encoder.layers[: self.depth]:
            hidden_states = layer(hidden_states, None)
        return hidden_states[:, 1:]


def load_clip_image_tower(
    directory: str | Path, select_layer: int = SELECT_LAYER, dtype: torch.dtype = torch.float32
) -> ClipImageTower:
    """The tower of a local HF directory holding a full `CLIPModel` or a `CLIPVisionModel` (config.json and
    model.safetensors or pytorch_model.bin), every vision key loaded, in eval mode, frozen, on the CPU."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such directory; point the image encoder to a local CLIP copy")
    config = _read_vision_config(directory)
    path = find_weights_file(directory, WEIGHT_FILES)
    with torch.device("meta"):
        clip = CLIPVisionModel(config)
    try:
        clip.load_state_dict(_vision_state(read_state_dict(path)), strict=True, assign=True)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: does not match the CLIP vision tower ({error})") from None
    # A non-persistent buffer, so neither in the file nor materialised by the load.
    clip.embeddings.position_ids = torch.arange(clip.embeddings.num_positions).expand((1, -1))
    return ClipImageTower(clip, select_layer).to(dtype).eval().requires_grad_(False)


def _read_vision_config(directory: Path) -> CLIPVisionConfig:
    path = directory / "config.json"
    data = read_json_object(path, "not a HF CLIP directory")
    model_type = data.get("model_type")
    if model_type not in CONFIG_TYPES:
        raise CheckpointError(f"{path}: model_type {model_type!r} is not one of {', '.join(CONFIG_TYPES)}")
    try:
        # CLIPConfig also applies the `vision_config_dict` overrides of early exports.
        return CLIPConfig.from_dict(data).vision_config if model_type == "clip" else CLIPVisionConfig.from_dict(data)
    except (ValueError, TypeError, StrictDataclassError) as error:
        raise CheckpointError(f"{path}: invalid CLIP config ({error})") from None


def _vision_state(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """The vision tensors, named as in `CLIPVisionModel`: a `vision_model.` prefix (full CLIPModel, or a
    CLIPVisionModel saved by transformers 4) is removed, the text side and projections are skipped."""
    return {
        key.removeprefix(VISION_PREFIX): tensor
        for key, tensor in weights.items()
        if not (key in UNUSED_KEYS or key.startswith(UNUSED_PREFIXES) or key.endswith("position_ids"))
    }
