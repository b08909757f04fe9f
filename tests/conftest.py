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


AVQA_VIDEO_AUDIO = "avqa-video+audio"
"""The AVQA task whose question file `write_avqa` writes."""


def write_avqa(data_root: Path, prompts: list[str], golds: str) -> Path:
    """A hand-made AVQA task (its video+audio question file): one question per prompt, ids from 100, each on its own
    synthetic video and audio, gold letters `golds`."""
    from mcub.media import synthetic

    media = data_root / "avqa-media"
    media.mkdir(parents=True, exist_ok=True)
    questions, answers = [], []
    for index, (prompt, gold) in enumerate(zip(prompts, golds, strict=True)):
        video = synthetic.write_video(media / f"v{index}.mp4", 10 + index, 32, 24, 10)
        audio = synthetic.write_audio(media / f"a{index}.wav", 0.5 + 0.1 * index, 16_000, 1, 300.0 * (index + 1))
        questions.append(question(100 + index, prompt, video=[str(video)], audio=[str(audio)]))
        answers.append(answer(100 + index, gold))
    write_json(data_root / "test" / "avqa-test_mm_video+audio.json", questions)
    write_json(data_root / "test" / "avqa-test_mm_answer.json", answers)
    return data_root


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
