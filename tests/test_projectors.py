"""The projectors: checkpoint key names and shapes, the Q-Former forward against a plain re-computation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from mcub.models.modelcompose.projectors import AudioQFormerProjector, build_projector

# `model.modal_projectors.<m>.` keys of mlp2x_gelu (reference/encoders.md 4.2), image / video (1024) and point (384).
MLP_KEYS = {
    1024: {"0.weight": (4096, 1024), "0.bias": (4096,), "2.weight": (4096, 4096), "2.bias": (4096,)},
    384: {"0.weight": (4096, 384), "0.bias": (4096,), "2.weight": (4096, 4096), "2.bias": (4096,)},
}
MLP_PARAMETERS = {1024: 20_979_712, 384: 18_358_272}
# `model.modal_projectors.audio.` keys of qformer_32N_2L (reference/encoders.md 4.3).
QFORMER_LAYER_KEYS = {
    "attention.self.query.weight": (768, 768),
    "attention.self.query.bias": (768,),
    "attention.self.key.weight": (768, 768),
    "attention.self.key.bias": (768,),
    "attention.self.value.weight": (768, 768),
    "attention.self.value.bias": (768,),
    "attention.output.dense.weight": (768, 768),
    "attention.output.dense.bias": (768,),
    "attention.output.LayerNorm.weight": (768,),
    "attention.output.LayerNorm.bias": (768,),
    "crossattention.self.query.weight": (768, 768),
    "crossattention.self.query.bias": (768,),
    "crossattention.self.key.weight": (768, 768),
    "crossattention.self.key.bias": (768,),
    "crossattention.self.value.weight": (768, 768),
    "crossattention.self.value.bias": (768,),
    "crossattention.output.dense.weight": (768, 768),
    "crossattention.output.dense.bias": (768,),
    "crossattention.output.LayerNorm.weight": (768,),
    "crossattention.output.LayerNorm.bias": (768,),
    "intermediate_query.dense.weight": (3072, 768),
    "intermediate_query.dense.bias": (3072,),
    "output_query.dense.weight": (768, 3072),
    "output_query.dense.bias": (768,),
    "output_query.LayerNorm.weight": (768,),
    "output_query.LayerNorm.bias": (768,),
}
QFORMER_KEYS = {
    "audio_query_tokens": (1, 32, 768),
    "audio_position_embedding.weight": (1024, 768),
    "audio_Qformer.bert.embeddings.LayerNorm.weight": (768,),
    "audio_Qformer.bert.embeddings.LayerNorm.bias": (768,),
    **{
        f"audio_Qformer.bert.encoder.layer.{n}.{key}": shape
        for n in (0, 1)
        for key, shape in QFORMER_LAYER_KEYS.items()
    },
    "audio_llama_proj.weight": (4096, 768),
    "audio_llama_proj.bias": (4096,),
}
# A tiny Q-Former: every width differs, so a transposed or misrouted weight cannot go unnoticed.
TINY = {"hidden_size": 16, "num_heads": 4, "intermediate_size": 24, "encoder_width": 12, "out_features": 20}
TINY_QUERIES, TINY_LAYERS, TINY_POSITIONS, TINY_LENGTH = 3, 2, 10, 7


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


@pytest.mark.parametrize("in_features", [1024, 384])
def test_mlp2x_gelu_checkpoint_keys(in_features: int) -> None:
    with torch.device("meta"):
        projector = build_projector("mlp2x_gelu", in_features, 4096)
    assert shapes(projector) == MLP_KEYS[in_features]
    assert sum(p.numel() for p in projector.parameters()) == MLP_PARAMETERS[in_features]


def test_linear_checkpoint_keys() -> None:
    with torch.device("meta"):
        projector = build_projector("linear", 1024, 4096)
    assert shapes(projector) == {"weight": (4096, 1024), "bias": (4096,)}


def test_qformer_checkpoint_keys() -> None:
    with torch.device("meta"):
        projector = build_projector("qformer_32N_2L", 768, 4096)
    assert len(QFORMER_KEYS) == 58
    # state_dict() holds parameters only: no buffer that checkpoints lack.
    assert shapes(projector) == QFORMER_KEYS
    assert list(projector.state_dict()) == [name for name, _ in projector.named_parameters()]
    assert sum(p.numel() for p in projector.parameters()) == 22_865_920


def test_qformer_kind_sets_queries_layers_and_widths() -> None:
    with torch.device("meta"):
        projector = build_projector("qformer_8N_3L", 512, 1000)
        features = torch.empty(2, 40, 512)
    state = shapes(projector)
    assert state["audio_query_tokens"] == (1, 8, 768)
    assert state["audio_position_embedding.weight"] == (1024, 512)
    assert state["audio_Qformer.bert.encoder.layer.2.crossattention.self.key.weight"] == (768, 512)
    assert "audio_Qformer.bert.encoder.layer.3.attention.self.query.bias" not in state
    assert state["audio_llama_proj.weight"] == (1000, 768)
    assert projector(features).shape == (2, 8, 1000)


@pytest.mark.parametrize("kind", ["mlp3x_gelu", "identity", "qformer_32N", "qformer_32N_2L_x", "MLP2X_GELU", ""])
def test_unknown_kind_is_named(kind: str) -> None:
    with pytest.raises(ValueError, match=f"unknown projector type '{kind}'"):
        build_projector(kind, 8, 8)


def exact_gelu(x: Tensor) -> Tensor:
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def test_mlp2x_gelu_values() -> None:
    torch.manual_seed(0)
    projector = build_projector("mlp2x_gelu", 6, 5)
    x = torch.randn(2, 3, 6) * 3
    w0, b0, w2, b2 = (projector.state_dict()[key] for key in ("0.weight", "0.bias", "2.weight", "2.bias"))
    expected = exact_gelu(x @ w0.T + b0) @ w2.T + b2
    torch.testing.assert_close(projector(x), expected, rtol=0, atol=1e-6)


def tiny_qformer() -> AudioQFormerProjector:
    """A tiny Q-Former with every parameter drawn at random (LayerNorm weights and biases included)."""
    torch.manual_seed(1)
    projector = AudioQFormerProjector(TINY_QUERIES, TINY_LAYERS, num_positions=TINY_POSITIONS, **TINY)
    with torch.no_grad():
        for parameter in projector.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.5)
    return projector.eval()


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    mean = x.mean(-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(variance + 1e-12) * weight + bias


def attention(w: dict[str, Tensor], prefix: str, h: Tensor, context: Tensor, heads: int) -> Tensor:
    """BERT attention sublayer, one head at a time, then dense + residual + LayerNorm."""
    q = h @ w[prefix + "self.query.weight"].T + w[prefix + "self.query.bias"]
    k = context @ w[prefix + "self.key.weight"].T + w[prefix + "self.key.bias"]
    v = context @ w[prefix + "self.value.weight"].T + w[prefix + "self.value.bias"]
    size = q.shape[-1] // heads
    outputs = []
    for head in range(heads):
        part = slice(head * size, (head + 1) * size)
        scores = q[..., part] @ k[..., part].transpose(-1, -2) / math.sqrt(size)
        outputs.append(torch.softmax(scores, dim=-1) @ v[..., part])
    dense = torch.cat(outputs, -1) @ w[prefix + "output.dense.weight"].T + w[prefix + "output.dense.bias"]
    return layer_norm(dense + h, w[prefix + "output.LayerNorm.weight"], w[prefix + "output.LayerNorm.bias"])


def reference_qformer(w: dict[str, Tensor], features: Tensor) -> Tensor:
    """encoders.md 4.3, step by step, from the state dict."""
    x = features + w["audio_position_embedding.weight"][: features.shape[1]]
    h = w["audio_query_tokens"].expand(features.shape[0], -1, -1)
    bert = "audio_Qformer.bert."
    h = layer_norm(h, w[bert + "embeddings.LayerNorm.weight"], w[bert + "embeddings.LayerNorm.bias"])
    for n in range(TINY_LAYERS):
        p = f"{bert}encoder.layer.{n}."
        h = attention(w, p + "attention.", h, h, TINY["num_heads"])
        h = attention(w, p + "crossattention.", h, x, TINY["num_heads"])
        inner = exact_gelu(h @ w[p + "intermediate_query.dense.weight"].T + w[p + "intermediate_query.dense.bias"])
        out = inner @ w[p + "output_query.dense.weight"].T + w[p + "output_query.dense.bias"]
        h = layer_norm(out + h, w[p + "output_query.LayerNorm.weight"], w[p + "output_query.LayerNorm.bias"])
    return h @ w["audio_llama_proj.weight"].T + w["audio_llama_proj.bias"]


def test_qformer_forward_matches_reference() -> None:
    projector = tiny_qformer()
    features = torch.randn(2, TINY_LENGTH, TINY["encoder_width"])
    with torch.no_grad():
        output = projector(features)
        expected = reference_qformer(projector.state_dict(), features)
    assert output.shape == (2, TINY_QUERIES, TINY["out_features"])
    assert expected.abs().mean() > 0.1  # not a degenerate comparison
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-5)


def test_qformer_positions_go_to_the_features() -> None:
    """Reversing the feature order changes the output only through the position embeddings."""
    projector = tiny_qformer()
    features = torch.randn(1, TINY_LENGTH, TINY["encoder_width"])
    with torch.no_grad():
        forward, backward = projector(features), projector(features.flip(1))
        projector.audio_position_embedding.weight.zero_()
        torch.testing.assert_close(projector(features), projector(features.flip(1)), rtol=0, atol=1e-5)
    assert (forward - backward).abs().max() > 1e-2


def test_qformer_batch_rows_are_independent() -> None:
    projector = tiny_qformer()
    features = torch.randn(3, TINY_LENGTH, TINY["encoder_width"])
    with torch.no_grad():
        batch = projector(features)
        rows = torch.cat([projector(features[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, rows, rtol=1.3e-6, atol=1e-6)  # fp32 rounding of other matmul blockings
    assert (batch[0] - batch[1]).abs().max() > 1e-2


def test_qformer_rejects_more_positions_than_embedded() -> None:
    projector = tiny_qformer()
    with pytest.raises(ValueError, match="11 audio positions exceed the 10 position embeddings"):
        projector(torch.randn(1, TINY_POSITIONS + 1, TINY["encoder_width"]))
