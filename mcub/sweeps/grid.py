"""The grid of a sweep: axes `KEY=VALUES` over model arguments (`KEY` exactly a `--model-arg` key; `VALUES`
`start:stop:step`, stop included, in decimal arithmetic, or a comma list of YAML scalars) and their cartesian
product in grid order: the first axis varies slowest, as nested loops in the order the axes were given."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from mcub.errors import McubError
from mcub.models.base import nest_model_args

MAX_POINTS = 1000
"""More points than this is taken for a mistyped step, not a sweep."""
NAME_CHARACTERS = re.compile(r"[A-Za-z0-9._+-]+")
"""What a key or a value may be written with, as it names the point's run directory."""


class GridError(McubError):
    """A `--grid` axis is malformed."""


@dataclass(frozen=True)
class Axis:
    """One `--grid` axis: its key as given, its values (numbers, or the YAML scalars of a list) and their labels
    (the decimal text of a range, the text of a list item), which name the points."""

    key: str
    values: tuple[Any, ...]
    labels: tuple[str, ...]

    @property
    def path(self) -> tuple[str, ...]:
        return argument_path(self.key)


@dataclass(frozen=True)
class Point:
    """One point of the grid: a value per axis (flat `--model-arg` keys), named `key=label,key=label`."""

    values: dict[str, Any]
    labels: dict[str, str]

    @property
    def name(self) -> str:
        return ",".join(f"{key}={label}" for key, label in self.labels.items())

    def model_args(self) -> dict[str, Any]:
        """The point's values as nested model arguments (`lambda.image` -> `{lambdas: {image: ...}}`)."""
        return nest_model_args(self.values)


def argument_path(key: str) -> tuple[str, ...]:
    """The argument a `--model-arg` key sets, as its path in the nested arguments (aliases applied)."""
    nested: Any = nest_model_args({key: None})
    path = []
    while isinstance(nested, dict):
        [(name, nested)] = nested.items()
        path.append(name)
    return tuple(path)


def parse_axis(text: str) -> Axis:
    """`KEY=start:stop:step` or `KEY=v1,v2,...` as an Axis; a GridError names the flag, the text and the problem."""
    key, sep, values = text.partition("=")
    key, values = key.strip(), values.strip()
    if not sep or not key or not values:
        raise GridError(f"--grid {text!r}: not KEY=start:stop:step or KEY=v1,v2,...")
    if not NAME_CHARACTERS.fullmatch(key) or "" in key.split("."):
        raise GridError(f"--grid {text!r}: {key!r} is not a model argument key (names joined by '.')")
    try:
        if values.count(":") == 2 and "," not in values:
            labels, parsed = _decimal_range(values)
        else:
            labels, parsed = _listed(values)
    except ValueError as error:
        raise GridError(f"--grid {text!r}: {error}") from None
    for label in labels:
        if not NAME_CHARACTERS.fullmatch(label):
            raise GridError(
                f"--grid {text!r}: value {label!r} cannot name a run directory (letters, digits and . _ + - only)"
            )
    return Axis(key, tuple(parsed), tuple(labels))


def _decimal_range(text: str) -> tuple[list[str], list[Any]]:
    """The values of `start:stop:step`, stop included when the steps reach it exactly; integers when all three are
    written as integers."""
    try:
        start, stop, step = (Decimal(part.strip()) for part in text.split(":"))
    except InvalidOperation:
        raise ValueError("start, stop and step must be numbers") from None
    if not all(number.is_finite() for number in (start, stop, step)):
        raise ValueError("start, stop and step must be finite numbers")
    if step <= 0:
        raise ValueError(f"the step {step} is not positive")
    if start > stop:
        raise ValueError(f"start {start} is above stop {stop}")
    count = int((stop - start) // step) + 1
    if count > MAX_POINTS:
        raise ValueError(f"{count} values, more than {MAX_POINTS}; a larger step?")
    numbers = [start + index * step for index in range(count)]
    integers = all(number.as_tuple().exponent >= 0 for number in (start, stop, step))
    labels = [format(number.normalize(), "f") for number in numbers]
    return labels, [int(number) if integers else float(number) for number in numbers]


def _listed(text: str) -> tuple[list[str], list[Any]]:
    """The items of `v1,v2,...`, each read as a YAML scalar (as `--model-arg` reads its value)."""
    import yaml

    labels = [item.strip() for item in text.split(",")]
    if "" in labels:
        raise ValueError("an empty value in the list")
    values = []
    for label in labels:
        try:
            value = yaml.safe_load(label)
        except yaml.YAMLError:
            raise ValueError(f"value {label!r} is not a YAML scalar") from None
        if isinstance(value, dict | list) or value is None:
            raise ValueError(f"value {label!r} is not a number, a boolean or a word")
        if any(value == earlier and isinstance(value, bool) == isinstance(earlier, bool) for earlier in values):
            raise ValueError(f"value {label!r} is given twice")
        values.append(value)
    return labels, values


def grid_points(axes: list[Axis]) -> list[Point]:
    """Every combination of the axes' values, in grid order; axes that set the same argument, or one inside
    another's, are a GridError."""
    for first, second in itertools.combinations(axes, 2):
        shorter = min(len(first.path), len(second.path))
        if first.path[:shorter] == second.path[:shorter]:
            raise GridError(f"--grid {first.key} and --grid {second.key} set the same argument")
    count = 1
    for axis in axes:
        count *= len(axis.values)
    if count > MAX_POINTS:
        raise GridError(f"--grid: {count} points, more than {MAX_POINTS}")
    return [
        Point(
            {axis.key: value for axis, (value, _) in zip(axes, combination, strict=True)},
            {axis.key: label for axis, (_, label) in zip(axes, combination, strict=True)},
        )
        for combination in itertools.product(*(list(zip(axis.values, axis.labels, strict=True)) for axis in axes))
    ]
