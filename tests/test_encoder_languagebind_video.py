"""The LanguageBind_Video_merge tower: checkpoint keys, the temporal forward, loading a whole-model export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPVisionModel

from mcub.errors import CheckpointError
from mcub.models.modelcompose.encoders.languagebind_video import (
    LanguageBindVideoConfig,
    LanguageBindVideoTower,
    load_languagebind_video,
    read_languagebind_video_config,
)

# The vision_config of LanguageBind_Video_merge (reference/encoders.md 3.1), as its config.json stores it.
MERGE_VISION_CONFIG = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "num_channels": 3,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "add_time_attn": True,
    "num_frames": 8,
    "projection_dim": 768,
    "lora_r": 2,
    "force_patch_dropout": 0.0,
    "video_decode_backend": "decord",
}
# The checkpoint's vision keys and shapes (reference/encoders.md 3.2).
MERGE_TOP_KEYS = {
    "vision_model.embeddings.class_embedding": (1024,),
    "vision_model.embeddings.patch_embedding.weight": (1024, 3, 14, 14),
    "vision_model.embeddings.position_embedding.weight": (257, 1024),
    "vision_model.pre_layrnorm.weight": (1024,),
    "vision_model.pre_layrnorm.bias": (1024,),
    "vision_model.post_layernorm.weight": (1024,),
    "vision_model.post_layernorm.bias": (1024,),
}
MERGE_LAYER_KEYS = {
    "temporal_embedding": (1, 8, 1024),
    "self_attn.q_proj.weight": (1024, 1024),
    "self_attn.q_proj.bias": (1024,),
    "self_attn.k_proj.weight": (1024, 1024),
    "self_attn.k_proj.bias": (1024,),
    "self_attn.v_proj.weight": (1024, 1024),
    "self_attn.v_proj.bias": (1024,),
    "self_attn.out_proj.weight": (1024, 1024),
    "self_attn.out_proj.bias": (1024,),
    "layer_norm1.weight": (1024,),
    "layer_norm1.bias": (1024,),
    "mlp.fc1.weight": (4096, 1024),
    "mlp.fc1.bias": (4096,),
    "mlp.fc2.weight": (1024, 4096),
    "mlp.fc2.bias": (1024,),
    "layer_norm2.weight": (1024,),
    "layer_norm2.bias": (1024,),
    "temporal_attn.q_proj.weight": (1024, 1024),
    "temporal_attn.q_proj.bias": (1024,),
    "temporal_attn.k_proj.weight": (1024, 1024),
    "temporal_attn.k_proj.bias": (1024,),
    "temporal_attn.v_proj.weight": (1024, 1024),
    "temporal_attn.v_proj.bias": (1024,),
    "temporal_attn.out_proj.weight": (1024, 1024),
    "temporal_attn.out_proj.bias": (1024,),
    "temporal_layer_norm1.weight": (1024,),
    "temporal_layer_norm1.bias": (1024,),
}
# Keys of a LanguageBindVideo export the tower never loads.
TEXT_SIDE = {
    "text_model.embeddings.token_embedding.weight": (50, 16),
    "text_model.embeddings.position_ids": (1, 7),
    "text_model.final_layer_norm.weight": (16,),
    "visual_projection.weight": (8, 32),
    "text_projection.weight": (8, 16),
    "logit_scale": (),
    "vision_model.embeddings.position_ids": (1, 17),
}
TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 8,
    "hidden_act": "gelu",
    "add_time_attn": True,
    "num_frames": 4,
}
TOKENS = 17  # (32 / 8) ** 2 + 1


def tiny_tower(seed: int = 0, attn: str = "eager", **overrides) -> LanguageBindVideoTower:
    """A tiny tower with every parameter drawn from a seeded normal (so the temporal parts all matter)."""
    tower = LanguageBindVideoTower(LanguageBindVideoConfig.from_dict({**TINY, **overrides}), attn).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in tower.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator) * 0.2
            parameter.copy_(noise + 1.0 if "norm" in name and name.endswith("weight") else noise)
    return tower


def videos(batch: int, frames: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, frames, 32, 32, generator=torch.Generator().manual_seed(seed))


def reference_states(tower: LanguageBindVideoTower, pixels: torch.Tensor, depth: int) -> torch.Tensor:
    """The temporal step written as plain loops over videos and tokens: (B, T, N, D) after `depth` layers."""
    batch, _, frames = pixels.shape[:3]
    images = torch.stack([pixels[b, :, t] for b in range(batch) for t in range(frames)])
    states = tower.pre_layrnorm(tower.embeddings(images)).reshape(batch, frames, TOKENS, -1)
    for layer in tower.encoder["layers"][:depth]:
        if frames > 1:
            states = states + torch.stack([layer.temporal_embedding[0, t] for t in range(frames)])[None, :, None]
        mixed = states.clone()
        for b in range(batch):
            for n in range(TOKENS):
                mixed[b, :, n] += attend(layer.temporal_attn, layer.temporal_layer_norm1(states[b, :, n]))
        spatial = super(type(layer), layer).forward(mixed.reshape(batch * frames, TOKENS, -1), None)
        states = spatial.reshape(batch, frames, TOKENS, -1)
    return states


def attend(attention: torch.nn.Module, sequence: torch.Tensor) -> torch.Tensor:
    """Multi-head self-attention of one (T, D) sequence, spelled out."""
    heads = attention.num_heads
    q, k, v = (
        proj(sequence).reshape(len(sequence), heads, -1).transpose(0, 1)
        for proj in (attention.q_proj, attention.k_proj, attention.v_proj)
    )
    weights = torch.softmax(q @ k.transpose(1, 2) * attention.head_dim**-0.5, dim=-1)
    return attention.out_proj((weights @ v).transpose(0, 1).reshape(len(sequence), -1))


def test_full_size_keys_and_shapes_equal_the_checkpoint():
    with torch.device("meta"):
        tower = LanguageBindVideoTower(LanguageBindVideoConfig.from_dict(MERGE_VISION_CONFIG))
    expected = dict(MERGE_TOP_KEYS)
    for index in range(24):
        expected.update(
            {f"vision_model.encoder.layers.{index}.{key}": shape for key, shape in MERGE_LAYER_KEYS.items()}
        )
    state = tower.state_dict()
    assert {"vision_model." + key: tuple(value.shape) for key, value in state.items()} == expected
    assert len(state) == 655
    assert sum(value.numel() for value in state.values()) == 404_187_136
    assert tower.config.tokens_per_frame == 257


def test_forward_shape_and_layer_selection():
    tower = tiny_tower()
    pixels = videos(2)
    with torch.no_grad():
        out = tower(pixels)
        first = tower(pixels, select_layer=0)
        last = tower(pixels, select_layer=-1)
        embedded = tower.pre_layrnorm(tower.embeddings(pixels.transpose(1, 2).flatten(0, 1)))
    assert out.shape == (2, 4 * TOKENS, 32)
    assert torch.equal(first, embedded.reshape(2, 4 * TOKENS, 32))
    assert torch.equal(tower(pixels, select_layer=2), out)
    assert not torch.allclose(last, out)
    with pytest.raises(ValueError, match="out of range"):
        tower(pixels, select_layer=-5)


@pytest.mark.parametrize("frames", [4, 1])
def test_matches_the_temporal_step_spelled_out(frames):
    tower = tiny_tower()
    pixels = videos(2, frames)
    with torch.no_grad():
        got = tower(pixels)
        want = reference_states(tower, pixels, depth=2)
    assert torch.allclose(got, want.reshape(2, frames * TOKENS, 32), atol=1e-5)


def test_frames_are_mixed_only_within_a_video():
    tower = tiny_tower()
    pixels = videos(2)
    changed = pixels.clone()
    changed[0, :, 3] += 1.0
    with torch.no_grad():
        base, moved = tower(pixels).reshape(2, 4, TOKENS, 32), tower(changed).reshape(2, 4, TOKENS, 32)
    assert (base[0, 0] - moved[0, 0]).abs().max() > 1e-3  # frame 3 reaches frame 0 of its own video
    assert torch.equal(base[1], moved[1])


def test_single_frame_skips_the_temporal_embedding_but_not_the_temporal_attention():
    tower = tiny_tower()
    still = videos(2, frames=1)
    with torch.no_grad():
        before = tower(still)
        for layer in tower.encoder["layers"]:
            layer.temporal_embedding.add_(5.0)
        assert torch.equal(tower(still), before)
        for layer in tower.encoder["layers"]:
            layer.temporal_attn.out_proj.bias.add_(1.0)
        assert (tower(still) - before).abs().max() > 1e-3


def test_other_frame_counts_and_shapes_are_refused():
    tower = tiny_tower()
    with pytest.raises(ValueError, match="4 frames or 1; got 3"):
        tower(videos(1, frames=3))
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        tower(videos(1)[:, :, 0])


@pytest.mark.parametrize("frames", [4, 1])
def test_deterministic_and_batch_independent(frames):
    tower = tiny_tower(attn="sdpa")
    pixels = videos(3, frames)
    with torch.no_grad():
        batched = tower(pixels)
        again = tower(pixels)
        singles = torch.cat([tower(pixels[i : i + 1]) for i in range(3)])
    assert torch.equal(batched, again)
    assert torch.allclose(batched, singles, atol=1e-5)
    assert not torch.allclose(batched[0], batched[1])


@pytest.mark.parametrize("disable", ["config", "zeroed"])
def test_without_temporal_attention_equals_transformers_clip(disable):
    tower = tiny_tower(add_time_attn=disable == "zeroed")
    if disable == "zeroed":
        with torch.no_grad():
            for layer in tower.encoder["layers"]:
                layer.temporal_embedding.zero_()
                layer.temporal_attn.out_proj.weight.zero_()
                layer.temporal_attn.out_proj.bias.zero_()
    clip = CLIPVisionModel(tower.config.clip_config("eager")).eval()
    clip.load_state_dict({k: v for k, v in tower.state_dict().items() if "temporal" not in k}, strict=True)
    pixels = videos(2)
    with torch.no_grad():
        got = tower(pixels)
        states = clip(pixels.transpose(1, 2).flatten(0, 1), output_hidden_states=True).hidden_states
    assert len(states) == 4
    assert torch.allclose(got, states[-2].reshape(2, 4 * TOKENS, 32), atol=1e-5)


def write_export(directory: Path, tower: LanguageBindVideoTower, fmt: str, **edits) -> Path:
    """A LanguageBindVideo directory: config.json and a whole-model weights file (text side included)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": "LanguageBindVideo",
        "projection_dim": 8,
        "vision_config": TINY,
        "text_config": {"hidden_size": 16},
    }
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    weights = {"vision_model." + key: value.clone() for key, value in tower.state_dict().items()}
    weights.update({key: torch.ones(shape) for key, shape in TEXT_SIDE.items()})
    weights.update(edits.get("add", {}))
    for key in edits.get("drop", ()):
        del weights[key]
    if fmt == "safetensors":
        save_file(weights, directory / "model.safetensors")
    else:
        torch.save(weights, directory / "pytorch_model.bin")
    return directory


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_loader_round_trip_ignores_the_text_side(tmp_path, fmt):
    tower = tiny_tower()
    loaded = load_languagebind_video(
        write_export(tmp_path / "LanguageBind_Video_merge", tower, fmt), attn_implementation="eager"
    )
    assert loaded.config == LanguageBindVideoConfig.from_dict(TINY)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    original = tower.state_dict()
    assert all(torch.equal(original[key], value) for key, value in loaded.state_dict().items())
    assert torch.equal(loaded.embeddings.position_ids, torch.arange(TOKENS)[None])
    pixels = videos(2)
    with torch.no_grad():
        assert torch.equal(loaded(pixels), tower(pixels))
    half = load_languagebind_video(tmp_path / "LanguageBind_Video_merge", dtype=torch.float16)
    assert {p.dtype for p in half.parameters()} == {torch.float16}


@pytest.mark.parametrize(
    ("edits", "fragments"),
    [
        (
            {"drop": ["vision_model.encoder.layers.1.temporal_attn.q_proj.bias"]},
            ["missing: vision_model.encoder.layers.1.temporal_attn.q_proj.bias"],
        ),
        (
            {
                "add": {
                    "vision_model.encoder.layers.0.temporal_mlp.fc1.weight": torch.ones(2),
                    "clip.extra": torch.ones(1),
                }
            },
            ["unexpected: vision_model.encoder.layers.0.temporal_mlp.fc1.weight, clip.extra"],
        ),
        (
            {"add": {"vision_model.encoder.layers.2.temporal_embedding": torch.ones(1, 8, 32)}},
            ["wrong shape: vision_model.encoder.layers.2.temporal_embedding (1, 8, 32) (expected (1, 4, 32))"],
        ),
    ],
)
def test_loader_names_the_file_and_the_mismatched_keys(tmp_path, edits, fragments):
    directory = write_export(tmp_path / "export", tiny_tower(), "bin", **edits)
    with pytest.raises(CheckpointError) as error:
        load_languagebind_video(directory)
    message = str(error.value)
    assert message.startswith(f"{directory / 'pytorch_model.bin'}: does not match the LanguageBind video tower")
    for fragment in fragments:
        assert fragment in message


def test_loader_errors_for_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match=r"config\.json: not found"):
        load_languagebind_video(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="no `vision_config` object"):
        read_languagebind_video_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"vision_config": TINY}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="looked for model.safetensors or pytorch_model.bin"):
        load_languagebind_video(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: unreadable weights"):
        load_languagebind_video(tmp_path)


def test_config_reads_the_temporal_fields_and_defaults_as_the_original_class(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"vision_config": MERGE_VISION_CONFIG}), encoding="utf-8")
    config = read_languagebind_video_config(tmp_path)
    assert (config.add_time_attn, config.num_frames, config.hidden_act, config.patch_size) == (True, 8, "gelu", 14)
    (tmp_path / "config.json").write_text(json.dumps({"vision_config": {"hidden_size": 64}}), encoding="utf-8")
    config = read_languagebind_video_config(tmp_path)
    assert (config.hidden_size, config.add_time_attn, config.num_frames, config.hidden_act, config.patch_size) == (
        64,
        False,
        1,
        "quick_gelu",
        32,
    )
