"""Lettered options in a prompt ("A. x", "(B) y", "C) z"): one per line, else inline."""

from __future__ import annotations

import re
import string

LETTERS = string.ascii_uppercase
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
    lines = [(m.group(1) or m.group(2), m.group(3)) for m in _OPTION_LINE.finditer(prompt)]
    options, left_out = _leading_run(lines)
    if len(options) >= 2:
        return options, left_out
    marks = list(_OPTION_INLINE.finditer(prompt))
    inline = []
    for index, mark in enumerate(marks):
        end = marks[index + 1].start() if index + 1 < len(marks) else len(prompt)
        inline.append((mark.group(1) or mark.group(2), prompt[mark.end() : end].strip()))
    return _leading_run(inline)


def _leading_run(pairs: list[tuple[str, str]]) -> tuple[dict[str, str], int]:
    """The options whose letters run A, B, C, ... from the first 'A' on, and the number of marks after them."""
    letters = [letter for letter, _ in pairs]
    if "A" not in letters:
        return {}, 0
    start = letters.index("A")
    options: dict[str, str] = {}
    for letter, text in pairs[start:]:
        if len(options) == len(LETTERS) or letter != LETTERS[len(options)]:
            break
        options[letter] = text
    return options, len(pairs) - start - len(options)
