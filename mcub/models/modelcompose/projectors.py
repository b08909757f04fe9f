"""The modality projectors of the released ModelCompose checkpoints, key-compatible with `adapter_model.bin`.

`build_projector` turns a config string (`mm_projector_type`, `mm_<m>_projector_type`) into a module whose
`state_dict()` keys are those stored under `model.modal_projectors.<m>.` (reference/encoders.md section 4)."""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

QFORMER_KIND = re.compile(r"qformer_(\d+)N_(\d+)L")
KNOWN_KINDS = "linear, mlp2x_gelu, qformer_<N>N_<L>L"
LAYER_NORM_EPS = 1e-12


def build_projector(kind: str, in_features: int, out_features: int) -> nn.Module:
    """The projector of config string `kind`, mapping encoder features (..., in_features) to LLM embeddings."""
    if kind == "linear":
        return nn.Linear(in_features, out_features)
    if kind == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(in_features, out_features), nn.GELU(), nn.Linear(out_features, out_features))
    if match := QFORMER_KIND.fullmatch(kind):
        return AudioQFormerProjector(
            num_query_tokens=int(match[1]),
            num_layers=int(match[2]),
            encoder_width=in_features,
            out_features=out_features,
        )
    raise ValueError(f"unknown projector type {kind!r}; known types: {KNOWN_KINDS}")


class MultiHeadProjections(nn.Module):
    """Query, key and value projections and scaled dot-product attention without a mask."""

    def __init__(self, hidden_size: int, num_heads: int, context_width: int):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden size {hidden_size} is not a multiple of {num_heads} heads")
        self.num_heads = num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(context_width, hidden_size)
        self.value = nn.Linear(context_width, hidden_size)

    def forward(self, hidden_states: Tensor, context: Tensor) -> Tensor:
        """Queries from `hidden_states` (B, L, hidden) attend over `context` (B, S, context_width)."""
        query, key, value = (
            projection(source).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
            for projection, source in ((self.query, hidden_states), (self.key, context), (self.value, context))
        )
        return F.scaled_dot_product_attention(query, key, value).transpose(1, 2).flatten(2)


class ResidualOutput(nn.Module):
    """`LayerNorm(dense(x) + residual)`, BERT's post-norm sublayer output."""

    def __init__(self, in_features: int, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(in_features, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=LAYER_NORM_EPS)

    def forward(self, hidden_states: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(hidden_states) + residual)


class AttentionBlock(nn.Module):
    """An attention sublayer: `self` computes the attention (BERT's name), `output` the residual and norm."""

    def __init__(self, hidden_size: int, num_heads: int, context_width: int):
        super().__init__()
        self.self = MultiHeadProjections(hidden_size, num_heads, context_width)
        self.output = ResidualOutput(hidden_size, hidden_size)

    def forward(self, hidden_states: Tensor, context: Tensor) -> Tensor:
        return self.output(self.self(hidden_states, context), hidden_states)


class Intermediate(nn.Module):
    """The first half of the feed-forward sublayer: `gelu(dense(x))`, exact GELU."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, intermediate_size)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return F.gelu(self.dense(hidden_states))


class QFormerLayer(nn.Module):
    """Self-attention over the queries, cross-attention to the encoder features, the query feed-forward."""

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, encoder_width: int):
        super().__init__()
        self.attention = AttentionBlock(hidden_size, num_heads, hidden_size)
        self.crossattention = AttentionBlock(hidden_size, num_heads, encoder_width)
        self.intermediate_query = Intermediate(hidden_size, intermediate_size)
        self.output_query = ResidualOutput(intermediate_size, hidden_size)

    def forward(self, queries: Tensor, features: Tensor) -> Tensor:
        queries = self.attention(queries, queries)
        queries = self.crossattention(queries, features)
        return self.output_query(self.intermediate_query(queries), queries)


class QFormerBert(nn.Module):
    """The query-only BERT of the Q-Former: `embeddings.LayerNorm` on the queries, then the layers."""

    def __init__(self, num_layers: int, hidden_size: int, num_heads: int, intermediate_size: int, encoder_width: int):
        super().__init__()
        self.embeddings = nn.ModuleDict({"LayerNorm": nn.LayerNorm(hidden_size, eps=LAYER_NORM_EPS)})
        layers = [QFormerLayer(hidden_size, num_heads, intermediate_size, encoder_width) for _ in range(num_layers)]
        self.encoder = nn.ModuleDict({"layer": nn.ModuleList(layers)})

    def forward(self, queries: Tensor, features: Tensor) -> Tensor:
        queries = self.embeddings["LayerNorm"](queries)
        for layer in self.encoder["layer"]:
            queries = layer(queries, features)
        return queries


class AudioQFormerProjector(nn.Module):
    """The audio projector `qformer_<N>N_<L>L` (reference/encoders.md 4.3): learned queries read the
    position-embedded encoder features through a BERT-style Q-Former, then a linear map to the LLM width.

    Defaults are the released audio checkpoints' (BERT-base widths, 32 queries, 2 layers, 768 -> 4096)."""

    def __init__(
        self,
        num_query_tokens: int = 32,
        num_layers: int = 2,
        *,
        encoder_width: int = 768,
        out_features: int = 4096,
        hidden_size: int = 768,
        num_heads: int = 12,
        intermediate_size: int = 3072,
        num_positions: int = 1024,
    ):
        super().__init__()
        self.audio_query_tokens = nn.Parameter(torch.randn(1, num_query_tokens, hidden_size) * 0.02)
        self.audio_position_embedding = nn.Embedding(num_positions, encoder_width)
        self.audio_Qformer = nn.ModuleDict(
            {"bert": QFormerBert(num_layers, hidden_size, num_heads, intermediate_size, encoder_width)}
        )
        self.audio_llama_proj = nn.Linear(hidden_size, out_features)

    def forward(self, features: Tensor) -> Tensor:
        """Encoder features (B, T, encoder_width), T <= num_positions, to (B, num_query_tokens, out_features).
        No masking: every one of the T positions is attended to, as in the original."""
        batch, length = features.shape[:2]
        positions = self.audio_position_embedding.num_embeddings
        if length > positions:
            raise ValueError(f"{length} audio positions exceed the {positions} position embeddings")
        features = features + self.audio_position_embedding.weight[:length]
        queries = self.audio_query_tokens.expand(batch, -1, -1)
        return self.audio_llama_proj(self.audio_Qformer["bert"](queries, features))
