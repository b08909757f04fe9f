import numpy as np
import pytest

from mcub.scoring import (
    authors_postprocess,
    bootstrap_accuracy,
    breakdown_label,
    evalai_normalize,
    extract_choice,
    group_metrics,
    score_generated,
    score_loglik,
    score_paper,
    task_metrics,
)

OPTIONS = {"A": "a dog", "B": "street scenes", "C": "rain", "D": "music"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Two.", "2"),
        ("The answer is: two guitars!", "answer is: 2 guitars"),
        ("three", "3"),
        ("None of them", "0 of them"),
        ("rock-n-roll", "rock n roll"),  # a glued mark becomes a space
        ("yes - maybe", "yes maybe"),  # a spaced mark is removed
        ("It's the piano", "it 's piano"),
        ("dont know", "don't know"),
        ("3.5 metres.", "3.5 metres"),
        ("Yes,\tit\nis", "yes it is"),
        ("A", ""),
    ],
)
def test_evalai_normalisation(text, expected):
    assert evalai_normalize(text) == expected


def test_evalai_quirks_are_reproduced():
    # the malformed look-behind: every period not followed by a digit goes, even after a digit
    assert evalai_normalize("5. 6.7") == "5 6.7"
    # re.UNICODE passed as the count: only the first 32 such periods are removed
    assert evalai_normalize("." * 40) == "." * 8


def test_authors_postprocess():
    assert authors_postprocess("  B. a dog </s> ") == "B. a dog"
    assert authors_postprocess("B</s></s>") == "B</s>"


@pytest.mark.parametrize(
    ("output", "key", "method"),
    [
        ("B", "B", "letter"),
        ("(b)", "B", "letter"),
        ("c.", "C", "letter"),
        ("  D", "D", "letter"),
        ("B. street scenes", "B", "leading-letter"),
        ("(C) rain", "C", "leading-letter"),
        ("A dog", "A", "option-text"),
        ("Street scenes.", "B", "option-text"),
        ("Answer: C", "C", "answer-phrase"),
        ("The answer is (d).", "D", "answer-phrase"),
        ("The answer is a cat", None, "unparseable"),
        ("I believe (B) fits best", "B", "parenthesised-letter"),
        ("It is rain, clearly.", "C", "option-text-mentioned"),
        ("Both rain and music", None, "unparseable"),
        ("", None, "unparseable"),
    ],
)
def test_extract_choice_letters(output, key, method):
    assert extract_choice(output, OPTIONS) == (key, method)


def test_extract_choice_classes():
    classes = {"0": "airplane", "23": "night stand", "33": "table", "36": "tv stand"}
    assert extract_choice("Airplane", classes) == ("0", "option-text")
    assert extract_choice("night_stand", classes) == ("23", "option-text")
    assert extract_choice("This is a 3D model of a night stand.", classes) == ("23", "option-text-mentioned")
    assert extract_choice("a table or an airplane", classes) == (None, "unparseable")


def test_paper_scoring_is_first_character_exact_or_evalai():
    assert score_paper("B", "B", OPTIONS, "first-character").correct
    assert not score_paper("b", "B", OPTIONS, "first-character").correct
    outcome = score_paper("(B)", "B", OPTIONS, "first-character")
    assert (outcome.extracted, outcome.correct, outcome.unparseable) == ("(", False, True)
    assert score_paper("Two", "two", {}, "evalai-exact").correct
    assert not score_paper("There are two instruments", "two", {}, "evalai-exact").correct


def test_generate_and_loglik_scoring():
    assert score_generated("The answer is (B).", "B", OPTIONS).correct
    assert score_generated("The answer is two.", "two", {}).correct
    assert score_generated("xyz", "B", OPTIONS).unparseable
    best = score_loglik({"A": -3.0, "B": -1.0, "C": -1.0, "D": -9.0}, "B")
    assert (best.extracted, best.correct, best.method) == ("B", True, "loglik-argmax")


def test_bootstrap_is_seeded_binomial_and_brackets_the_estimate():
    first = bootstrap_accuracy([(200, 130)], seed=1)
    assert first == bootstrap_accuracy([(200, 130)], seed=1)
    low, high = first
    assert low < 65.0 < high
    # the normal-approximation interval of a proportion is close for n = 200
    half = 1.96 * np.sqrt(0.65 * 0.35 / 200) * 100
    assert abs((high - low) / 2 - half) < 1.0
    assert bootstrap_accuracy([(0, 0)], seed=1) is None
    assert bootstrap_accuracy([(10, 10)], seed=1) == (100.0, 100.0)


def _record(correct, unparseable=False, error=None, **meta):
    from run_factory import record

    return record("t", 0, True).model_copy(
        update={"correct": correct, "unparseable": unparseable, "error": error, "meta": meta}
    )


def test_task_metrics_count_every_gold_item():
    records = {
        "1": _record(True, type='["Audio", "Counting"]'),
        "2": _record(False, unparseable=True, type='["Audio", "Counting"]'),
        "3": _record(False, error="media error: x.mp4: no such file", type='["Visual", "Location"]'),
        "4": _record(True, type='["Visual", "Location"]'),
    }
    metrics = task_metrics(["1", "2", "3", "4", "5"], records, ["type"], seed=0)
    assert (metrics.n, metrics.correct, metrics.accuracy) == (5, 2, 40.0)
    assert (metrics.unparseable, metrics.missing, metrics.errors) == (1, 1, 1)
    cells = metrics.breakdown["type"]
    assert (cells["Audio/Counting"].n, cells["Audio/Counting"].accuracy) == (2, 50.0)
    assert (cells["Visual/Location"].n, cells["Visual/Location"].correct) == (2, 1)


def test_group_metrics_micro_and_macro():
    first = task_metrics(["a", "b"], {"a": _record(True), "b": _record(True)}, [], seed=0)
    second = task_metrics([str(i) for i in range(8)], {"0": _record(True)}, [], seed=0)
    group = group_metrics({"t1": first, "t2": second}, seed=0)
    assert group.micro.n == 10 and group.micro.accuracy == 30.0
    assert group.macro.accuracy == pytest.approx((100.0 + 12.5) / 2)
    assert group.macro.ci_low <= group.macro.accuracy <= group.macro.ci_high


def test_breakdown_labels():
    assert breakdown_label('["Audio-Visual", "Temporal"]') == "Audio-Visual/Temporal"
    assert breakdown_label(["a", "b"]) == "a/b"
    assert breakdown_label("Counting") == "Counting"
    assert breakdown_label(3) == "3"
