"""Point clouds: `.npy` (N x 6 xyz+rgb or N x 3) and `.ply`, kept as stored by default, as the reference does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mcub.errors import MediaError
from mcub.media import SignalEdit, check_file, edited

POINT_COUNT = 8192
RESAMPLING_SEED = 0


def decode_points(path: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The points as float32 (N, 3 or 6); PLY colours in 0-255 are scaled to 0-1 like PointLLM's npy files."""
    check_file(path)
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        points = _read_npy(path)
    elif suffix == ".ply":
        points = _read_ply(path)
    else:
        raise MediaError(path, f"unsupported point-cloud format {suffix!r} (use .npy or .ply)")
    if points.ndim != 2 or points.shape[1] not in (3, 6) or points.shape[0] == 0:
        raise MediaError(path, f"point array of shape {tuple(points.shape)}; expected (N, 6) xyz+rgb or (N, 3) xyz")
    if not np.isfinite(points).all():
        raise MediaError(path, "point array holds NaN or infinite values")
    return points.astype(np.float32, copy=False), {
        "format": suffix[1:],
        "count": int(points.shape[0]),
        "dims": int(points.shape[1]),
    }


def _read_npy(path: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise MediaError(path, f"undecodable .npy ({error})") from None
    if not np.issubdtype(array.dtype, np.number):
        raise MediaError(path, f"point array of dtype {array.dtype}; expected numbers")
    return array


def _read_ply(path: str) -> np.ndarray:
    from plyfile import PlyData

    try:
        vertex = PlyData.read(path)["vertex"]
        xyz = [np.asarray(vertex[axis], dtype=np.float32) for axis in ("x", "y", "z")]
        names = vertex.data.dtype.names
        if all(channel in names for channel in ("red", "green", "blue")):
            rgb = [np.asarray(vertex[channel], dtype=np.float32) / 255.0 for channel in ("red", "green", "blue")]
            return np.stack(xyz + rgb, axis=1)
    except (ValueError, KeyError, OSError, EOFError) as error:
        raise MediaError(path, f"undecodable .ply ({error})") from None
    return np.stack(xyz, axis=1)


def normalize_points(points: np.ndarray) -> np.ndarray:
    """PointLLM's `pc_norm`: xyz centred on the centroid and scaled into the unit sphere; colours unchanged."""
    xyz = points[:, :3] - points[:, :3].mean(axis=0)
    radius = float(np.sqrt((xyz**2).sum(axis=1)).max())
    if radius > 0:
        xyz = xyz / radius
    return np.concatenate([xyz, points[:, 3:]], axis=1).astype(np.float32)


def resample_points(points: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Exactly `count` points: unchanged if already so, else a seeded draw (with replacement only if too few)."""
    if points.shape[0] == count:
        return points, {"resampled": False}
    with_replacement = points.shape[0] < count
    generator = np.random.default_rng(seed)
    chosen = np.sort(generator.choice(points.shape[0], size=count, replace=with_replacement))
    return points[chosen], {
        "resampled": True,
        "resampled_from": int(points.shape[0]),
        "resampled_to": count,
        "sampling_seed": seed,
        "with_replacement": with_replacement,
    }


def _stored(path: str, edit: SignalEdit | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    points, provenance = decode_points(path)
    points = edited(points, edit, path)
    return {"points": torch.from_numpy(np.ascontiguousarray(points))}, {**provenance, "normalized": False}


def _pointllm_normalized(path: str, edit: SignalEdit | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    points, provenance = decode_points(path)
    points = edited(points, edit, path)
    normalized = normalize_points(points)
    return {"points": torch.from_numpy(normalized)}, {**provenance, "normalized": True}


def _stored_fixed_count(path: str, edit: SignalEdit | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    points, provenance = decode_points(path)
    points = edited(points, edit, path)
    points, sampling = resample_points(points, POINT_COUNT, RESAMPLING_SEED)
    return {"points": torch.from_numpy(np.ascontiguousarray(points))}, {**provenance, **sampling, "normalized": False}


PREPROCESSING = {
    "stored": _stored,
    "stored-8192": _stored_fixed_count,
    "pointllm-norm": _pointllm_normalized,
}
