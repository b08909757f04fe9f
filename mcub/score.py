"""`mcub score` (`python -m mcub.score`): rescore a finished run, or score a prediction file of the authors' pipeline.

`mcub score RUN_DIR [--protocol P] [--embedder DIR] [--judge-...]` rescores the run's raw records without the model
into `RUN_DIR/rescored/<name>/` (records, summary.json, table.md); outputs that cannot support the protocol asked
are refused with the reason. `mcub score --task T --predictions merge.jsonl` prints `Accuracy: xx.xx%` exactly as
the authors' scorer computes it (over prediction lines, ids matched by raw JSON equality), then mcub's summary of
the same predictions (over every gold item)."""

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


def build_parser() -> argparse.ArgumentParser:
    from mcub.cli import add_data_arguments, add_scorer_arguments
    from mcub.protocols import PROTOCOLS

    parser = argparse.ArgumentParser(prog="mcub score", description=__doc__)
    parser.add_argument("run", nargs="?", type=Path, help="a run directory to rescore")
    parser.add_argument("--protocol", choices=list(PROTOCOLS), help="default: each task's protocol in the run")
    parser.add_argument("--name", help="the rescored run's folder under RUN_DIR/rescored/ (default: from the protocol)")
    add_scorer_arguments(parser)
    parser.add_argument("--task", help="with --predictions: the task the prediction file answers")
    parser.add_argument("--predictions", type=Path, help="JSONL with question_id and text per line")
    parser.add_argument("--answers", type=Path, help="answer file to use instead of the task's own")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (prediction files)")
    add_data_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    from mcub.cli import data_paths, run_command

    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.run is None) == (args.predictions is None):
        parser.error("give a run directory, or --task and --predictions")
    if args.predictions is not None:
        if not args.task:
            parser.error("--predictions needs --task")
        return run_command(lambda: _score_predictions(args, data_paths(args)))
    return run_command(lambda: _rescore(args, data_paths(args)))


def _rescore(args: argparse.Namespace, paths) -> int:
    from mcub.cli import judge_values
    from mcub.evaluation import score_run
    from mcub.results import read_summary, summary_table
    from mcub.schema import ScorerSettings

    scoring = None
    judge = judge_values(args)
    if args.embedder or judge is not None:
        recorded = read_summary(args.run).scoring.model_dump()
        changed = {"embedder": args.embedder} if args.embedder else {}
        scoring = ScorerSettings.model_validate(recorded | changed | ({"judge": judge} if judge else {}))
    summary, out_dir = score_run(args.run, paths, args.protocol, scoring, args.name)
    print(summary_table(summary))
    print(f"\nrescored run: {out_dir}")
    return 0


def _score_predictions(args: argparse.Namespace, paths) -> int:
    from mcub.data import load_task, read_records_file
    from mcub.protocols import Answer, PaperProtocol, protocol_for
    from mcub.schema import Record, ScorerSettings
    from mcub.scorer import ScoringContext
    from mcub.scoring import task_metrics
    from mcub.tasks import load_registry

    task = load_registry().resolve([args.task])
    if len(task) != 1:
        raise McubError(f"--task takes one task, not the group {args.task}")
    task = task[0]
    protocol = protocol_for(task, args.protocol or "paper")
    name = protocol.name
    if protocol.decoding(task, 1).kind != "generate":
        raise McubError(f"a prediction file holds generated text; --protocol {name} cannot score it")
    data = load_task(task, paths, args.answers)
    predictions = read_predictions(args.predictions)
    if isinstance(protocol, PaperProtocol):
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
    context = ScoringContext(ScorerSettings())
    for sample in data.samples:
        if sample.id not in by_id:
            continue
        outcome = protocol.score_prediction(Answer(sample.answer, sample.options, by_id[sample.id]), task, context)
        records[sample.id] = Record(
            task=task.name, id=sample.id, question_index=sample.meta["question_index"], protocol=name,
            question_sha256=data.question_sha256, answer_sha256=data.answer_sha256, prompt_sha256=None,
            options=sample.options, gold=sample.answer, output=by_id[sample.id], option_logliks=None,
            extracted=outcome.extracted, extraction=outcome.method, unparseable=outcome.unparseable,
            correct=outcome.correct, error=None, media=[], meta=sample.meta, timing={},
        )  # fmt: skip
    metrics = task_metrics([sample.id for sample in data.samples], records, task.breakdown, args.seed)
    print(f"mcub ({name}): {metrics.correct}/{metrics.n} gold items correct = "
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
    from mcub.cli import exit_now

    exit_now(main())
