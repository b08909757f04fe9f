"""Content hashes of files (media identity, checkpoint and encoder weights), and seeds derived from names."""

from __future__ import annotations

import hashlib
from pathlib import Path


def update_with_file(digest, path: str | Path) -> None:
    """Feed a file's bytes into a hashlib digest, a block at a time."""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    update_with_file(digest, path)
    return digest.hexdigest()


def derived_seed(seed: int, *parts: str) -> int:
    """A 64-bit seed from a run seed and names (task, sample id, condition, projection...): the same on every
    machine and in every process (unlike `hash()`)."""
    text = "\0".join([str(seed), *parts])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
