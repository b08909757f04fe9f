"""Point-BERT v1.2: checkpoint keys, grouping, the forward against encoders.md 2.4, determinism, loading."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mcub.errors import McubError
from mcub.models.modelcompose.encoders.pointbert import (
    PointBERT,
    PointBERTConfig,
    farthest_point_sample,
    group_points,
    knn_indices,
    load_pointbert,
)

TINY = PointBERTConfig(trans_dim=32, depth=2, num_heads=4, group_size=8, num_group=16, encoder_dims=24)

# encoders.md 2.3: the keys and shapes of point_bert_v1.2.pt (flat layout)
EXPECTED_SHAPES: dict[str, tuple[int, ...]] = {
    "cls_token": (1, 1, 384),
    "cls_pos": (1, 1, 384),
    "encoder.first_conv.0.weight": (128, 6, 1),
    "encoder.first_conv.0.bias": (128,),
    "encoder.first_conv.1.weight": (128,),
    "encoder.first_conv.1.bias": (128,),
    "encoder.first_conv.1.running_mean": (128,),
    "encoder.first_conv.1.running_var": (128,),
    "encoder.first_conv.1.num_batches_tracked": (),
    "encoder.first_conv.3.weight": (256, 128, 1),
    "encoder.first_conv.3.bias": (256,),
    "encoder.second_conv.0.weight": (512, 512, 1),
    "encoder.second_conv.0.bias": (512,),
    "encoder.second_conv.1.weight": (512,),
    "encoder.second_conv.1.bias": (512,),
    "encoder.second_conv.1.running_mean": (512,),
    "encoder.second_conv.1.running_var": (512,),
    "encoder.second_conv.1.num_batches_tracked": (),
    "encoder.second_conv.3.weight": (256, 512, 1),
    "encoder.second_conv.3.bias": (256,),
    "reduce_dim.weight": (384, 256),
    "reduce_dim.bias": (384,),
    "pos_embed.0.weight": (128, 3),
    "pos_embed.0.bias": (128,),
    "pos_embed.2.weight": (384, 128),
    "pos_embed.2.bias": (384,),
    **{
        f"blocks.blocks.{n}.{name}": shape
        for n in range(12)
        for name, shape in {
            "norm1.weight": (384,),
            "norm1.bias": (384,),
            "attn.qkv.weight": (1152, 384),
            "attn.proj.weight": (384, 384),
            "attn.proj.bias": (384,),
            "norm2.weight": (384,),
            "norm2.bias": (384,),
            "mlp.fc1.weight": (1536, 384),
            "mlp.fc1.bias": (1536,),
            "mlp.fc2.weight": (384, 1536),
            "mlp.fc2.bias": (384,),
        }.items()
    },
    "norm.weight": (384,),
    "norm.bias": (384,),
}


def cloud(batch: int, count: int, seed: int) -> torch.Tensor:
    """Random xyz in [-1, 1] and rgb in [0, 1], (batch, count, 6)."""
    generator = torch.Generator().manual_seed(seed)
    xyz = torch.rand(batch, count, 3, generator=generator) * 2 - 1
    return torch.cat([xyz, torch.rand(batch, count, 3, generator=generator)], -1)


@pytest.fixture(scope="module")
def tiny() -> PointBERT:
    """The tiny encoder with every tensor (batch-norm statistics, norms, CLS) seeded at random."""
    model = PointBERT(TINY).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.2)
    return model


def brute_force_fps(xyz: torch.Tensor, count: int, start: int) -> list[int]:
    """Farthest-point picks of one cloud (N, 3), written as directly as possible."""
    picks = [start]
    nearest_pick = torch.full((xyz.shape[0],), float("inf"))
    while len(picks) < count:
        nearest_pick = torch.minimum(nearest_pick, ((xyz - xyz[picks[-1]]) ** 2).sum(-1))
        picks.append(int(nearest_pick.argmax()))
    return picks


def exact_distances(centres: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
    return torch.cdist(centres, xyz, compute_mode="donot_use_mm_for_euclid_dist")


def spec_forward(model: PointBERT, points: torch.Tensor) -> torch.Tensor:
    """encoders.md 2.4 with plain tensor ops on the state dict, one cloud at a time, brute-force FPS and kNN."""
    w, config = model.state_dict(), model.config
    heads, width = config.num_heads, config.trans_dim

    def conv_bn_relu_conv(x: torch.Tensor, prefix: str) -> torch.Tensor:
        x = x @ w[f"{prefix}.0.weight"][..., 0].T + w[f"{prefix}.0.bias"]
        x = (x - w[f"{prefix}.1.running_mean"]) / torch.sqrt(w[f"{prefix}.1.running_var"] + 1e-5)
        x = torch.relu(x * w[f"{prefix}.1.weight"] + w[f"{prefix}.1.bias"])
        return x @ w[f"{prefix}.3.weight"][..., 0].T + w[f"{prefix}.3.bias"]

    outputs = []
    for points_one in points:
        xyz = points_one[:, :3]
        centres = xyz[brute_force_fps(xyz, config.num_group, 0)]
        near = exact_distances(centres, xyz).argsort(dim=1)[:, : config.group_size]
        groups = torch.cat([xyz[near] - centres[:, None], points_one[near, 3:]], -1)
        local = conv_bn_relu_conv(groups, "encoder.first_conv")
        both = torch.cat([local.max(1, keepdim=True).values.expand_as(local), local], -1)
        tokens = conv_bn_relu_conv(both, "encoder.second_conv").max(1).values
        x = torch.cat([w["cls_token"][0], tokens @ w["reduce_dim.weight"].T + w["reduce_dim.bias"]])
        pos = F.gelu(centres @ w["pos_embed.0.weight"].T + w["pos_embed.0.bias"])
        pos = torch.cat([w["cls_pos"][0], pos @ w["pos_embed.2.weight"].T + w["pos_embed.2.bias"]])
        for n in range(config.depth):
            b = f"blocks.blocks.{n}."
            x = x + pos
            h = F.layer_norm(x, (width,), w[b + "norm1.weight"], w[b + "norm1.bias"])
            q, k, v = (h @ w[b + "attn.qkv.weight"].T).reshape(len(x), 3, heads, -1).permute(1, 2, 0, 3)
            attention = torch.softmax(q @ k.transpose(1, 2) / (width // heads) ** 0.5, dim=-1)
            mixed = (attention @ v).transpose(0, 1).reshape(len(x), width)
            x = x + mixed @ w[b + "attn.proj.weight"].T + w[b + "attn.proj.bias"]
            h = F.layer_norm(x, (width,), w[b + "norm2.weight"], w[b + "norm2.bias"])
            h = F.gelu(h @ w[b + "mlp.fc1.weight"].T + w[b + "mlp.fc1.bias"])
            x = x + h @ w[b + "mlp.fc2.weight"].T + w[b + "mlp.fc2.bias"]
        outputs.append(F.layer_norm(x, (width,), w["norm.weight"], w["norm.bias"]))
    return torch.stack(outputs)


# checkpoint keys


def test_full_size_state_dict_matches_the_checkpoint_keys_and_shapes():
    assert len(EXPECTED_SHAPES) == 160
    with torch.device("meta"):
        model = PointBERT()
    state = model.state_dict()
    assert {key: tuple(value.shape) for key, value in state.items()} == EXPECTED_SHAPES
    assert state["encoder.first_conv.1.num_batches_tracked"].dtype == torch.int64
    assert sum(parameter.numel() for parameter in model.parameters()) == 21_859_200
    assert PointBERTConfig() == PointBERTConfig(384, 12, 6, 32, 512, 256, 6)


# grouping


def test_fps_on_a_line_picks_the_extremes_first():
    line = torch.tensor([0.0, 1.0, 2.0, 5.0, 9.0])
    xyz = torch.stack([line, torch.zeros(5), torch.zeros(5)], -1)
    picks = farthest_point_sample(torch.stack([xyz, xyz.flip(0)]), 5)
    assert picks.tolist() == [[0, 4, 3, 2, 1], [0, 4, 1, 2, 3]]
    assert farthest_point_sample(xyz[None], 2).tolist() == [[0, 4]]


def test_fps_matches_brute_force_from_the_default_and_seeded_starts():
    xyz = cloud(3, 200, seed=1)[..., :3]
    default = farthest_point_sample(xyz, 40)
    assert [row.tolist() for row in default] == [brute_force_fps(row, 40, 0) for row in xyz]
    starts = set()
    for seed in range(5):
        seeded = farthest_point_sample(xyz, 40, seed=seed)
        assert torch.equal(seeded, farthest_point_sample(xyz, 40, seed=seed))
        assert len(set(seeded[:, 0].tolist())) == 1
        start = int(seeded[0, 0])
        starts.add(start)
        assert [row.tolist() for row in seeded] == [brute_force_fps(row, 40, start) for row in xyz]
    assert len(starts) > 1


def test_knn_matches_brute_force_nearest_first():
    xyz = cloud(2, 80, seed=2)[..., :3]
    centres = cloud(2, 7, seed=3)[..., :3]
    expected = exact_distances(centres, xyz).argsort(dim=-1)[..., :6]
    assert torch.equal(knn_indices(centres, xyz, 6), expected)


def test_groups_hold_relative_xyz_and_raw_rgb():
    points = cloud(2, 100, seed=4)
    groups, centres = group_points(points, num_group=10, group_size=5)
    assert groups.shape == (2, 10, 5, 6) and centres.shape == (2, 10, 3)
    picks = farthest_point_sample(points[..., :3], 10)
    assert torch.equal(centres, torch.stack([points[row, picks[row], :3] for row in range(2)]))
    assert torch.all(groups[:, :, 0, :3] == 0)  # each centre is its own nearest neighbour
    for row in range(2):
        near = knn_indices(centres[row : row + 1], points[row : row + 1, :, :3], 5)[0]
        assert torch.equal(groups[row, ..., :3], points[row, near, :3] - centres[row, :, None])
        assert torch.equal(groups[row, ..., 3:], points[row, near, 3:])


# forward


def test_tiny_forward_matches_the_written_out_spec(tiny):
    points = cloud(2, 64, seed=5)
    with torch.no_grad():
        tokens = tiny(points)
    assert tokens.shape == (2, TINY.num_group + 1, TINY.trans_dim) and tokens.dtype == torch.float32
    assert torch.allclose(tokens, spec_forward(tiny, points), atol=1e-5)


def test_forward_is_deterministic_and_batch_independent(tiny):
    points = cloud(3, 96, seed=6)
    with torch.no_grad():
        batched = tiny(points)
        assert torch.equal(batched, tiny(points))
        singles = torch.cat([tiny(points[i : i + 1]) for i in range(3)])
        assert torch.allclose(batched, singles, atol=1e-5)
        seeded = tiny(points, seed=3)
        assert torch.equal(seeded, tiny(points, seed=3))
        assert int(farthest_point_sample(points[..., :3], 1, seed=3)[0, 0]) != 0
        assert not torch.allclose(seeded, batched, atol=1e-3)


def test_bad_inputs_are_refused_with_the_reason(tiny):
    with pytest.raises(ValueError, match=r"at least 16 points .*got 15"):
        tiny(cloud(1, 15, seed=7))
    with torch.device("meta"):
        full = PointBERT()
        with pytest.raises(ValueError, match=r"at least 512 points .*got 511"):
            full(torch.empty(1, 511, 6))
    with pytest.raises(ValueError, match=r"\(B, N, 6\).*got \(1, 64, 3\)"):
        tiny(cloud(1, 64, seed=7)[..., :3])
    with pytest.raises(ValueError, match=r"got \(64, 6\)"):
        tiny(cloud(1, 64, seed=7)[0])


# loading


def test_load_round_trip_flat_and_nested_layouts(tiny, tmp_path: Path):
    flat = tmp_path / "flat.pt"
    torch.save(tiny.state_dict(), flat)
    nested = tmp_path / "nested.pt"
    torch.save(
        {
            "epoch": 3,
            "state_dict": {
                **{f"module.point_encoder.{key}": value for key, value in tiny.state_dict().items()},
                "module.text_encoder.weight": torch.ones(2),
            },
        },
        nested,
    )
    points = cloud(1, 64, seed=8)
    with torch.no_grad():
        expected = tiny(points)
    for path in (flat, nested):
        loaded = load_pointbert(path, TINY)
        assert not loaded.training and not any(parameter.requires_grad for parameter in loaded.parameters())
        assert all(torch.equal(loaded.state_dict()[key], value) for key, value in tiny.state_dict().items())
        with torch.no_grad():
            assert torch.equal(loaded(points), expected)


def test_load_names_every_missing_unexpected_and_misshapen_key_and_the_file(tiny, tmp_path: Path):
    state = dict(tiny.state_dict())
    del state["norm.bias"], state["blocks.blocks.1.attn.qkv.weight"]
    state["head.weight"] = torch.zeros(3)
    state["cls_token"] = torch.zeros(1, 1, 5)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(McubError) as error:
        load_pointbert(path, TINY)
    message = str(error.value)
    assert message.startswith(str(path))
    assert "missing (2): blocks.blocks.1.attn.qkv.weight, norm.bias" in message
    assert "unexpected (1): head.weight" in message
    assert "wrong shape (1): cls_token (1, 1, 5) != (1, 1, 32)" in message


def test_load_reports_a_nested_file_without_encoder_keys_and_unsafe_pickles(tiny, tmp_path: Path):
    prefixed = tmp_path / "prefixed.pt"
    torch.save({"state_dict": {f"module.{key}": value for key, value in tiny.state_dict().items()}}, prefixed)
    with pytest.raises(McubError, match=r"nested layout, 0 keys.*missing \(50\): blocks\.blocks\.0\.attn\.proj\.bias"):
        load_pointbert(prefixed, TINY)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"args": argparse.Namespace(lr=1.0), "state_dict": tiny.state_dict()}, unsafe)
    with pytest.raises(McubError, match=rf"^{re.escape(str(unsafe))}: not loadable with weights_only=True"):
        load_pointbert(unsafe, TINY)


def test_grouping_reads_no_device_value_on_the_host():
    """Farthest-point sampling and kNN run on the meta device, where any read of a value fails: the loop never
    waits for the GPU."""
    groups, centres = group_points(torch.empty(2, 64, 6, device="meta"), num_group=8, group_size=4, seed=3)
    assert groups.shape == (2, 8, 4, 6) and centres.shape == (2, 8, 3)
