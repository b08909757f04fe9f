"""Encoder features on disk, keyed by the media file's content hash, the preprocessing and the encoder's weights,
so a run that changes only the composition (coefficients, experts' LoRA) skips every encoder."""

from __future__ import annotations

import hashlib
from pathlib import Path

from torch import Tensor

from mcub.hashing import update_with_file
from mcub.media import MediaInput


def weights_fingerprint(path: Path, *extra: object) -> str:
    """SHA-256 over an encoder's weight file(s) (every file of a directory, by relative name) and `extra`."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        update_with_file(digest, file)
    digest.update(repr(extra).encode())
    return digest.hexdigest()


class FeatureCache:
    """One safetensors file per (media content, preprocessing, encoder) under `directory`."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.hits = 0
        self.misses = 0

    def key(self, media: MediaInput, encoder_fingerprint: str) -> str:
        identity = f"{media.provenance['sha256']}\0{media.provenance['preprocessing']}\0{encoder_fingerprint}"
        return hashlib.sha256(identity.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> Tensor | None:
        from safetensors.torch import load_file

        path = self._path(key)
        if not path.is_file():
            self.misses += 1
            return None
        self.hits += 1
        return load_file(str(path))["features"]

    def put(self, key: str, features: Tensor) -> None:
        from safetensors.torch import save_file

        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        save_file({"features": features.detach().to("cpu").contiguous()}, str(partial))
        partial.replace(path)
