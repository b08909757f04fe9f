"""Run directories with chosen outcomes, written in the harness's own formats (records + summary)."""

from __future__ import annotations

from pathlib import Path

from mcub.results import write_records, write_summary
from mcub.schema import Decoding, Environment, ModelInfo, Record, RunSummary, Settings, TaskSummary
from mcub.scoring import group_metrics, task_metrics


def record(task: str, index: int, correct: bool, protocol: str = "paper") -> Record:
    gold = "ABCD"[index % 4]
    output = gold if correct else "ABCD"[(index + 1) % 4]
    return Record(
        task=task, id=str(index), question_index=index, protocol=protocol, question_sha256="q" * 64,
        answer_sha256="a" * 64, prompt_sha256=None, options={"A": "a", "B": "b", "C": "c", "D": "d"}, gold=gold,
        decoding=Decoding(kind="generate", max_new_tokens=128, stop="first-character"), output=output,
        option_logliks=None, extracted=output, extraction="first-character", unparseable=False, correct=correct,
        error=None, media=[], meta={}, timing={"decode_s": 0.0, "model_s": 0.0},
    )  # fmt: skip


def write_run(run_dir: Path, outcomes: dict[str, list[bool]], model: str = "m", protocol: str = "paper",
              groups: dict[str, list[str]] | None = None, data_hash: str = "q" * 64) -> Path:  # fmt: skip
    """A run whose task t has one record per outcome, correct as given."""
    (run_dir / "records").mkdir(parents=True)
    tasks = {}
    for task, flags in outcomes.items():
        records = [
            record(task, index, flag, protocol).model_copy(update={"question_sha256": data_hash})
            for index, flag in enumerate(flags)
        ]
        write_records(run_dir / "records" / f"{task}.jsonl", records)
        tasks[task] = TaskSummary(
            task=task, family=task, protocol=protocol, paper_match="first-character", question_file="q.json",
            answer_file="a.json", question_sha256=data_hash, answer_sha256="a" * 64, data_problems=[],
            metrics=task_metrics([r.id for r in records], {r.id: r for r in records}, [], 0),
        )  # fmt: skip
    group_summaries = {}
    for name, members in (groups or {}).items():
        group_summaries[name] = group_metrics({task: tasks[task].metrics for task in members}, 0)
    summary = RunSummary(
        harness_version="0.1.0", git_revision=None, created="now", model=ModelInfo(name=model, adapter="random"),
        settings=Settings(seed=0), environment=Environment(python="3", platform="test"), tasks=tasks, skipped={},
        groups=group_summaries,
    )  # fmt: skip
    write_summary(run_dir, summary)
    return run_dir
