"""Reading weight files safely: safetensors, or `torch.load(weights_only=True)`; never a pickle of objects."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from mcub.errors import CheckpointError


def find_weights_file(directory: Path, names: Sequence[str]) -> Path:
    """The first of `names` present in `directory`."""
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise CheckpointError(f"{directory}: no weights file (looked for {' or '.join(names)})")


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The named tensors of a `.safetensors` or torch file; anything else is a CheckpointError naming the file."""
    import pickle

    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as error:
        raise CheckpointError(f"{path}: unreadable weights ({type(error).__name__}: {error})") from None
    if not isinstance(loaded, dict) or not all(isinstance(key, str) for key in loaded):
        raise CheckpointError(f"{path}: holds a {type(loaded).__name__}, not a dict of named tensors")
    return loaded
