"""Builds the bundled `mcub-sample` task (mcub/sample_data/data) deterministically.

Run `python tests/sample_builder.py mcub/sample_data/data` to regenerate it; tests check the committed
question and answer files against this builder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mcub.media import synthetic

QUESTION = "Which attribute do all of these inputs have in common?"
ITEMS = [
    ("mcub-sample-0", ["A synthetic test signal", "A dog barking", "A crowded street", "A mountain lake"], "A"),
    ("mcub-sample-1", ["A violin solo", "A synthetic test signal", "A red sports car", "A sandy beach"], "B"),
    ("mcub-sample-2", ["A thunderstorm", "A ticking clock", "A synthetic test signal", "A bird in flight"], "C"),
    ("mcub-sample-3", ["A football match", "A kitchen", "A marching band", "A synthetic test signal"], "D"),
    ("mcub-sample-4", ["A synthetic test signal", "A waterfall", "A city at night", "A cat purring"], "A"),
]


def build_sample(data_root: Path) -> None:
    """Write test/mcub-sample.json, test/mcub-sample-answer.json and the media under sample/."""
    media_dir = data_root / "sample"
    (data_root / "test").mkdir(parents=True, exist_ok=True)
    media_dir.mkdir(parents=True, exist_ok=True)
    questions, answers = [], []
    for index, (sample_id, options, gold) in enumerate(ITEMS):
        files = {
            "vision": synthetic.write_image(media_dir / f"image-{index}.png", 48, 32, seed=index),
            "audio": synthetic.write_audio(media_dir / f"audio-{index}.wav", 0.6, 16_000, 1, 220.0 * (index + 1)),
            "video": synthetic.write_video(media_dir / f"video-{index}.mp4", 12 + index, 64, 48, 12),
            "point": synthetic.write_points(media_dir / f"point-{index}.npy", 1024, 6, seed=index),
        }
        lettered = "\n".join(f"{chr(ord('A') + k)}. {text}" for k, text in enumerate(options))
        prompt = f"image: <image>\naudio: <audio>\nvideo: <video>\npoint: <point>\n{QUESTION}\n{lettered}"
        modal_inputs = {key: [f"data/sample/{path.name}"] for key, path in files.items()}
        questions.append(
            {
                "id": sample_id,
                "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": None}],
                "modal_inputs": modal_inputs,
            }
        )
        answers.append(
            {
                "id": sample_id,
                "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": gold}],
                "modal_inputs": modal_inputs,
            }
        )
    for name, records in (("mcub-sample.json", questions), ("mcub-sample-answer.json", answers)):
        (data_root / "test" / name).write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    build_sample(Path(sys.argv[1]))
