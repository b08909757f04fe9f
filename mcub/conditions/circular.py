"""CircularEval: every cyclic rotation of a multiple-choice item's options against fixed letters.

Rotation r of an item with K options puts at letter i the option text that the item poses at letter (i + r) mod K,
rewrites those texts in the prompt where the options live in it (the option lines, or the inline marks), and moves
the gold letter with its text. Rotation 0 is the item as posed. The rotated samples' ids are `<id>@r<r>`; their
`meta["condition"]` names the item (`item`, as for every condition) and, under `circular`, the rotation and the
number of rotations."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mcub.conditions import ConditionError, record_step
from mcub.data.options import read_option_spans
from mcub.schema import Sample

if TYPE_CHECKING:
    from mcub.tasks import TaskSpec

SPEC = "circular"
_ROTATION_ID = re.compile(r"^(?P<item>.+)@r(?P<rotation>0|[1-9][0-9]*)$")


def rotation_id(item: str, rotation: int) -> str:
    return f"{item}@r{rotation}"


def split_rotation_id(sample_id: str) -> tuple[str, int]:
    """The item id and rotation of a rotated sample's id (`17@r2` -> ("17", 2))."""
    match = _ROTATION_ID.match(sample_id)
    if match is None:
        raise ConditionError(f"sample id {sample_id!r} is not a CircularEval id (<item>@r<rotation>)")
    return match["item"], int(match["rotation"])


def refusal(task: TaskSpec, samples: list[Sample]) -> str | None:
    """Why the task's options cannot be rotated (None when they can): only lettered options posed in the prompt."""
    if task.answer_type != "letter":
        kind = "open answers" if task.answer_type == "text" else "class options that its prompt does not list"
        return f"CircularEval rotates lettered options in the prompt, and task {task.name} has {kind}"
    return None


def rotation_count(meta: dict) -> int | None:
    """The number of rotations of its item that a rotated sample's (or record's) meta names (None: none named)."""
    return meta.get("condition", {}).get(SPEC, {}).get("of")


def circular_samples(samples: list[Sample]) -> list[Sample]:
    """Every rotation of every sample, item by item. A sample that cannot be posed (its `error` set) stays one
    sample, `<id>@r0`, that carries its error, so its item counts as wrong."""
    rotated = []
    for sample in samples:
        if sample.error is not None:
            rotated.append(record_step(sample, SPEC, {"rotation": 0, "of": 1}, id=rotation_id(sample.id, 0)))
            continue
        spans = option_spans(sample)
        rotated.extend(rotate(sample, spans, rotation) for rotation in range(len(spans)))
    return rotated


def option_spans(sample: Sample) -> dict[str, tuple[int, int]]:
    """Where the text of each of the sample's options lies in its prompt; a ConditionError naming the task and id
    when its options are not those the prompt poses."""
    spans, _ = read_option_spans(sample.prompt)
    posed = {letter: sample.prompt[start:end] for letter, (start, end) in spans.items()}
    if posed != sample.options:
        raise ConditionError(f"task {sample.task}, sample {sample.id}: its options {_listed(sample.options)} are not "
                             f"those its prompt poses ({_listed(posed)}), so they cannot be rotated in it")  # fmt: skip
    return spans


def rotate(sample: Sample, spans: dict[str, tuple[int, int]], rotation: int) -> Sample:
    """Rotation `rotation` of a sample whose options' texts lie at `spans` of its prompt."""
    count = len(spans)
    details = {"rotation": rotation, "of": count}
    if rotation == 0:
        return record_step(sample, SPEC, details, id=rotation_id(sample.id, 0))
    letters = list(sample.options)
    options = {letter: sample.options[letters[(index + rotation) % count]] for index, letter in enumerate(letters)}
    pieces, position = [], 0
    for letter, (start, end) in sorted(spans.items(), key=lambda item: item[1]):
        pieces += [sample.prompt[position:start], options[letter]]
        position = end
    prompt = "".join([*pieces, sample.prompt[position:]])
    answer = letters[(letters.index(sample.answer) - rotation) % count]
    return record_step(sample, SPEC, details, id=rotation_id(sample.id, rotation), prompt=prompt, options=options,
                       answer=answer)  # fmt: skip


def _listed(options: dict[str, str]) -> str:
    return ", ".join(f"{letter}. {text}" for letter, text in options.items()) or "none"
