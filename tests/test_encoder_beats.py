"""BEATs iter3+ AS2M encoder: the original checkpoint's keys, forward values, padding, determinism, safe loading."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from mcub.errors import CheckpointError
from mcub.models.modelcompose.encoders.beats import (
    BEATs,
    BEATsConfig,
    load_beats,
    relative_position_buckets,
    token_padding_mask,
)

# The cfg stored in BEATs_iter3_plus_AS2M.pt (encoders.md 1.2).
ORIGINAL_CFG: dict[str, Any] = {
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.05,
    "dropout_input": 0.0,
    "layer_norm_first": False,
    "conv_bias": False,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "relative_position_embedding": True,
    "num_buckets": 320,
    "max_distance": 800,
    "gru_rel_pos": True,
    "deep_norm": True,
    "input_patch_size": 16,
    "layer_wise_gradient_decay_ratio": 0.6,
    "embed_dim": 512,
    "finetuned_model": False,
    "predictor_dropout": 0.0,
    "predictor_class": 527,
}

# The keys and shapes of the file's 'model' (encoders.md 1.3): 10 outside the layers, then 20 in each of 12 layers.
OUTER_KEYS: list[tuple[str, tuple[int, ...]]] = [
    ("patch_embedding.weight", (512, 1, 16, 16)),
    ("layer_norm.weight", (512,)),
    ("layer_norm.bias", (512,)),
    ("post_extract_proj.weight", (768, 512)),
    ("post_extract_proj.bias", (768,)),
    ("encoder.pos_conv.0.weight_g", (1, 1, 128)),
    ("encoder.pos_conv.0.weight_v", (768, 48, 128)),
    ("encoder.pos_conv.0.bias", (768,)),
    ("encoder.layer_norm.weight", (768,)),
    ("encoder.layer_norm.bias", (768,)),
]
LAYER_KEYS: list[tuple[str, tuple[int, ...]]] = [
    ("self_attn.q_proj.weight", (768, 768)),
    ("self_attn.q_proj.bias", (768,)),
    ("self_attn.k_proj.weight", (768, 768)),
    ("self_attn.k_proj.bias", (768,)),
    ("self_attn.v_proj.weight", (768, 768)),
    ("self_attn.v_proj.bias", (768,)),
    ("self_attn.out_proj.weight", (768, 768)),
    ("self_attn.out_proj.bias", (768,)),
    ("self_attn.grep_linear.weight", (8, 64)),
    ("self_attn.grep_linear.bias", (8,)),
    ("self_attn.grep_a", (1, 12, 1, 1)),
    ("self_attn.relative_attention_bias.weight", (320, 12)),
    ("self_attn_layer_norm.weight", (768,)),
    ("self_attn_layer_norm.bias", (768,)),
    ("fc1.weight", (3072, 768)),
    ("fc1.bias", (3072,)),
    ("fc2.weight", (768, 3072)),
    ("fc2.bias", (768,)),
    ("final_layer_norm.weight", (768,)),
    ("final_layer_norm.bias", (768,)),
]
EXPECTED_KEYS = OUTER_KEYS + [(f"encoder.layers.{n}.{name}", shape) for n in range(12) for name, shape in LAYER_KEYS]

# A small model: fbank (B, 256, 32) -> 16 time x 2 frequency patches = 32 tokens of width 64.
TINY_CFG: dict[str, Any] = {
    **ORIGINAL_CFG,
    "encoder_layers": 2,
    "embed_dim": 32,
    "encoder_embed_dim": 64,
    "encoder_ffn_embed_dim": 128,
    "encoder_attention_heads": 4,
    "conv_pos": 16,
    "conv_pos_groups": 4,
    "num_buckets": 32,
    "max_distance": 64,
}
TINY = BEATsConfig.from_checkpoint_cfg(TINY_CFG, "tiny cfg")

# features[:, [0, 13, 31], :3] of the tiny model (tiny_state(0), fbank(2, seed=1), frames >= 160 of item 1 padded),
# computed once with the authors' code (ModelCompose 7846997, BEATs.extract_features_new) on the same weights.
ORIGINAL_FEATURES = [
    [[-0.455097, 0.766147, 0.198477], [-0.239303, 0.815275, 1.013216], [0.593579, 0.105866, 1.267018]],
    [[-1.207706, 0.963783, 0.359552], [0.933796, 0.644767, 0.265031], [-0.089438, 1.045182, -1.525589]],
]


def tiny_state(seed: int) -> dict[str, Tensor]:
    """Deterministic weights for TINY, independent of the module's init; one bias table shared by all layers."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in sorted(BEATs(TINY).state_dict().items()):
        noise = torch.randn(value.shape, generator=generator) * 0.1
        state[key] = noise + 1.0 if key.endswith("layer_norm.weight") else noise
    table = state["encoder.layers.0.self_attn.relative_attention_bias.weight"]
    return {key: table if "relative_attention_bias" in key else value for key, value in state.items()}


def fbank(batch: int, seed: int) -> Tensor:
    return torch.randn(batch, 256, 32, generator=torch.Generator().manual_seed(seed))


def tiny_model(seed: int = 0) -> BEATs:
    model = BEATs(TINY).eval()
    model.load_state_dict(tiny_state(seed))
    return model


def write_checkpoint(path: Path, cfg: Any, state: Any) -> Path:
    """A file in the original layout: {'cfg': plain dict, 'model': state dict}."""
    torch.save({"cfg": cfg, "model": state}, path)
    return path


# keys, configuration


def test_full_size_state_dict_has_the_original_keys_and_shapes():
    with torch.device("meta"):
        model = BEATs()
    assert len(EXPECTED_KEYS) == 250
    assert {key: tuple(value.shape) for key, value in model.state_dict().items()} == dict(EXPECTED_KEYS)
    assert sum(parameter.numel() for parameter in model.parameters()) == 90_311_792
    tables = {id(layer.self_attn.relative_attention_bias.weight) for layer in model.encoder.layers}
    assert len(tables) == 1


def test_full_size_forward_shape_on_meta():
    with torch.device("meta"):
        features, mask = BEATs()(torch.empty(2, 1024, 128))
    assert features.shape == (2, 512, 768) and mask is None


def test_default_config_is_the_checkpoint_cfg():
    assert BEATsConfig.from_checkpoint_cfg(ORIGINAL_CFG, "f.pt") == BEATsConfig()
    assert BEATsConfig().head_dim == 64


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"layer_norm_first": True}, "'layer_norm_first' is True, only False is implemented"),
        ({"activation_fn": "glu"}, "'activation_fn' is 'glu', only 'gelu' is implemented"),
        ({"finetuned_model": True}, "'finetuned_model' is True"),
        ({"mask_prob": 0.75}, "unknown 'mask_prob'"),
        ({"max_distance": 800.0}, "'max_distance' is 800.0, not a int"),
    ],
)
def test_checkpoint_cfg_rejects_what_is_not_implemented(change, message):
    with pytest.raises(CheckpointError, match="^f.pt: unusable 'cfg'") as error:
        BEATsConfig.from_checkpoint_cfg({**ORIGINAL_CFG, **change}, "f.pt")
    assert message in str(error.value)


def test_checkpoint_cfg_must_carry_every_architecture_field():
    cfg = {key: value for key, value in ORIGINAL_CFG.items() if key not in ("max_distance", "gru_rel_pos")}
    with pytest.raises(CheckpointError) as error:
        BEATsConfig.from_checkpoint_cfg(cfg, "f.pt")
    assert "missing 'max_distance'" in str(error.value) and "missing 'gru_rel_pos'" in str(error.value)
    trimmed = {key: value for key, value in ORIGINAL_CFG.items() if not key.startswith("predictor_")}
    assert BEATsConfig.from_checkpoint_cfg(trimmed, "f.pt") == BEATsConfig()


# forward


def test_relative_position_buckets_match_the_checked_values():
    buckets = relative_position_buckets(512, 320, 800, torch.device("cpu"))
    assert buckets.shape == (512, 512)
    checked = {(0, 0): 0, (0, 1): 161, (1, 0): 1, (0, 79): 239, (0, 80): 240, (0, 511): 304, (511, 0): 144}
    assert {position: int(buckets[position]) for position in checked} == checked
    assert int(buckets.min()) == 0 and int(buckets.max()) == 304


def test_tiny_forward_shapes_and_values_match_the_original_code():
    mask = torch.zeros(2, 256, dtype=torch.bool)
    mask[1, 160:] = True
    features, token_mask = tiny_model()(fbank(2, seed=1), mask)
    assert features.shape == (2, 32, 64) and features.dtype == torch.float32
    assert token_mask.tolist() == [[False] * 32, [False] * 20 + [True] * 12]
    assert torch.allclose(features[:, [0, 13, 31], :3], torch.tensor(ORIGINAL_FEATURES), atol=1e-5)


def test_frames_and_mel_bins_beyond_whole_patches_are_dropped():
    model, full = tiny_model(), fbank(1, seed=2)
    features, _ = model(full[:, :250])
    assert features.shape == (1, 15 * 2, 64)
    assert torch.equal(features, model(full[:, :240])[0])
    assert torch.equal(model(full)[0], model(torch.cat([full, torch.ones(1, 256, 7)], dim=2))[0])


def test_same_input_same_features_across_calls_and_batch_sizes():
    model = tiny_model()
    batch = fbank(3, seed=3)
    first, second = model(batch)[0], model(batch)[0]
    assert torch.equal(first, second)
    for row in range(3):
        single = model(batch[row : row + 1])[0]
        assert torch.allclose(single[0], first[row], atol=1e-5, rtol=0)
    assert not torch.allclose(first[0], first[1])


# padding


def test_token_mask_pairs_consecutive_frames_not_patches():
    frames = torch.zeros(1, 1024, dtype=torch.bool)
    frames[0, 600:] = True
    frames[0, 10] = True
    tokens = token_padding_mask(frames, 512)
    assert tokens.shape == (1, 512)
    assert tokens[0].nonzero().flatten().tolist() == list(range(300, 512))
    # tiny: 8 frames per token; padding from frame 136 on also marks token 17 = (time patch 8, frequency patch 1),
    # whose frames 128..143 are half valid
    tiny_frames = torch.zeros(1, 256, dtype=torch.bool)
    tiny_frames[0, 136:] = True
    assert token_padding_mask(tiny_frames, 32)[0].nonzero().flatten().tolist() == list(range(17, 32))
    assert token_padding_mask(tiny_frames.half(), 32).equal(token_padding_mask(tiny_frames, 32))


def test_all_false_mask_equals_no_mask():
    model, batch = tiny_model(), fbank(2, seed=4)
    features, token_mask = model(batch, torch.zeros(2, 256, dtype=torch.bool))
    assert torch.equal(features, model(batch)[0])
    assert token_mask.shape == (2, 32) and not token_mask.any()


def test_padded_tokens_are_zeroed_and_never_attended_to():
    model, batch = tiny_model(), fbank(1, seed=5)
    mask = torch.zeros(1, 256, dtype=torch.bool)
    mask[0, 128:] = True  # tokens 16..31 = time patches 8..15 = frames 128..255
    changed = batch.clone()
    changed[0, 128:] = torch.randn(128, 32, generator=torch.Generator().manual_seed(6)) * 3
    before, token_mask = model(batch, mask)
    after, _ = model(changed, mask)
    assert token_mask[0].nonzero().flatten().tolist() == list(range(16, 32))
    # what lies under padded tokens changes nothing, not even their own outputs (their inputs are zeroed) ...
    assert torch.allclose(before, after, atol=1e-5, rtol=0)
    assert not torch.allclose(model(batch)[0][0, :16], model(changed)[0][0, :16], atol=1e-3)
    # ... and their outputs are computed and returned, not zeroed, as the original does
    assert before[0, 16:].abs().amax(dim=-1).min() > 0.1
    assert not torch.allclose(before[0, 16:], model(batch)[0][0, 16:], atol=1e-3)


def test_padding_only_item_and_mismatched_mask_are_errors():
    model, batch = tiny_model(), fbank(2, seed=7)
    mask = torch.zeros(2, 256, dtype=torch.bool)
    mask[1] = True
    with pytest.raises(ValueError, match=r"batch items \[1\] are padding only"):
        model(batch, mask)
    with pytest.raises(ValueError, match="does not match fbank"):
        model(batch, torch.zeros(2, 255, dtype=torch.bool))


# loading


def test_load_beats_round_trip(tmp_path):
    state = tiny_state(0)
    loaded = load_beats(write_checkpoint(tmp_path / "beats.pt", TINY_CFG, state))
    assert loaded.cfg == TINY and not loaded.training
    assert not any(parameter.requires_grad for parameter in loaded.parameters())
    assert not any(isinstance(module, torch.nn.Dropout) for module in loaded.modules())
    batch = fbank(2, seed=8)
    with torch.no_grad():
        assert torch.equal(loaded(batch)[0], tiny_model()(batch)[0])
    assert all(torch.equal(value, state[key]) for key, value in loaded.state_dict().items())


def load_error(path: Path) -> str:
    with pytest.raises(CheckpointError) as error:
        load_beats(path)
    return str(error.value)


def test_load_beats_names_every_missing_and_unexpected_key(tmp_path):
    state = tiny_state(0)
    missing = {key: value for key, value in state.items() if key != "encoder.layers.1.fc2.bias"}
    path = write_checkpoint(tmp_path / "missing.pt", TINY_CFG, missing)
    message = load_error(path)
    assert message.startswith(f"{path}: ") and "missing keys (1): encoder.layers.1.fc2.bias" in message
    assert "unexpected" not in message

    extra = {**state, "encoder.layers.0.self_attn.extra.weight": torch.zeros(2)}
    path = write_checkpoint(tmp_path / "extra.pt", TINY_CFG, extra)
    message = load_error(path)
    assert message.startswith(f"{path}: ") and "unexpected keys (1): encoder.layers.0.self_attn.extra.weight" in message
    assert "missing" not in message

    # the names a torch.nn.utils.parametrize weight norm gives the conv weight are not the file's
    renamed = dict(state)
    renamed["encoder.pos_conv.0.parametrizations.weight.original0"] = renamed.pop("encoder.pos_conv.0.weight_g")
    renamed["encoder.pos_conv.0.parametrizations.weight.original1"] = renamed.pop("encoder.pos_conv.0.weight_v")
    message = load_error(write_checkpoint(tmp_path / "renamed.pt", TINY_CFG, renamed))
    assert "missing keys (2): encoder.pos_conv.0.weight_g, encoder.pos_conv.0.weight_v" in message
    assert (
        "unexpected keys (2): encoder.pos_conv.0.parametrizations.weight.original0, "
        "encoder.pos_conv.0.parametrizations.weight.original1" in message
    )


def test_load_beats_rejects_wrong_shapes_and_unequal_bias_copies(tmp_path):
    state = tiny_state(0)
    wrong = {**state, "encoder.layers.0.fc1.weight": torch.zeros(128, 63)}
    with pytest.raises(CheckpointError, match=r"fc1.weight has shape \(128, 63\), expected \(128, 64\)"):
        load_beats(write_checkpoint(tmp_path / "shape.pt", TINY_CFG, wrong))
    key = "encoder.layers.1.self_attn.relative_attention_bias.weight"
    unequal = {**state, key: state[key] + 1}
    with pytest.raises(CheckpointError, match=f"differs from encoder.layers.0.* in {key}$"):
        load_beats(write_checkpoint(tmp_path / "bias.pt", TINY_CFG, unequal))


def test_load_beats_file_errors(tmp_path):
    with pytest.raises(CheckpointError, match="absent.pt: no such file"):
        load_beats(tmp_path / "absent.pt")
    unsafe = write_checkpoint(tmp_path / "unsafe.pt", types.SimpleNamespace(**TINY_CFG), tiny_state(0))
    message = load_error(unsafe)
    assert "Unsupported global: GLOBAL types.SimpleNamespace was not an allowed global" in message
    assert "weights_only` set to `False`" not in message
    bare = tmp_path / "bare.pt"
    torch.save(tiny_state(0), bare)
    message = load_error(bare)
    assert "expected a dict with 'cfg' and 'model' (the original layout), found a dict of 50 entries" in message
    bad_cfg = write_checkpoint(tmp_path / "cfg.pt", {**TINY_CFG, "deep_norm": 1}, tiny_state(0))
    with pytest.raises(CheckpointError, match="cfg.pt: unusable 'cfg': 'deep_norm' is 1, not a bool"):
        load_beats(bad_cfg)
