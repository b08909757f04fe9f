"""The input conditions: `drop:M` (M's placeholders and inputs removed), `blank:M` (a neutral input of the same
shape), `swap:M` (another sample's M input, by a seeded derangement), `shuffle-order` (the inputs permuted with their
placeholders), `noise:audio=SNR_DB` (seeded Gaussian noise at that SNR). The rules are in README.md ("Run
conditions")."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mcub.conditions import Condition, media_edits, record_step, register_condition
from mcub.modalities import MODALITIES, PLACEHOLDERS, Modality
from mcub.schema import Sample

if TYPE_CHECKING:
    from mcub.tasks import TaskSpec


def _modality(argument: str | None, kind: str) -> Modality:
    if argument not in MODALITIES:
        raise ValueError(f"{kind} takes a modality ({', '.join(MODALITIES)}), not {argument!r}")
    return argument


def _modality_refusal(task: TaskSpec, samples: list[Sample], modality: Modality) -> str | None:
    if modality not in task.modalities:
        return f"task {task.name} has no {modality} input"
    if not any(m == modality for sample in samples if sample.error is None for m, _ in sample.media):
        return f"no sample of task {task.name} carries a {modality} input any more"
    return None


def remove_placeholders(prompt: str, modality: Modality) -> str:
    """The prompt without `modality`'s placeholders: a line that holds nothing but such placeholders (and spaces)
    goes with its line break; elsewhere a placeholder goes with the spaces after it, or, at the end of a line,
    with the spaces before it. Every other character is kept."""
    token = re.escape(PLACEHOLDERS[modality])
    only = re.compile(rf"[ \t]*(?:{token}[ \t]*)+")
    kept = []
    for line in prompt.split("\n"):
        if line and only.fullmatch(line):
            continue
        kept.append(re.sub(rf"[ \t]*{token}[ \t]*$|{token}[ \t]*", "", line))
    return "\n".join(kept)


class Drop(Condition):
    """`drop:M`: M's placeholders and inputs removed, the prompt otherwise unchanged (see `remove_placeholders`)."""

    def __init__(self, modality: Modality):
        self.modality = modality
        self.spec = f"drop:{modality}"

    def refusal(self, task: TaskSpec, samples: list[Sample]) -> str | None:
        return _modality_refusal(task, samples, self.modality)

    def apply(self, samples: list[Sample], seed: int) -> list[Sample]:
        return [self._dropped(sample) if sample.error is None else sample for sample in samples]

    def _dropped(self, sample: Sample) -> Sample:
        kept = [index for index, (modality, _) in enumerate(sample.media) if modality != self.modality]
        removed = [path for modality, path in sample.media if modality == self.modality]
        edits = media_edits(sample)
        return record_step(
            sample,
            self.spec,
            {"removed": removed},
            prompt=remove_placeholders(sample.prompt, self.modality),
            media=tuple(sample.media[index] for index in kept),
            edits=[edits[index] for index in kept],
        )


@register_condition("drop")
def _drop(argument: str | None) -> Condition:
    return Drop(_modality(argument, "drop"))
