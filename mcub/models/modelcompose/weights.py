"""Reading checkpoint files safely: JSON configs, and weights as safetensors or `torch.load(weights_only=True)`
(never a pickle of objects)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def read_json_object(path: Path, missing_hint: str) -> dict[str, Any]:
    """A JSON object file (a config.json); `missing_hint` says what the file should have been."""
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; {missing_hint}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: not JSON ({error})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: holds a {type(data).__name__}, not a JSON object")
    return data
