"""Run conditions: transforms of a task's samples applied at run time (`--condition drop:audio`), composable in the
order given, recorded on every record (`Record.condition`, `meta["condition"]`) and in the run identity. This module
holds the registry and the driver; the conditions themselves are in `inputs.py` (drop, blank, swap, shuffle-order,
noise) and `circular.py` (CircularEval rotations).

A condition's `apply` returns new samples; what it did for a sample goes under its spec in
`sample.meta["condition"]` (see `record_step`), which also holds the joined specs (`spec`), the run seed (`seed`),
the original sample id (`item`) and, for conditions that change decoded media, the edits of each media input
(`edits`, aligned with `sample.media`; the runner's workers apply them after decoding, see `inputs.signal_edit`)."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mcub.errors import McubError
from mcub.schema import Sample

if TYPE_CHECKING:
    from mcub.data import TaskData
    from mcub.tasks import TaskSpec

DEFAULT_CONDITION = "default"
"""`Record.condition` of a record made without conditions."""
CONDITION_KEY = "condition"
"""The key of `Sample.meta` (and `Record.meta`) that says what the conditions did for the sample."""


class ConditionError(McubError):
    """A condition spec is unknown or malformed, or a condition does not apply to a task."""


class Condition(ABC):
    """One transform of a task's samples. `spec` is its canonical text (`drop:audio`, `noise:audio=10`)."""

    spec: str
    edits_decoded_media: bool = False
    """True for conditions that change decoded media (blank, noise): only models whose workers decode media take
    them."""

    @abstractmethod
    def refusal(self, task: TaskSpec, samples: list[Sample]) -> str | None:
        """Why the condition does not apply to the task as its samples now are (None: it does)."""

    @abstractmethod
    def apply(self, samples: list[Sample], seed: int) -> list[Sample]:
        """The conditioned samples (the run seed seeds any draw)."""


ConditionFactory = Callable[[str | None], Condition]
"""Builds a condition from the text after `kind:` (None when the spec has no `:`); a ValueError for a bad one."""

CONDITIONS: dict[str, ConditionFactory] = {}
"""The condition kinds by name."""


def register_condition(kind: str) -> Callable[[ConditionFactory], ConditionFactory]:
    """Register a factory of conditions under `kind` (a decorator)."""

    def register(factory: ConditionFactory) -> ConditionFactory:
        if kind in CONDITIONS:
            raise ValueError(f"condition kind {kind!r} is registered twice")
        CONDITIONS[kind] = factory
        return factory

    return register


def parse_condition(spec: str) -> Condition:
    """The condition a spec names (`kind` or `kind:argument`); a ConditionError naming the spec and the known kinds
    for an unknown kind or a bad argument."""
    _load_kinds()
    kind, colon, argument = spec.strip().partition(":")
    known = ", ".join(sorted(CONDITIONS))
    if kind not in CONDITIONS:
        raise ConditionError(f"unknown condition {spec!r}: the kind {kind!r} is not one of {known}")
    try:
        return CONDITIONS[kind](argument if colon else None)
    except ValueError as error:
        raise ConditionError(f"condition {spec!r}: {error} (known kinds: {known})") from None


def canonical_specs(specs: Sequence[str]) -> list[str]:
    """The canonical text of each spec, in order (a ConditionError for a bad one, one given twice, or one after
    `circular`)."""
    canonical = [parse_condition(spec).spec for spec in specs]
    repeated = sorted({spec for spec in canonical if canonical.count(spec) > 1})
    if repeated:
        raise ConditionError(f"condition {', '.join(repeated)} is given more than once")
    if "circular" in canonical[:-1]:
        later = "+".join(canonical[canonical.index("circular") + 1 :])
        raise ConditionError(
            f"condition circular comes last (here {later} follows it): a condition after it would act on each "
            "rotation apart (another donor, permutation or noise per rotation), and the rotations of an item would "
            "no longer pose the same inputs"
        )
    return canonical


def condition_label(specs: Sequence[str]) -> str:
    """`Record.condition` of a run under `specs`: the canonical specs joined by `+`, or `default` without any."""
    return "+".join(specs) if specs else DEFAULT_CONDITION


def apply_conditions(conditions: Sequence[Condition], task: TaskSpec, samples: list[Sample], seed: int) -> list[Sample]:
    """The samples under each condition in turn; a ConditionError with the reason for the first that does not
    apply. Every sample (error samples too, which are left as they are) gets `meta["condition"]` with the joined
    specs, the seed and its original id (`item`)."""
    if not conditions:
        return samples
    label = condition_label([condition.spec for condition in conditions])
    current = [_started(sample, label, seed) for sample in samples]
    for condition in conditions:
        reason = condition.refusal(task, current)
        if reason is not None:
            raise ConditionError(f"condition {condition.spec} does not apply to task {task.name}: {reason}")
        current = condition.apply(current, seed)
    return current


def condition_task(data: TaskData, specs: Sequence[str], seed: int) -> TaskData:
    """A task's data with its samples under the conditions `specs` (the one place eval, score and validate apply
    them)."""
    if not specs:
        return data
    conditions = [parse_condition(spec) for spec in specs]
    return dataclasses.replace(data, samples=apply_conditions(conditions, data.task, data.samples, seed))


def edits_decoded_media(specs: Sequence[str]) -> list[str]:
    """The specs among `specs` whose conditions change decoded media."""
    return [spec for spec in specs if parse_condition(spec).edits_decoded_media]


def _started(sample: Sample, label: str, seed: int) -> Sample:
    meta = {**sample.meta, CONDITION_KEY: {"spec": label, "seed": seed, "item": sample.id}}
    return dataclasses.replace(sample, meta=meta)


def condition_meta(sample: Sample) -> dict[str, Any]:
    """What the conditions did for the sample (empty for a sample run without conditions)."""
    return sample.meta.get(CONDITION_KEY, {})


def record_step(sample: Sample, spec: str, details: dict[str, Any], **changes: Any) -> Sample:
    """The sample with `changes` (new prompt, media, id, ...) and `details` noted under `spec` in its
    `meta["condition"]`; `edits` in `changes` replace the media edits."""
    edits = changes.pop("edits", None)
    noted = {**condition_meta(sample), spec: details}
    if edits is not None:
        noted.pop("edits", None)
        if any(edits):
            noted["edits"] = edits
    return dataclasses.replace(sample, **changes, meta={**sample.meta, CONDITION_KEY: noted})


def media_edits(sample: Sample) -> list[list[dict[str, Any]]]:
    """The decoded-media edits of each of the sample's media inputs, in order (empty lists: none)."""
    return [list(steps) for steps in condition_meta(sample).get("edits", [[] for _ in sample.media])]


class _Circular(Condition):
    """CircularEval: a sample per cyclic rotation of a multiple-choice sample's options (`mcub.conditions.circular`)."""

    spec = "circular"

    def refusal(self, task: TaskSpec, samples: list[Sample]) -> str | None:
        from mcub.conditions.circular import refusal

        return refusal(task, samples)

    def apply(self, samples: list[Sample], seed: int) -> list[Sample]:
        from mcub.conditions.circular import circular_samples

        return circular_samples(samples)


@register_condition("circular")
def _circular(argument: str | None) -> Condition:
    if argument is not None:
        raise ValueError("circular takes no argument")
    return _Circular()


def _load_kinds() -> None:
    """Register the kinds defined in the modules of this package (imported on first use)."""
    import mcub.conditions.inputs  # noqa: F401
