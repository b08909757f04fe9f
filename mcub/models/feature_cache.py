"""Encoder features on disk, keyed by the media file's content hash, the preprocessing and the encoder's weights,
so a run that changes only the composition (coefficients, experts' LoRA) skips every encoder, and the decoding
workers skip decoding: they hand the model the stored features (with the stored decoding provenance)."""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mcub.hashing import update_with_file
from mcub.media import MediaInput
from mcub.modalities import Modality

if TYPE_CHECKING:
    from torch import Tensor

FEATURES = "features"
"""The tensor name of a MediaInput whose encoder features came from the cache."""


def weights_fingerprint(path: Path, *extra: object) -> str:
    """SHA-256 over an encoder's weight file(s) (every file of a directory, by relative name) and `extra`."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        update_with_file(digest, file)
    digest.update(repr(extra).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class FeatureCache:
    """One safetensors file per (media content, preprocessing, encoder) under `directory`; `fingerprints` are
    the encoders' weight fingerprints by modality. Small and picklable: the decoding workers hold a copy."""

    directory: Path
    fingerprints: dict[Modality, str]

    def key(self, modality: Modality, sha256: str, preprocessing: str) -> str:
        identity = f"{sha256}\0{preprocessing}\0{self.fingerprints[modality]}"
        return hashlib.sha256(identity.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.safetensors"

    def load(self, modality: Modality, path: str, sha256: str, preprocessing: str) -> MediaInput | None:
        """The cached features of a media file as a MediaInput (`tensors[FEATURES]`, provenance as decoded, with
        `features: cache`), or None when this modality is not cached or the file has no entry. An entry that is
        unreadable or fails `entry_problem` is reported, then recomputed and rewritten: never used."""
        from safetensors import safe_open

        if modality not in self.fingerprints:
            return None
        key = self.key(modality, sha256, preprocessing)
        entry = self._path(key)
        if not entry.is_file():
            return None
        try:
            with safe_open(str(entry), framework="pt") as handle:
                metadata = handle.metadata() or {}
                provenance = json.loads(metadata["provenance"])
                features = handle.get_tensor(FEATURES)
        except Exception as error:  # noqa: BLE001 - any damage: the entry is derived data, recomputed and rewritten
            warnings.warn(f"{entry}: unreadable feature cache entry for {path} ({error}); encoding again", stacklevel=2)
            return None
        problem = entry_problem(metadata, provenance, features, key, sha256, preprocessing)
        if problem:
            warnings.warn(f"{entry}: feature cache entry for {path} {problem}; encoding again", stacklevel=2)
            return None
        return MediaInput(modality, path, {FEATURES: features}, {**provenance, "path": path, "features": "cache"})

    def store(self, media: MediaInput, features: Tensor) -> None:
        """Keep the encoder features of a decoded media file, with its decoding provenance and what `load` checks;
        features that are not all finite are not kept (a warning says so), nor those of an input a run condition
        changed after decoding (blank, noise: they are not the file's)."""
        import torch
        from safetensors.torch import save_file

        if "condition" in media.provenance:
            return
        key = self.key(media.modality, media.provenance["sha256"], media.provenance["preprocessing"])
        features = features.detach().to("cpu").contiguous()
        if not bool(torch.isfinite(features).all()):
            warnings.warn(f"{media.path}: non-finite encoder features are not kept in the feature cache", stacklevel=2)
            return
        entry = self._path(key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        partial = entry.with_suffix(".partial")
        metadata = {"provenance": json.dumps(media.provenance, sort_keys=True), "key": key, **_description(features)}
        save_file({FEATURES: features}, str(partial), metadata=metadata)
        partial.replace(entry)


def entry_problem(
    metadata: dict[str, str], provenance: dict, features: Tensor, key: str, sha256: str, preprocessing: str
) -> str | None:
    """Why a cache entry may not stand for the media file it was looked up for, or None: it must be filed under its
    own key, describe the same file content and preprocessing, and hold the features it describes (shape, dtype and
    a content hash), all finite."""
    import torch

    if metadata.get("key") != key:
        return "is filed under another key (a moved or swapped file)"
    if provenance.get("sha256") != sha256 or provenance.get("preprocessing") != preprocessing:
        return "describes another media content or preprocessing"
    stored = {name: metadata.get(name) for name in ("shape", "dtype", "features_sha256")}
    actual = _description(features)
    if stored != actual:
        changed = ", ".join(name for name in stored if stored[name] != actual[name])
        return f"holds features whose {changed} differ from the entry's record"
    if not bool(torch.isfinite(features).all()):
        return "holds non-finite features"
    return None


def _description(features: Tensor) -> dict[str, str]:
    """Shape, dtype and SHA-256 of the bytes of a contiguous CPU tensor, as safetensors metadata strings."""
    import torch

    data = features.reshape(-1).view(torch.uint8).numpy()
    return {
        "shape": json.dumps(list(features.shape)),
        "dtype": str(features.dtype).removeprefix("torch."),
        "features_sha256": hashlib.sha256(data).hexdigest(),
    }
