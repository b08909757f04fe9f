"""`python -m mcub.score`: score a prediction file in the authors' format (`question_id`, `text` per line).

It prints `Accuracy: xx.xx%` exactly as the authors' scorer computes it (over prediction lines, ids matched
by raw JSON equality), then mcub's summary of the same predictions (over every gold item)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mcub.errors import DataError, McubError


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """Prediction lines; a line that is not a JSON object with `question_id` and a string `text` is an error."""
    lines = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}:{error.colno}: malformed JSON: {error.msg}") from None
        if not isinstance(item, dict) or "question_id" not in item or not isinstance(item.get("text"), str):
            raise DataError(f"{path}:{number}: not an object with a question_id and a string text")
        lines.append(item)
    return lines


def authors_accuracy(
    predictions: list[dict[str, Any]], answer_records: list[dict[str, Any]], paper_match: str
) -> float:
    """The authors' `eval_avqa.py` / `eval_music_avqa.py` figure: correct / prediction lines, in percent."""
    from mcub.scoring import evalai_normalize

    gold = {record["id"]: record["conversations"][-1]["value"] for record in answer_records}
    correct = 0
    for item in predictions:
        if item["question_id"] not in gold:
            continue
        reference, text = gold[item["question_id"]], item["text"]
        if paper_match == "first-character":
            correct += text[:1] == reference
        else:
            correct += evalai_normalize(reference) == evalai_normalize(text)
    return 100 * correct / len(predictions) if predictions else 0.0


def main(argv: list[str] | None = None) -> int:
    from mcub.cli import add_data_arguments, data_paths

    parser = argparse.ArgumentParser(prog="python -m mcub.score", description=__doc__)
    parser.add_argument("--task", required=True)
    parser.add_argument("--predictions", type=Path, required=True, help="JSONL with question_id and text per line")
    parser.add_argument("--answers", type=Path, help="answer file to use instead of the task's own")
    parser.add_argument("--protocol", choices=["paper", "generate"], default="paper")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return _score(args, data_paths(args))
    except (McubError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _score(args: argparse.Namespace, paths) -> int:
    from mcub.data import load_task, read_records_file
    from mcub.scoring import score_generated, score_paper, task_metrics
    from mcub.tasks import load_registry

    task = load_registry().resolve([args.task])
    if len(task) != 1:
        raise McubError(f"--task takes one task, not the group {args.task}")
    task = task[0]
    if args.protocol == "paper" and task.paper_match is None:
        raise McubError(f"task {task.name} has no paper protocol; use --protocol generate")
    data = load_task(task, paths, args.answers)
    predictions = read_predictions(args.predictions)
    if args.protocol == "paper":
        figure = authors_accuracy(predictions, read_records_file(data.answer_file), task.paper_match)
        print(f"Accuracy: {figure:.2f}%")
    by_id: dict[str, str] = {}
    duplicates, unknown = [], []
    gold_ids = {sample.id for sample in data.samples}
    for item in predictions:
        key = str(item["question_id"])
        if key in by_id:
            duplicates.append(key)
        elif key not in gold_ids:
            unknown.append(key)
        else:
            by_id[key] = item["text"]
    records = {}
    for sample in data.samples:
        if sample.id not in by_id:
            continue
        if args.protocol == "paper":
            outcome = score_paper(by_id[sample.id], sample.answer, sample.options, task.paper_match)
        else:
            outcome = score_generated(by_id[sample.id], sample.answer, sample.options)
        records[sample.id] = {
            "correct": outcome.correct,
            "unparseable": outcome.unparseable,
            "error": None,
            "meta": sample.meta,
        }
    metrics = task_metrics([sample.id for sample in data.samples], records, task.breakdown, args.seed)
    print(f"mcub ({args.protocol}): {metrics.correct}/{metrics.n} gold items correct = "
          f"{metrics.accuracy if metrics.accuracy is not None else 0:.2f}% "
          f"(95% CI {metrics.ci_low}-{metrics.ci_high}); unparseable {metrics.unparseable}, "
          f"missing {metrics.missing}")  # fmt: skip
    for field, cells in metrics.breakdown.items():
        for label, cell in cells.items():
            print(f"  {field}={label}: {cell.correct}/{cell.n} = {cell.accuracy:.2f}%")
    for kind, ids in (("duplicate", duplicates), ("unknown", unknown)):
        if ids:
            print(f"{len(ids)} {kind} prediction id(s) (not scored by mcub): {', '.join(ids[:20])}", file=sys.stderr)
    for problem in data.problems:
        print(f"data problem: {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
