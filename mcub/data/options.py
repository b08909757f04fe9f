"""Lettered options in a prompt ("A. x", "(B) y", "C) z"): one per line, else inline."""

from __future__ import annotations

import re
import string
from typing import TypeVar

LETTERS = string.ascii_uppercase
T = TypeVar("T")
# A mark's label: a capital letter, or what a numbering past Z writes (chr(ord("A") + 26) and on: [ \ ] ^ _ `);
# at the start of a line also two capitals (AA, AB, ...). Only A to Z can be posed; the rest are counted.
_LINE_LABEL = r"[A-Z]{2}|[A-`]"
_INLINE_LABEL = r"[A-`]"
_OPTION_LINE = re.compile(
    rf"^[ \t]*(?:\(({_LINE_LABEL})\)|({_LINE_LABEL})[.):])[ \t]*(\S.*?)[ \t]*$",
    re.MULTILINE,
)
_OPTION_INLINE = re.compile(rf"(?:^|(?<=\s))(?:\(({_INLINE_LABEL})\)|({_INLINE_LABEL})[.):])\s+")


def parse_options(prompt: str) -> dict[str, str]:
    """The options whose letters run A, B, C, ... (at most to Z) from the first 'A' on."""
    return read_options(prompt)[0]


def read_options(prompt: str) -> tuple[dict[str, str], int]:
    """The options (as `parse_options`), and how many option marks follow them that they leave out (a 27th
    option, a letter out of order)."""
    spans, left_out = read_option_spans(prompt)
    return {letter: prompt[start:end] for letter, (start, end) in spans.items()}, left_out


def read_option_spans(prompt: str) -> tuple[dict[str, tuple[int, int]], int]:
    """Where the text of each option of `read_options` lies in the prompt (start, end), and the marks left out."""
    lines = [(m.group(1) or m.group(2), m.span(3)) for m in _OPTION_LINE.finditer(prompt)]
    spans, left_out = _leading_run(lines)
    if len(spans) >= 2:
        return spans, left_out
    marks = list(_OPTION_INLINE.finditer(prompt))
    inline = []
    for index, mark in enumerate(marks):
        end = marks[index + 1].start() if index + 1 < len(marks) else len(prompt)
        inline.append((mark.group(1) or mark.group(2), _stripped_span(prompt, mark.end(), end)))
    return _leading_run(inline)


def _stripped_span(text: str, start: int, end: int) -> tuple[int, int]:
    """The span of `text[start:end].strip()` in `text`."""
    part = text[start:end]
    first = start + len(part) - len(part.lstrip())
    return first, max(first, end - (len(part) - len(part.rstrip())))


def _leading_run(pairs: list[tuple[str, T]]) -> tuple[dict[str, T], int]:
    """The options whose letters run A, B, C, ... from the first 'A' on, and the number of marks after them."""
    letters = [letter for letter, _ in pairs]
    if "A" not in letters:
        return {}, 0
    start = letters.index("A")
    options: dict[str, T] = {}
    for letter, value in pairs[start:]:
        if len(options) == len(LETTERS) or letter != LETTERS[len(options)]:
            break
        options[letter] = value
    return options, len(pairs) - start - len(options)
