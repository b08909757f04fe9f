"""Tiny, deterministic Hugging Face models and tokenizers built on the spot (no download)."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "USER: Which attribute do all of these inputs have in common? ASSISTANT: A B C D",
    "What makes the sound? How many instruments are playing? two three yes no guitar piano",
]


def write_tiny_llama(directory: Path, seed: int = 0) -> Path:
    """A 2-layer Llama (hidden 32) with a byte-level BPE tokenizer, saved as a pretrained directory."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    wrapped.save_pretrained(directory)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(wrapped),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=wrapped.bos_token_id,
        eos_token_id=wrapped.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def force_greedy_chain(llama, chain: list[int], scale: float = 100.0) -> None:
    """Make greedy decoding after `chain[0]` produce `chain[1:]`: the input embedding of `chain[i]` becomes a large
    basis vector e_i and the LM head row of `chain[i + 1]` reads e_i, so (the layers adding little next to it) the
    last position's own token decides the next one. The chain's tokens must differ; its length at most the width."""
    import torch

    embeddings, head = llama.get_input_embeddings().weight, llama.get_output_embeddings().weight
    with torch.no_grad():
        for index, (token, following) in enumerate(zip(chain, chain[1:], strict=False)):
            embeddings[token] = 0.0
            embeddings[token, index] = scale
            head[following] = 0.0
            head[following, index] = scale
