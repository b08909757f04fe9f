"""The CLIP image tower: selected hidden layer without CLS, loading local full-CLIP and vision-only directories."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel

from mcub.errors import CheckpointError
from mcub.models.modelcompose.encoders.clip import ClipImageTower, load_clip_image_tower

# openai/clip-vit-large-patch14-336 vision_config (reference/encoders.md section 5).
VIT_L_336 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
TINY = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 8,
    "hidden_act": "quick_gelu",
}
TINY_PATCHES = 16


@pytest.fixture(scope="module")
def reference() -> CLIPVisionModel:
    torch.manual_seed(0)
    return CLIPVisionModel(CLIPVisionConfig(**TINY)).eval()


@pytest.fixture(scope="module")
def vision_dir(reference: CLIPVisionModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("clip-vision")
    reference.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(2, 3, TINY["image_size"], TINY["image_size"], generator=torch.Generator().manual_seed(1))


def hidden_states(model: CLIPVisionModel, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return model(pixel_values, output_hidden_states=True).hidden_states


def test_features_are_the_second_to_last_layer_without_cls(
    reference: CLIPVisionModel, vision_dir: Path, pixels: torch.Tensor
) -> None:
    tower = load_clip_image_tower(vision_dir)
    with torch.no_grad():
        features = tower(pixels)
    expected = hidden_states(reference, pixels)[-2][:, 1:]
    assert features.shape == (2, TINY_PATCHES, TINY["hidden_size"])
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-6)
    assert not tower.training and not any(p.requires_grad for p in tower.parameters())


@pytest.mark.parametrize("select_layer", [0, 1, 3, -1, -4])
def test_every_select_layer(
    reference: CLIPVisionModel, vision_dir: Path, pixels: torch.Tensor, select_layer: int
) -> None:
    with torch.no_grad():
        features = load_clip_image_tower(vision_dir, select_layer=select_layer)(pixels)
    torch.testing.assert_close(features, hidden_states(reference, pixels)[select_layer][:, 1:], rtol=0, atol=1e-6)


def test_layers_past_the_selected_one_do_not_run(vision_dir: Path, pixels: torch.Tensor) -> None:
    tower = load_clip_image_tower(vision_dir)
    calls: list[int] = []
    for index, layer in enumerate(tower.clip.encoder.layers):
        layer.register_forward_hook(lambda *_, index=index: calls.append(index))
    with torch.no_grad():
        tower(pixels)
    assert calls == [0, 1]


def test_select_layer_out_of_range(reference: CLIPVisionModel) -> None:
    with pytest.raises(ValueError, match="select_layer -5 is out of range for 4 hidden states"):
        ClipImageTower(reference, select_layer=-5)


def test_inputs_cast_to_the_tower_dtype(reference: CLIPVisionModel, vision_dir: Path, pixels: torch.Tensor) -> None:
    tower = load_clip_image_tower(vision_dir, dtype=torch.bfloat16)
    with torch.no_grad():
        features = tower(pixels)
    expected = hidden_states(copy.deepcopy(reference).to(torch.bfloat16), pixels.bfloat16())[-2][:, 1:]
    assert features.dtype == torch.bfloat16
    torch.testing.assert_close(features, expected, rtol=0, atol=0)


def test_full_clip_directory_and_prefixed_bin(reference: CLIPVisionModel, pixels: torch.Tensor, tmp_path: Path) -> None:
    """A full CLIPModel export (text tower, projections, `vision_model.` prefix) and a transformers-4 style
    pytorch_model.bin with `vision_model.` keys and a saved `position_ids` give the same features."""
    text = {"hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2}
    full = CLIPModel(CLIPConfig(vision_config=reference.config.to_dict(), text_config=text))
    full.vision_model.load_state_dict(reference.state_dict())
    full.save_pretrained(tmp_path / "full")
    assert any(key.startswith("text_model.") for key in load_file(tmp_path / "full" / "model.safetensors"))

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    state = {f"vision_model.{key}": value for key, value in reference.state_dict().items()}
    state["vision_model.embeddings.position_ids"] = torch.arange(TINY_PATCHES + 1)[None]
    torch.save(state, legacy / "pytorch_model.bin")
    (legacy / "config.json").write_text(json.dumps({"model_type": "clip_vision_model", **TINY}), encoding="utf-8")

    expected = hidden_states(reference, pixels)[-2][:, 1:]
    for directory in (tmp_path / "full", legacy):
        with torch.no_grad():
            torch.testing.assert_close(load_clip_image_tower(directory)(pixels), expected, rtol=0, atol=1e-6)


def test_full_size_shapes_on_meta() -> None:
    with torch.device("meta"):
        tower = ClipImageTower(CLIPVisionModel(CLIPVisionConfig(**VIT_L_336)))
        features = tower(torch.empty(2, 3, 336, 336))
    assert features.shape == (2, 576, 1024)
    assert tower.clip.embeddings.position_embedding.weight.shape == (577, 1024)


def test_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "clip-vit-large-patch14-336"
    with pytest.raises(CheckpointError, match=f"{missing}: no such directory"):
        load_clip_image_tower(missing)


def test_missing_files(vision_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'config.json'}: not found"):
        load_clip_image_tower(tmp_path)
    (tmp_path / "config.json").write_bytes((vision_dir / "config.json").read_bytes())
    with pytest.raises(CheckpointError, match=f"{tmp_path}: no weights file"):
        load_clip_image_tower(tmp_path)


def test_incomplete_or_foreign_weights(vision_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_bytes((vision_dir / "config.json").read_bytes())
    weights = load_file(vision_dir / "model.safetensors")
    save_file(
        {k: v for k, v in weights.items() if k != "encoder.layers.1.mlp.fc1.weight"}, tmp_path / "model.safetensors"
    )
    with pytest.raises(CheckpointError, match="encoder.layers.1.mlp.fc1.weight"):
        load_clip_image_tower(tmp_path)
    save_file({**weights, "vision_model.extra.weight": torch.zeros(1)}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="extra.weight"):
        load_clip_image_tower(tmp_path)
    save_file({**weights, "pre_layrnorm.bias": torch.zeros(7)}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="size mismatch for pre_layrnorm.bias"):
        load_clip_image_tower(tmp_path)


def test_not_a_clip_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "siglip_vision_model"}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="model_type 'siglip_vision_model' is not one of clip"):
        load_clip_image_tower(tmp_path)
