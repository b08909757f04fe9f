"""tiny-damc: a tiny Vicuna-like base with its SentencePiece tokenizer, four DAMC expert checkpoints in exactly
the released layout (same config fields, same key names, tiny sizes) and tiny encoders in their original file
formats, generated deterministically on first use into a cache directory. Tests and the offline demo use it."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mcub.modalities import Modality
from mcub.models.modelcompose.arguments import ModelComposeArguments, TinyDamcArguments
from mcub.models.modelcompose.checkpoint import ENCODER_FIELDS, PROJECTOR_FIELDS, REFERENCE_NAME, SELECT_LAYER_FIELDS
from mcub.models.modelcompose.lora import TARGET_MODULES

if TYPE_CHECKING:
    from mcub.models.base import Runtime
    from mcub.models.modelcompose.model import ModelComposeModel

TINY_VERSION = 1
DEFAULT_CACHE = Path.home() / ".cache" / "mcub" / f"tiny-damc-v{TINY_VERSION}"
HIDDEN, INTERMEDIATE, LAYERS, HEADS = 64, 128, 2, 4
LORA_R, LORA_ALPHA, LOCAL_TOKENS = 4, 8, 5
ENCODER_WIDTH = 32
VIT_ENCODER = {"hidden_size": ENCODER_WIDTH, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
CLIP_PATCH, VIDEO_PATCH = 48, 56
BEATS_ENCODER = {
    "embed_dim": ENCODER_WIDTH,
    "encoder_layers": 1,
    "encoder_embed_dim": ENCODER_WIDTH,
    "encoder_ffn_embed_dim": 64,
    "encoder_attention_heads": 2,
    "conv_pos": 16,
    "conv_pos_groups": 4,
}
POINT_ENCODER = {"trans_dim": 32, "depth": 1, "num_heads": 2, "group_size": 8, "num_group": 32, "encoder_dims": 32}
PROJECTOR_KIND: dict[Modality, str] = {
    "image": "mlp2x_gelu",
    "video": "mlp2x_gelu",
    "audio": "qformer_4N_1L",
    "point": "mlp2x_gelu",
}
# Where the authors' train scripts put the encoders; the model YAML or --model-arg points elsewhere.
AUTHORS_ENCODER_PATH: dict[Modality, str] = {
    "image": "model/clip-vit-large-patch14-336",
    "video": "model/LanguageBind_Video_merge",
    "audio": "model/beats/BEATs_iter3_plus_AS2M.pt",
    "point": "model/PointLLM/point_bert_v1.2.pt",
}
ENCODER_FILES: dict[Modality, str] = {
    "image": "clip",
    "video": "languagebind",
    "audio": "beats.pt",
    "point": "pointbert.pt",
}
CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "USER: image: audio: video: point: Which attribute do all of these inputs have in common? ASSISTANT: A B C D",
    "A synthetic test signal, A dog barking, A crowded street, A mountain lake, A violin solo, A red sports car",
    "A sandy beach, A thunderstorm, A ticking clock, A bird in flight, A football match, A kitchen, A marching band",
    "A waterfall, A city at night, A cat purring. What makes the sound? How many instruments are playing? 0 1 2 3",
]


def tiny_damc_layout(cache_dir: Path = DEFAULT_CACHE) -> dict[str, Any]:
    """The tiny model's files (generated if absent): model arguments for the modelcompose adapter."""
    if not (cache_dir / "complete").is_file():
        cache_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tiny-damc-", dir=cache_dir.parent))
        write_tiny_damc(staging)
        (staging / "complete").write_text(f"tiny-damc v{TINY_VERSION}\n")
        try:
            staging.rename(cache_dir)
        except OSError:  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
    return {
        "base": str(cache_dir / "base"),
        "experts": {m: str(cache_dir / f"multimodal-tiny-{REFERENCE_NAME[m]}-damc") for m in PROJECTOR_KIND},
        "encoders": {m: str(cache_dir / name) for m, name in ENCODER_FILES.items()},
        "point_encoder": dict(POINT_ENCODER),
    }


def write_tiny_damc(root: Path) -> None:
    write_tiny_base(root / "base")
    write_tiny_encoders(root)
    for seed, modality in enumerate(PROJECTOR_KIND):
        write_tiny_expert(root / f"multimodal-tiny-{REFERENCE_NAME[modality]}-damc", modality, "damc", seed=seed)


def write_tiny_base(directory: Path) -> None:
    """A 2-layer Llama (hidden 64) and a Llama-like SentencePiece tokenizer.model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    train_llama_like_tokenizer(directory, CORPUS)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=_vocab_size(directory),
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(directory)


def train_llama_like_tokenizer(directory: Path, corpus: list[str], extra_pieces: int = 0) -> Path:
    """`directory/tokenizer.model`: a SentencePiece BPE of about 400 learned pieces set up like Llama's (byte
    fallback, dummy prefix, whitespace kept as is, digits split, UNK 0, BOS 1, EOS 2), trained deterministically
    on `corpus`; `extra_pieces` placeholder pieces pad the vocabulary towards a real LLM's size."""
    import sentencepiece

    directory.mkdir(parents=True, exist_ok=True)
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_prefix=str(directory / "tokenizer"),
        model_type="bpe",
        vocab_size=400 + extra_pieces,
        user_defined_symbols=[f"<piece{index}>" for index in range(extra_pieces)],
        hard_vocab_limit=False,
        byte_fallback=True,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        split_digits=True,
        normalization_rule_name="identity",
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    (directory / "tokenizer.vocab").unlink()
    return directory / "tokenizer.model"


def _vocab_size(directory: Path) -> int:
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=str(directory / "tokenizer.model")).vocab_size()


def write_tiny_encoders(root: Path) -> None:
    """Tiny CLIP (HF directory), LanguageBind video (HF directory), BEATs (.pt with cfg) and Point-BERT (.pt)."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from mcub.models.modelcompose.encoders.beats import FIXED_CFG, BEATs, BEATsConfig
    from mcub.models.modelcompose.encoders.languagebind_video import LanguageBindVideoConfig, LanguageBindVideoTower
    from mcub.models.modelcompose.encoders.pointbert import PointBERT, PointBERTConfig

    torch.manual_seed(10)
    CLIPVisionModel(CLIPVisionConfig(**VIT_ENCODER, image_size=336, patch_size=CLIP_PATCH)).save_pretrained(
        root / "clip"
    )
    torch.manual_seed(11)
    video = LanguageBindVideoConfig(
        **VIT_ENCODER, image_size=224, patch_size=VIDEO_PATCH, add_time_attn=True, num_frames=8
    )
    (root / "languagebind").mkdir(parents=True, exist_ok=True)
    (root / "languagebind" / "config.json").write_text(json.dumps({"vision_config": asdict(video)}, indent=2))
    state = {f"vision_model.{k}": v.contiguous() for k, v in LanguageBindVideoTower(video).state_dict().items()}
    save_file(state, str(root / "languagebind" / "model.safetensors"))
    torch.manual_seed(12)
    beats = BEATsConfig(**BEATS_ENCODER)
    torch.save({"cfg": {**asdict(beats), **FIXED_CFG}, "model": BEATs(beats).state_dict()}, root / "beats.pt")
    torch.manual_seed(13)
    torch.save(PointBERT(PointBERTConfig(**POINT_ENCODER)).state_dict(), root / "pointbert.pt")


def write_tiny_expert(directory: Path, modality: Modality, kind: str, seed: int, lora_r: int = LORA_R) -> None:
    """A unimodal expert as the authors' training writes it: config.json and adapter_model.bin holding the LoRA
    factors (`default`, plus the modality's own for DAMC), the projector and, for DAMC, 5+5 local tokens."""
    from mcub.models.modelcompose.projectors import build_projector

    directory.mkdir(parents=True, exist_ok=True)
    reference = REFERENCE_NAME[modality]
    damc = kind == "damc"
    generator = torch.Generator().manual_seed(100 + seed)
    widths = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (HIDDEN, HIDDEN),
              "self_attn.v_proj": (HIDDEN, HIDDEN), "self_attn.o_proj": (HIDDEN, HIDDEN),
              "mlp.gate_proj": (HIDDEN, INTERMEDIATE), "mlp.up_proj": (HIDDEN, INTERMEDIATE),
              "mlp.down_proj": (INTERMEDIATE, HIDDEN)}  # fmt: skip
    tensors: dict[str, torch.Tensor] = {}
    for layer in range(LAYERS):
        for module in TARGET_MODULES:
            fan_in, fan_out = widths[module]
            for adapter in ("default", reference) if damc else ("default",):
                prefix = f"model.layers.{layer}.{module}"
                tensors[f"{prefix}.lora_A.{adapter}.weight"] = torch.randn(lora_r, fan_in, generator=generator) * 0.1
                tensors[f"{prefix}.lora_B.{adapter}.weight"] = torch.randn(fan_out, lora_r, generator=generator) * 0.1
    torch.manual_seed(200 + seed)
    projector = build_projector(PROJECTOR_KIND[modality], ENCODER_WIDTH, HIDDEN)
    tensors |= {f"model.modal_projectors.{reference}.{k}": v for k, v in projector.state_dict().items()}
    if damc:
        for side in ("prefix", "suffix"):
            for name in ("default", reference):
                tensors[f"{side}_tokens.{name}"] = torch.randn(1, LOCAL_TOKENS, HIDDEN, generator=generator) * 0.1
    torch.save(tensors, directory / "adapter_model.bin")
    kind_field, width_field = PROJECTOR_FIELDS[modality]
    config = {
        "architectures": ["MultimodalLlamaForCausalLM"],
        "model_type": "multimodal",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "lora_strategy": "modal+language" if damc else "same",
        "lora_r": lora_r,
        "lora_alpha": LORA_ALPHA,
        "lora_dropout": 0.05,
        "local_prefix_tokens": LOCAL_TOKENS if damc else 0,
        "local_suffix_tokens": LOCAL_TOKENS if damc else 0,
        ENCODER_FIELDS[modality][0]: AUTHORS_ENCODER_PATH[modality],
        kind_field: PROJECTOR_KIND[modality],
        width_field: ENCODER_WIDTH,
        "image_aspect_ratio": "pad",
    }
    if modality in SELECT_LAYER_FIELDS:
        config[SELECT_LAYER_FIELDS[modality]] = -2
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def build_tiny_damc(runtime: Runtime, arguments: TinyDamcArguments) -> ModelComposeModel:
    """The `modelcompose-tiny` model: the tiny files (made on first use) as a ModelComposeModel."""
    from mcub.models.modelcompose.model import ModelComposeModel

    layout = tiny_damc_layout(Path(arguments.cache_dir).expanduser() if arguments.cache_dir else DEFAULT_CACHE)
    given = arguments.model_dump(
        include={"composition", "composition_args", "lambdas", "feature_cache", "share_prefixes", "route_weights"}
    )
    composed = ModelComposeArguments(**given, **layout)
    return ModelComposeModel(runtime, composed)
