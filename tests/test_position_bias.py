"""Position bias: the chi-square survival function against closed forms and known values, the test of homogeneity on
a table worked by hand, and the position-bias figures of adapters that always answer "A" (flagged) and that answer
uniformly at random (not flagged, also when the gold letters are far from uniform), in metrics and in the run table."""

from __future__ import annotations

import math

import numpy as np
import pytest
from run_factory import record, write_run

from mcub.position_bias import position_bias
from mcub.results import read_summary, summary_table
from mcub.schema import Record, TaskMetrics
from mcub.scoring import task_metrics
from mcub.stats import chi_square_homogeneity, chi_square_sf, regularized_upper_gamma

LETTERS = "ABCD"
SKEWED_GOLD = [0.1, 0.2, 0.3, 0.4]


def closed_form_sf(x: float, df: int) -> float:
    """chi2.sf by the finite sums of Q(df/2, x/2): exp(-y) sum y^j / j! for even df, and for odd df
    erfc(sqrt y) + exp(-y) sum y^(j + 1/2) / Gamma(j + 3/2) (y = x/2)."""
    y = x / 2
    if df % 2 == 0:
        return math.exp(-y) * math.fsum(y**j / math.factorial(j) for j in range(df // 2))
    return math.erfc(math.sqrt(y)) + math.exp(-y) * math.fsum(
        y ** (j + 0.5) / math.gamma(j + 1.5) for j in range(df // 2)
    )


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 7, 10, 21, 40])
@pytest.mark.parametrize("x", [0.01, 0.5, 1.0, 2.5, 3.84, 7.81, 12.0, 30.0, 60.0])
def test_chi_square_sf_equals_the_closed_forms(x, df):
    assert chi_square_sf(x, df) == pytest.approx(closed_form_sf(x, df), rel=1e-12, abs=1e-300)


def test_chi_square_sf_known_values():
    assert round(chi_square_sf(3.84, 1), 5) == 0.05004
    assert round(chi_square_sf(7.81, 3), 4) == 0.0501
    assert chi_square_sf(2.0, 2) == pytest.approx(math.exp(-1), rel=1e-14)
    assert chi_square_sf(0.0, 3) == 1.0
    assert chi_square_sf(200.0, 3) == pytest.approx(closed_form_sf(200.0, 3), rel=1e-10)  # far tail, no cancellation
    assert regularized_upper_gamma(1.0, 5.0) == pytest.approx(math.exp(-5), rel=1e-14)
    with pytest.raises(ValueError, match="at least 1, not 0"):
        chi_square_sf(1.0, 0)


def test_homogeneity_of_a_table_worked_by_hand():
    # rows 30 and 70, columns 40 and 60 of 100: expected 12, 18, 28, 42; statistic 4/12 + 4/18 + 4/28 + 4/42
    test = chi_square_homogeneity([[10, 20], [30, 40]])
    assert test.statistic == pytest.approx(4 / 12 + 4 / 18 + 4 / 28 + 4 / 42, rel=1e-12)
    assert (test.df, test.min_expected) == (1, 12.0)
    assert test.p_value == pytest.approx(math.erfc(math.sqrt(test.statistic / 2)), rel=1e-12)
    # an empty column is left out (df 1, not 2); a table without two non-empty rows has no test
    assert chi_square_homogeneity([[10, 0, 20], [30, 0, 40]]).statistic == pytest.approx(test.statistic)
    assert chi_square_homogeneity([[5, 5], [0, 0]]) is None
    assert chi_square_homogeneity([[5, 0], [3, 0]]) is None


def letter_record(index: int, gold: str, answer: str | None, error: str | None = None) -> Record:
    """A first-character record of a 4-option letter task: `answer` None is an unparseable output."""
    output = answer or "I cannot tell"
    return record("t", index, True).model_copy(
        update={
            "id": str(index),
            "gold": gold,
            "output": output,
            "extracted": output[:1],
            "unparseable": answer is None,
            "correct": error is None and answer == gold,
            "error": error,
        }  # fmt: skip
    )


def skewed_golds(count: int, seed: int) -> list[str]:
    return list(np.random.default_rng(seed).choice(list(LETTERS), size=count, p=SKEWED_GOLD))


def test_an_always_a_model_is_flagged_whatever_the_gold_distribution():
    golds = skewed_golds(400, seed=1)
    bias = position_bias(letter_record(i, gold, "A") for i, gold in enumerate(golds))
    assert bias.letters == list(LETTERS)
    assert bias.gold == {letter: golds.count(letter) for letter in LETTERS}
    assert bias.answered == {"A": 400, "B": 0, "C": 0, "D": 0, "unparseable": 0, "error": 0}
    assert bias.accuracy_by_gold == {"A": 100.0, "B": 0.0, "C": 0.0, "D": 0.0}
    # every record of gold A right, every other wrong: the statistic is n, the 2 x 4 table's maximum
    assert (bias.statistic, bias.df) == (400.0, 3)
    assert bias.p_value < 1e-80


def test_a_uniform_random_model_is_not_flagged_even_when_the_gold_letters_are_skewed():
    golds = skewed_golds(400, seed=1)
    answers = np.random.default_rng(7).choice(list(LETTERS), size=400)
    bias = position_bias(
        letter_record(i, gold, str(answer)) for i, (gold, answer) in enumerate(zip(golds, answers, strict=True))
    )
    assert sum(bias.answered.values()) == 400 and bias.gold["D"] > 3 * bias.gold["A"]
    assert bias.p_value > 0.05
    # over 40 seeds the test flags about alpha of them (a true null): at most 6, where Binomial(40, 0.05) exceeds
    # 6 with probability 0.3%
    flagged = 0
    for seed in range(40):
        answers = np.random.default_rng(100 + seed).choice(list(LETTERS), size=200)
        records = [
            letter_record(i, gold, str(a))
            for i, (gold, a) in enumerate(zip(skewed_golds(200, seed), answers, strict=True))
        ]
        flagged += position_bias(records).p_value < 0.05
    assert flagged <= 6


def test_unparseable_and_error_records_have_their_own_columns_and_count_as_wrong():
    records = [
        letter_record(0, "A", "A"),
        letter_record(1, "B", None),
        letter_record(2, "B", "B", error="media error: x.wav: no such file"),
        letter_record(3, "C", "C"),
        letter_record(4, "D", "Q"),  # a first character that is no option is unparseable
    ]
    records[4] = records[4].model_copy(update={"unparseable": True})
    bias = position_bias(records)
    assert bias.answered == {"A": 1, "B": 0, "C": 1, "D": 0, "unparseable": 2, "error": 1}
    assert bias.accuracy_by_gold == {"A": 100.0, "B": 0.0, "C": 100.0, "D": 0.0}
    assert bias.gold == {"A": 1, "B": 2, "C": 1, "D": 1}


def test_the_letters_run_from_a_to_the_last_named_and_only_gold_answer_and_outcome_are_read():
    records = [letter_record(0, "A", "C"), letter_record(1, "B", "B")]
    # the options are not read (a resumed run's record view holds none): the columns run A to C, the last named
    bias = position_bias(r.model_copy(update={"options": {}}) for r in records)
    assert bias.letters == ["A", "B", "C"]
    assert bias.answered == {"A": 0, "B": 1, "C": 1, "unparseable": 0, "error": 0}
    assert bias.gold == {"A": 1, "B": 1, "C": 0}


def test_tasks_without_lettered_options_have_no_position_bias_and_all_wrong_has_no_test():
    open_answer = record("t", 0, True).model_copy(update={"options": {}, "gold": "two"})
    classes = record("t", 1, True).model_copy(update={"options": {"0": "airplane", "1": "bed"}, "gold": "1"})
    assert position_bias([open_answer, classes]) is None
    assert task_metrics(["0"], {"0": open_answer}, [], 0).position_bias is None
    wrong = position_bias(letter_record(i, LETTERS[i % 4], "Z") for i in range(8))
    assert (wrong.statistic, wrong.df, wrong.p_value) == (None, None, None)


def test_metrics_of_summaries_written_before_these_fields_still_read():
    old = {"n": 2, "correct": 1, "accuracy": 50.0, "ci_low": 0.0, "ci_high": 100.0, "unparseable": 0, "missing": 0,
           "errors": 0}  # fmt: skip
    metrics = TaskMetrics.model_validate(old)
    assert (metrics.position_bias, metrics.circular, metrics.original_order) == (None, None, None)


def test_the_run_table_shows_the_position_bias_of_a_letter_task(tmp_path):
    # run_factory's record i has gold ABCD[i % 4] and answers it when right, else the next letter
    run = write_run(tmp_path / "run", {"t": [True, False, True, False, True, True, True, True]})
    metrics = read_summary(run).tasks["t"].metrics
    bias = metrics.position_bias
    assert bias.gold == {"A": 2, "B": 2, "C": 2, "D": 2}
    assert bias.accuracy_by_gold == {"A": 100.0, "B": 50.0, "C": 100.0, "D": 50.0}
    expected = chi_square_homogeneity([[2, 1, 2, 1], [0, 1, 0, 1]])  # expected counts 1.5 and 0.5 per letter
    assert (bias.statistic, bias.df, bias.min_expected) == (pytest.approx(8 / 3, rel=1e-5), 3, 0.5)
    assert bias.p_value == pytest.approx(expected.p_value, rel=1e-5)
    assert metrics.circular is None and metrics.original_order is None
    table = summary_table(read_summary(run))
    assert (
        f"| t | A:2 B:2 C:2 D:2 | A:3 B:1 C:3 D:1 unparseable:0 error:0 | A:100.00 B:50.00 C:100.00 D:50.00 | "
        f"{bias.statistic:.2f} (3) | {bias.p_value:.3g} |"
    ) in table
