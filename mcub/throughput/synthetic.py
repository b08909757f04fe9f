"""The bench's synthetic workloads: Llama shapes (Vicuna-7B, tiny), randomly initialised models and DAMC adapters on
the device, and the MCUB-4- and MUSIC-AVQA-shaped samples and batches (only shapes and routing matter for time)."""

from __future__ import annotations

from typing import Any

SHAPES = {
    "7b": {"hidden": 4096, "intermediate": 11008, "layers": 32, "heads": 32, "vocab": 32000, "rank": 128},
    "tiny": {"hidden": 64, "intermediate": 128, "layers": 2, "heads": 4, "vocab": 400, "rank": 4},
}
# One MCUB-4 DAMC sample: text, then image 586, audio 42, video 2066 and point 523 positions (5 + 5 local tokens
# each), with the text between and after them; 3,380 positions in all.
MCUB4_LAYOUT = [
    ("language", 40),
    ("image", 586),
    ("language", 5),
    ("audio", 42),
    ("language", 5),
    ("video", 2066),
    ("language", 5),
    ("point", 523),
    ("language", 108),
]
LAYOUTS = {"7b": MCUB4_LAYOUT, "tiny": [(route, -(-length // 10)) for route, length in MCUB4_LAYOUT]}
"""The synthetic sample of each shape: MCUB-4's spans, over ten (rounded up: 342 positions) at the tiny shape."""
# A MUSIC-AVQA video+audio prompt up to its question: the system text and "USER: ", the video block (as in MCUB-4),
# the audio block, the newline; then questions of these lengths (" ASSISTANT:" included). Over ten at the tiny shape.
MUSIC_AVQA_LAYOUT = [("language", 40), ("video", 2066), ("language", 2), ("audio", 42), ("language", 2)]
MUSIC_AVQA_QUESTION_TOKENS = (14, 18, 22, 26)
MUSIC_AVQA_SCALE = {"7b": 1, "tiny": 10}
EXPERTS = ("image", "video", "audio", "point")
POINTS = {"7b": 8192, "tiny": 1024}
"""Points per cloud at each shape (8,192: PointLLM's clouds)."""
REFERENCE_NAMES = {"image": "vision", "video": "video", "audio": "audio", "point": "point"}


def build_model(shape: dict[str, int], device: str, dtype):
    """A randomly initialised Llama of the given shape, directly on the device."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["heads"],
        max_position_embeddings=4096,
    )
    torch.manual_seed(0)
    with torch.device(device):
        llama = LlamaForCausalLM(config)
    return llama.to(dtype).eval()


def damc_adapters(llama, rank: int, device: str, dtype):
    """Four experts' language and modality LoRA factors on every projection, and DAMC routes (lambda 1/4)."""
    import torch

    from mcub.models.modelcompose.lora import LANGUAGE, TARGET_MODULES, LoraWeights, Route

    generator = torch.Generator(device=device).manual_seed(1)
    adapters = {}
    for index, layer in enumerate(llama.model.layers):
        for path in TARGET_MODULES:
            base = layer.get_submodule(path)
            own = {}
            for expert in EXPERTS:
                for name in (f"default-{REFERENCE_NAMES[expert]}", REFERENCE_NAMES[expert]):
                    a = torch.randn(rank, base.in_features, device=device, dtype=dtype, generator=generator) * 0.01
                    b = torch.randn(base.out_features, rank, device=device, dtype=dtype, generator=generator) * 0.01
                    own[name] = LoraWeights(a, b)
            adapters[(index, path)] = own
    routes = {LANGUAGE: Route(tuple((f"default-{REFERENCE_NAMES[e]}", 0.25 * 2.0) for e in EXPERTS))}
    routes |= {e: Route(((REFERENCE_NAMES[e], 2.0),)) for e in EXPERTS}
    return adapters, routes


def synthetic_spans(layout: list[tuple[str, int]], hidden: int, vocab: int, device: str, dtype, seed: int):
    import torch

    from mcub.models.modelcompose.llm import Span

    generator = torch.Generator().manual_seed(seed)
    spans = []
    for route, length in layout:
        if route == "language":
            spans.append(Span(route, token_ids=tuple(torch.randint(3, vocab, (length,), generator=generator).tolist())))
        else:
            block = (torch.randn(length, hidden, generator=generator) * 0.02).to(device=device, dtype=dtype)
            spans.append(Span(route, embeddings=block))
    return spans


def music_avqa_spans(shape_name: str, batch_size: int, hidden: int, vocab: int, device: str, dtype):
    """`batch_size` MUSIC-AVQA-shaped samples: each video's questions (four) share its video and audio blocks and the
    text before the question; every prompt starts with the same system text."""
    import torch

    from mcub.models.modelcompose.llm import Span

    scale = MUSIC_AVQA_SCALE[shape_name]
    layout = [(route, -(-length // scale)) for route, length in MUSIC_AVQA_LAYOUT]
    generator = torch.Generator().manual_seed(7)
    system = Span("language", token_ids=tuple(torch.randint(3, vocab, (layout[0][1],), generator=generator).tolist()))
    samples, video = [], []
    for row in range(batch_size):
        index, question = divmod(row, len(MUSIC_AVQA_QUESTION_TOKENS))
        if question == 0:
            video = [system, *synthetic_spans(layout[1:], hidden, vocab, device, dtype, seed=100 + index)]
        length = -(-MUSIC_AVQA_QUESTION_TOKENS[question] // scale)
        text = Span("language", token_ids=tuple(torch.randint(3, vocab, (length,), generator=generator).tolist()))
        samples.append([*video, text])
    return samples


def synthetic_batches(model, shape_name: str, batch_sizes: list[int], device: str, dtype) -> dict[int, Any]:
    """The packed batch of each size: samples 0 to size - 1 of the shape's synthetic layout (each batch holds the
    smaller batches' samples)."""
    shape, layout = SHAPES[shape_name], LAYOUTS[shape_name]
    return {
        size: model.pack(
            [synthetic_spans(layout, shape["hidden"], shape["vocab"], device, dtype, i) for i in range(size)]
        )
        for size in batch_sizes
    }
