"""The sha256 of the weight files a model description names, by role. A pretrained directory (an LLM, a HF encoder)
is identified by its small files (configuration, tokenizer, processor and chat template, shard index), which are
hashed in a moment; its big shards are not read again."""

from __future__ import annotations

from pathlib import Path

from mcub.hashing import file_sha256

SMALL_FILES = (
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "processor_config.json",
    "chat_template.json",
    "chat_template.jinja",
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


def small_file_hashes(role: str, directory: Path) -> dict[str, str]:
    """`{role}/{file}` -> sha256 of each of SMALL_FILES the directory holds."""
    return {f"{role}/{name}": file_sha256(directory / name) for name in SMALL_FILES if (directory / name).is_file()}


def weight_hashes(role: str, path: Path) -> dict[str, str]:
    """A weight file's sha256 under `role`, or a pretrained directory's small files under `role/<file>`."""
    return small_file_hashes(role, path) if path.is_dir() else {role: file_sha256(path)}
