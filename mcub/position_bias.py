"""Position bias of a letter task's run: the letters answered against the gold letters, and whether correctness
depends on where the gold option sits (Pearson's chi-square test of homogeneity of accuracy across gold letters).

The test reads a model's right and wrong answers by gold letter, so a model that prefers a letter is flagged
whatever the gold distribution (it is right far more often when the gold is its letter), and a model that answers
uniformly at random is not (its accuracy is the same for every gold letter), however skewed the gold. Records of a
CircularEval run are taken as they are: each rotation is a record, so every item counts once at every gold letter.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from mcub.schema import PositionBias, Record
from mcub.stats import chi_square_homogeneity

LETTERS = string.ascii_uppercase
UNPARSEABLE = "unparseable"
ERROR = "error"


def position_bias(records: Iterable[Record]) -> PositionBias | None:
    """The position bias of a task's records (those with a gold answer); None unless every gold is a letter. The
    letters run from A to the last one a gold or an answer names (options always run A, B, C, ... from A). Only
    the gold, the answer read and the outcome of each record are read (what every view of a record holds)."""
    posed = [record for record in records if record.gold]
    if not posed or not all(len(record.gold) == 1 and record.gold in LETTERS for record in posed):
        return None
    columns = [answer_column(record) for record in posed]
    named = [record.gold for record in posed] + [column for column in columns if column in LETTERS]
    letters = list(LETTERS[: LETTERS.index(max(named)) + 1])
    gold = dict.fromkeys(letters, 0)
    answered = dict.fromkeys([*letters, UNPARSEABLE, ERROR], 0)
    right = dict.fromkeys(letters, 0)
    for record, column in zip(posed, columns, strict=True):
        gold[record.gold] += 1
        right[record.gold] += int(bool(record.correct))
        answered[column] += 1
    test = chi_square_homogeneity([[right[letter] for letter in letters],
                                   [gold[letter] - right[letter] for letter in letters]])  # fmt: skip
    return PositionBias(
        letters=letters,
        gold=gold,
        answered=answered,
        accuracy_by_gold={letter: round(100 * right[letter] / gold[letter], 4) for letter in letters if gold[letter]},
        statistic=significant(test.statistic) if test else None,
        df=test.df if test else None,
        p_value=significant(test.p_value) if test else None,
        min_expected=round(test.min_expected, 4) if test else None,
    )


def significant(value: float) -> float:
    """The value to 6 significant digits (a recomputation on another machine's libm gives the same figure)."""
    return float(f"{value:.6g}")


def answer_column(record: Record) -> str:
    """The letter a record answered, or `error` (no answer: data, media or model error) or `unparseable`."""
    if record.error:
        return ERROR
    if record.unparseable or len(record.extracted or "") != 1 or record.extracted not in LETTERS:
        return UNPARSEABLE
    return record.extracted
