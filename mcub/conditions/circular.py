"""CircularEval: every cyclic rotation of a multiple-choice item's options against fixed letters.

Rotation r of an item with K options puts at letter i the option text that the item poses at letter (i + r) mod K,
rewrites those texts in the prompt where the options live in it (the option lines, or the inline marks), and moves
the gold letter with its text. Rotation 0 is the item as posed. The rotated samples' ids are `<id>@r<r>`; their
`meta["condition"]` names the item, the rotation and the number of rotations."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING

from mcub.data.options import parse_options, read_option_spans
from mcub.schema import Sample

if TYPE_CHECKING:
    from mcub.tasks import TaskSpec

KIND = "circular"
_ROTATION_ID = re.compile(r"^(?P<item>.+)@r(?P<rotation>0|[1-9][0-9]*)$")


class CircularError(ValueError):
    """An item's options cannot be rotated as posed."""


def rotation_id(item: str, rotation: int) -> str:
    return f"{item}@r{rotation}"


def split_rotation_id(sample_id: str) -> tuple[str, int]:
    """The item id and rotation of a rotated sample's id (`17@r2` -> ("17", 2))."""
    match = _ROTATION_ID.match(sample_id)
    if match is None:
        raise CircularError(f"sample id {sample_id!r} is not a CircularEval id (<item>@r<rotation>)")
    return match["item"], int(match["rotation"])


def refusal(task: TaskSpec, samples: list[Sample]) -> str | None:
    """Why the task's options cannot be rotated (None when they can): only lettered options posed in the prompt."""
    if task.answer_type != "letter":
        kind = "open answers" if task.answer_type == "text" else "class options that its prompt does not list"
        return f"CircularEval rotates lettered options in the prompt, and task {task.name} has {kind}"
    if not any(sample.error is None for sample in samples):
        return f"CircularEval needs posed items, and task {task.name} has none"
    return None


def circular_samples(samples: list[Sample]) -> list[Sample]:
    """Every rotation of every sample, item by item. A sample that cannot be posed (its `error` set) stays one
    sample, `<id>@r0`, that carries its error, so its item counts as wrong."""
    rotated = []
    for sample in samples:
        count = len(sample.options) if sample.error is None else 1
        rotated.extend(rotate(sample, rotation, count) for rotation in range(count))
    return rotated


def rotate(sample: Sample, rotation: int, count: int) -> Sample:
    """Rotation `rotation` of `count` of a sample (0 < `count` is its number of options, or 1 for an unposed one)."""
    meta = {**sample.meta, "condition": {"kind": KIND, "item": sample.id, "rotation": rotation, "of": count}}
    if rotation == 0:
        return replace(sample, id=rotation_id(sample.id, 0), meta=meta)
    letters = list(sample.options)
    options = {letter: sample.options[letters[(index + rotation) % count]] for index, letter in enumerate(letters)}
    answer = letters[(letters.index(sample.answer) - rotation) % count]
    prompt = rotated_prompt(sample, options)
    return replace(sample, id=rotation_id(sample.id, rotation), prompt=prompt, options=options, answer=answer,
                   meta=meta)  # fmt: skip


def rotated_prompt(sample: Sample, options: dict[str, str]) -> str:
    """The sample's prompt with the text of each of its options replaced by `options`' text for that letter."""
    spans, _ = read_option_spans(sample.prompt)
    where = f"task {sample.task}, sample {sample.id}"
    if {letter: sample.prompt[start:end] for letter, (start, end) in spans.items()} != sample.options:
        raise CircularError(f"{where}: its options {_listed(sample.options)} are not those its prompt poses "
                            f"({_listed(parse_options(sample.prompt))}), so they cannot be rotated in it")  # fmt: skip
    pieces, position = [], 0
    for letter, (start, end) in sorted(spans.items(), key=lambda item: item[1]):
        pieces += [sample.prompt[position:start], options[letter]]
        position = end
    prompt = "".join([*pieces, sample.prompt[position:]])
    if parse_options(prompt) != options:
        raise CircularError(
            f"{where}: the rotated prompt poses the options {_listed(parse_options(prompt))}, not "
            f"{_listed(options)} (an option's text reads as option marks), so the item cannot be rotated"
        )
    return prompt


def _listed(options: dict[str, str]) -> str:
    return ", ".join(f"{letter}. {text}" for letter, text in options.items()) or "none"
