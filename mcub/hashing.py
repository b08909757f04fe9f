"""Content hashes of files (media identity, checkpoint and encoder weights)."""

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
