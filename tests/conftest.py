"""Test setup: no hub access, ever; helpers that write task data in the authors' format."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def question(sample_id: Any, prompt: str, **modal_inputs: list[str]) -> dict[str, Any]:
    """A question record as the authors write it."""
    return {
        "id": sample_id,
        "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": None}],
        "modal_inputs": modal_inputs,
    }


def answer(sample_id: Any, gold: str, **extra: Any) -> dict[str, Any]:
    """An answer record: the gold answer is the last turn's value."""
    return {
        "id": sample_id,
        "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": gold}],
        **extra,
    }


def write_json(path: Path, records: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    return path


def write_objaverse(data_root: Path, ids: list[str], reference: str = "A small model of object {object_id}.") -> None:
    """PointLLM's Objaverse evaluation layout: the ground-truth file and one 1024-point cloud per object."""
    import numpy as np

    clouds = data_root / "objaverse_data"
    clouds.mkdir(parents=True, exist_ok=True)
    records = []
    for index, object_id in enumerate(ids):
        cloud = np.random.default_rng(index).random((1024, 6), dtype=np.float32)
        np.save(clouds / f"{object_id}_8192.npy", cloud)
        turns = [
            {"from": "human", "value": "<point>\nWhat is this?"},
            {"from": "gpt", "value": reference.format(object_id=object_id)},
        ]
        records.append({"object_id": object_id, "conversations": turns})
    write_json(data_root / "anno_data" / "PointLLM_brief_description_val_200_GT.json", records)


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """An empty `data/` folder in the authors' layout (questions under data/test)."""
    root = tmp_path / "data"
    (root / "test").mkdir(parents=True)
    return root
