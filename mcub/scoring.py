"""Scoring functions: the authors' post-processing and EvalAI normalisation, one answer extractor, per-sample
outcomes of the choice protocols, and metrics (accuracy over all gold items, bootstrap intervals, breakdowns)."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from mcub.position_bias import position_bias
from mcub.schema import Accuracy, CircularAccuracy, GroupMetrics, MeanScore, Outcome, Record, TaskMetrics

AUTHORS_STOP = "</s>"
BOOTSTRAP_RESAMPLES = 2000


# --- the authors' reading of an output -------------------------------------------------------------------


def authors_postprocess(output: str) -> str:
    """The reference loader's cleanup: strip, drop one trailing `</s>`, strip again."""
    text = output.strip()
    if text.endswith(AUTHORS_STOP):
        text = text[: -len(AUTHORS_STOP)]
    return text.strip()


_CONTRACTIONS = dict(
    pair.split("=")
    for pair in (
        "aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've "
        "couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've "
        "hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's "
        "howd=how'd howll=how'll hows=how's Id've=I'd've I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd "
        "itd've=it'd've it'dve=it'd've itll=it'll let's=let's maam=ma'am mightnt=mightn't "
        "mightnt've=mightn't've mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've "
        "neednt=needn't notve=not've oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at "
        "'ow'sat='ow's'at shant=shan't shed've=she'd've she'dve=she'd've she's=she's shouldve=should've "
        "shouldnt=shouldn't shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd "
        "somebodyd've=somebody'd've somebody'dve=somebody'd've somebodyll=somebody'll somebodys=somebody's "
        "someoned=someone'd someoned've=someone'd've someone'dve=someone'd've someonell=someone'll "
        "someones=someone's somethingd=something'd somethingd've=something'd've "
        "something'dve=something'd've somethingll=something'll thats=that's thered=there'd "
        "thered've=there'd've there'dve=there'd've therere=there're theres=there's theyd=they'd "
        "theyd've=they'd've they'dve=they'd've theyll=they'll theyre=they're theyve=they've twas='twas "
        "wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've werent=weren't whatll=what'll whatre=what're "
        "whats=what's whatve=what've whens=when's whered=where'd wheres=where's whereve=where've whod=who'd "
        "whod've=who'd've who'dve=who'd've wholl=who'll whos=who's whove=who've whyll=why'll whyre=why're "
        "whys=why's wont=won't wouldve=would've wouldnt=wouldn't wouldnt've=wouldn't've "
        "wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll y'allll=y'all'll yall'd've=y'all'd've "
        "y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've you'dve=you'd've "
        "youll=you'll youre=you're youve=you've"
    ).split()
)
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}  # fmt: skip
_ARTICLES = {"a", "an", "the"}
_PUNCTUATION = [
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
]
# The reference's period pattern is `(?!<=\d)(\.)(?!\d)`: its "look-behind" is a look-ahead for the literal
# text "<=digit", which can never follow a period, so it matches every period not followed by a digit.
_PERIOD = re.compile(r"\.(?!\d)")
# The reference passes re.UNICODE (32) positionally as the *count* of sub(): at most 32 periods are removed.
_PERIOD_SUBSTITUTIONS = int(re.UNICODE)


def evalai_normalize(text: str) -> str:
    """The EvalAI answer normalisation of the authors' MUSIC-AVQA scorer, quirks included."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    spaced = text
    for mark in _PUNCTUATION:
        glued = not (mark + " " in spaced or " " + mark in spaced)
        text = text.replace(mark, " " if glued else "")
    text = _PERIOD.sub("", text, count=_PERIOD_SUBSTITUTIONS)
    words = [_NUMBERS.get(word, word) for word in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


# --- one extractor for generated answers ------------------------------------------------------------------

_ANSWER_PHRASE = re.compile(
    r"(?i:answer|option|choice)\s*(?i:is|would be|should be)?\s*:?\s*(?:\(([A-Za-z])\)|([A-Z])(?![A-Za-z]))"
)
_LONE_LETTER = re.compile(r"^\(?([A-Za-z])\)?[.:)]?$")
_LEADING_LETTER = re.compile(r"^\(?([A-Za-z])[.:)]\s")
_PARENTHESISED = re.compile(r"\(([A-Za-z])\)")


def extract_choice(output: str, options: Mapping[str, str]) -> tuple[str | None, str]:
    """The option an output chooses, and the rule that decided ("unparseable" when none did).

    Letter options (keys A, B, ...): a lone letter ("B", "(b)", "B."), a leading marked letter ("B. cat"),
    an option text said exactly, an answer phrase ("The answer is B"), a single parenthesised letter, then a
    single option text mentioned. Other keys (class indices): the option text, said exactly or mentioned."""
    text = authors_postprocess(output)
    keys = {key.upper(): key for key in options}
    by_text = {_plain(value): key for key, value in options.items()}
    if all(len(key) == 1 and key.isalpha() for key in options):
        for pattern, method in ((_LONE_LETTER, "letter"), (_LEADING_LETTER, "leading-letter")):
            match = pattern.match(text)
            if match and match.group(1).upper() in keys:
                return keys[match.group(1).upper()], method
        if _plain(text) in by_text:
            return by_text[_plain(text)], "option-text"
        for pattern, method in ((_ANSWER_PHRASE, "answer-phrase"), (_PARENTHESISED, "parenthesised-letter")):
            found = {(m.group(1) or m.group(m.lastindex)).upper() for m in pattern.finditer(text)} & set(keys)
            if len(found) == 1:
                return keys[found.pop()], method
    elif _plain(text) in by_text:
        return by_text[_plain(text)], "option-text"
    mentioned = _mentioned_options(text, options)
    if len(mentioned) == 1:
        return mentioned[0], "option-text-mentioned"
    return None, "unparseable"


def _plain(text: str) -> str:
    return re.sub(r"[\s_]+", " ", text.strip().strip(".").lower()).strip()


def _mentioned_options(text: str, options: Mapping[str, str]) -> list[str]:
    """Options whose text occurs as whole words, ignoring those contained in a longer mentioned one."""
    plain = f" {re.sub(r'[^a-z0-9]+', ' ', text.lower())} "
    found = {}
    for key, value in options.items():
        words = re.sub(r"[^a-z0-9]+", " ", value.lower()).strip()
        if words and f" {words} " in plain:
            found[key] = words
    return [key for key, words in found.items() if not any(words != o and words in o for o in found.values())]


_ANSWER_PREFIX = re.compile(r"^\s*(?:the\s+)?answer\s*(?:is|:)\s*", re.IGNORECASE)


def short_answer(output: str) -> str:
    """An open answer's core: the first line, without an "The answer is" prefix."""
    first_line = authors_postprocess(output).split("\n", 1)[0]
    return _ANSWER_PREFIX.sub("", first_line)


# --- outcomes under each protocol -------------------------------------------------------------------------


def score_paper(text: str, gold: str, options: Mapping[str, str], paper_match: str) -> Outcome:
    """The authors' scorers on an already post-processed text (see `authors_postprocess`): the first
    character, exact (MCUB, AVQA), or EvalAI-normalised exact match (MUSIC-AVQA)."""
    if paper_match == "first-character":
        first = text[:1]
        return Outcome(first, "first-character", first == gold, first not in options)
    normalised = evalai_normalize(text)
    return Outcome(normalised, "evalai-exact", normalised == evalai_normalize(gold), not normalised)


def score_generated(output: str, gold: str, options: Mapping[str, str]) -> Outcome:
    """Protocol `generate`: the shared extractor for choices; EvalAI exact match of the short answer otherwise."""
    if options:
        key, method = extract_choice(output, options)
        return Outcome(key, method, key == gold, key is None)
    normalised = evalai_normalize(short_answer(output))
    return Outcome(normalised, "evalai-exact-short", normalised == evalai_normalize(gold), not normalised)


def score_loglik(option_logliks: Mapping[str, float], gold: str) -> Outcome:
    """Protocol `loglik`: the option of highest log-likelihood (the first in option order on a tie)."""
    best = max(option_logliks, key=lambda key: option_logliks[key])
    return Outcome(best, "loglik-argmax", best == gold, False)


# --- metrics ----------------------------------------------------------------------------------------------


def bootstrap_accuracy(counts: Iterable[tuple[int, int]], seed: int) -> tuple[float, float] | None:
    """95% percentile bootstrap interval of the mean of per-group accuracies (one group: plain accuracy).

    Resampling n 0/1 outcomes with replacement gives a Binomial(n, p) count, so each resample is drawn
    as a binomial: the same distribution as index resampling, at O(resamples) cost."""
    import numpy as np

    counts = [(n, correct) for n, correct in counts if n > 0]
    if not counts:
        return None
    rng = np.random.default_rng(seed)
    draws = np.stack([rng.binomial(n, correct / n, BOOTSTRAP_RESAMPLES) / n for n, correct in counts])
    low, high = np.percentile(draws.mean(axis=0) * 100, [2.5, 97.5])
    return round(float(low), 4), round(float(high), 4)


def accuracy(n: int, correct: int, seed: int) -> Accuracy:
    interval = bootstrap_accuracy([(n, correct)], seed)
    return Accuracy(
        n=n,
        correct=correct,
        accuracy=round(100 * correct / n, 4) if n else None,
        ci_low=interval[0] if interval else None,
        ci_high=interval[1] if interval else None,
    )


def task_metrics(
    gold_ids: Iterable[str], records: Mapping[str, Record], breakdown: Iterable[str], seed: int
) -> TaskMetrics:
    """Metrics over every gold id: a missing record, an error or an unparseable answer counts as wrong."""
    gold_ids = list(gold_ids)
    present = [records[sample_id] for sample_id in gold_ids if sample_id in records]
    correct = sum(1 for record in present if record.correct)
    judged = not present or any(record.correct is not None for record in present)
    cells: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for sample_id in gold_ids:
        record = records.get(sample_id)
        for field in breakdown:
            value = record.meta.get(field) if record is not None else None
            if value is not None:
                cell = cells[field][breakdown_label(value)]
                cell[0] += 1
                cell[1] += int(bool(record.correct))
    overall = accuracy(len(gold_ids), correct, seed)
    if not judged:
        overall = Accuracy(n=len(gold_ids), correct=0, accuracy=None, ci_low=None, ci_high=None)
    names = list(dict.fromkeys(name for record in present for name in (record.scores or {})))

    def score(sample_id: str, name: str) -> float:
        record = records.get(sample_id)
        return ((record.scores or {}).get(name) if record is not None else None) or 0.0

    circular = circular_metrics(gold_ids, records, seed) if is_circular(present) else None
    return TaskMetrics(
        **overall.model_dump(),
        circular=circular[0] if circular else None,
        original_order=circular[1] if circular else None,
        position_bias=position_bias(present),
        scores={name: mean_score([score(i, name) for i in gold_ids], seed) for name in names},
        unparseable=sum(1 for record in present if record.unparseable and not record.error),
        failed_judgements=sum(1 for record in present if (record.judgement or {}).get("error")),
        missing=len(gold_ids) - len(present),
        errors=sum(1 for record in present if record.error),
        breakdown={
            field: {label: accuracy(n, hits, seed) for label, (n, hits) in sorted(values.items())}
            for field, values in cells.items()
        },
    )


def is_circular(records: Iterable[Record]) -> bool:
    """Whether the records are of a CircularEval run (their condition includes `circular`)."""
    from mcub.conditions.circular import SPEC

    return any(SPEC in record.condition.split("+") for record in records)


def circular_metrics(
    gold_ids: list[str], records: Mapping[str, Record], seed: int
) -> tuple[CircularAccuracy, Accuracy]:
    """CircularEval over the items of rotated gold ids (`<item>@r<rotation>`): the items right under every rotation,
    and those right under rotation 0. A rotation without a record or with an error, or one its records name that is
    not among the gold ids (cut by `--limit`), makes its item wrong and incomplete."""
    from mcub.conditions.circular import rotation_count, split_rotation_id

    items: dict[str, dict[int, Record | None]] = defaultdict(dict)
    for sample_id in gold_ids:
        item, rotation = split_rotation_id(sample_id)
        items[item][rotation] = records.get(sample_id)
    expected = {
        item: max([len(rotations)] + [rotation_count(r.meta) or 0 for r in rotations.values() if r is not None])
        for item, rotations in items.items()
    }
    complete = {
        item: len(rotations) == expected[item] and all(r is not None and not r.error for r in rotations.values())
        for item, rotations in items.items()
    }
    every = sum(complete[item] and all(r.correct for r in rotations.values()) for item, rotations in items.items())
    first = sum(bool(rotations.get(0) is not None and rotations[0].correct) for rotations in items.values())
    circular = accuracy(len(items), every, seed).model_dump()
    incomplete = list(complete.values()).count(False)
    return (
        CircularAccuracy(**circular, rotations=sum(expected.values()), incomplete=incomplete),
        accuracy(len(items), first, seed),
    )


BOOTSTRAP_CHUNK_ITEMS = 1 << 22
"""Resampled items drawn at once by `mean_score` (its memory: about 16 bytes each)."""


def mean_score(values: list[float], seed: int) -> MeanScore:
    """Mean and 95% percentile bootstrap interval of per-item scores (missing items count as 0). The resamples are
    drawn a chunk of rows at a time, from one generator: the same draws, bit for bit, as all rows at once."""
    import numpy as np

    if not values:
        return MeanScore(n=0, mean=None, ci_low=None, ci_high=None)
    array = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    rows = max(1, BOOTSTRAP_CHUNK_ITEMS // len(array))
    means = np.concatenate([
        array[rng.integers(0, len(array), size=(min(rows, BOOTSTRAP_RESAMPLES - start), len(array)))].mean(axis=1)
        for start in range(0, BOOTSTRAP_RESAMPLES, rows)
    ])  # fmt: skip
    low, high = np.percentile(means, [2.5, 97.5])
    return MeanScore(
        n=len(array), mean=round(float(array.mean()), 4), ci_low=round(float(low), 4), ci_high=round(float(high), 4)
    )


def group_metrics(members: Mapping[str, TaskMetrics], seed: int) -> GroupMetrics:
    """Micro (pooled items) and macro (mean of task accuracies) accuracy of a group's tasks."""
    counts = [(metrics.n, metrics.correct) for metrics in members.values()]
    scored = [(n, correct) for n, correct in counts if n]
    macro_interval = bootstrap_accuracy(scored, seed)
    macro_value = sum(100 * correct / n for n, correct in scored) / len(scored) if scored else None
    return GroupMetrics(
        tasks=list(members),
        micro=accuracy(sum(n for n, _ in counts), sum(c for _, c in counts), seed),
        macro=Accuracy(
            n=sum(n for n, _ in counts),
            correct=sum(c for _, c in counts),
            accuracy=round(macro_value, 4) if macro_value is not None else None,
            ci_low=macro_interval[0] if macro_interval else None,
            ci_high=macro_interval[1] if macro_interval else None,
        ),
    )


def breakdown_label(value: Any) -> str:
    """A breakdown cell's name: lists (or JSON-encoded lists, as MUSIC-AVQA stores `type`) joined by '/'."""
    if isinstance(value, str) and value.startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, list):
        return "/".join(str(item) for item in value)
    return str(value)
