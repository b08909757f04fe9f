"""`mcub gain COMPOSED_RUN --experts RUN... [--blind RUN]`: what composing unimodal experts gained and lost, item by
item. Items are paired by (task, id) as in `mcub compare`; the oracle union of the experts gets an item right when
some expert did. Synergy: items the composed model got right and every expert wrong; interference: items it got
wrong that some expert got right. Per task, per modality subset of the samples (read from the records' media) and
over all items: counts and rates with 95% bootstrap intervals, the composed run's paired difference to each run and
to the union (paired bootstrap, exact McNemar test). An item a run has no record of counts as wrong for that run and
shows in the coverage; runs on other task data or under other protocols are refused, naming run and task."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from mcub.errors import McubError
from mcub.modalities import MODALITIES
from mcub.results import RunFiles, write_atomically
from mcub.schema import Record
from mcub.scoring import bootstrap_accuracy
from mcub.stats import PairedDifference, paired_difference

UNION = "expert union"
NO_RECORD = "no record"
"""The modality subset of gold items that no run has a record of."""


class GainError(McubError):
    """Runs that cannot be set against each other item by item."""


@dataclass(frozen=True)
class Item:
    """One gold item of a task: its modality subset and whether each run got it right (no record: wrong)."""

    task: str
    id: str | None
    """None for a gold item that no run has a record of (the summaries count it)."""
    modalities: str
    composed: bool
    experts: tuple[bool, ...]
    blind: bool | None

    @property
    def union(self) -> bool:
        return any(self.experts)


@dataclass(frozen=True)
class Share:
    """`count` of a scope's items, in percent, with a 95% bootstrap interval (None over no items)."""

    count: int
    percent: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass
class ScopeGain:
    """The figures over one scope's items: a task, a modality subset or all items. `versus_union` has the union as
    base and the composed run as new, so its `base_only` is the interference count and `new_only` the synergy."""

    scope: str
    n: int
    accuracy: dict[str, Share]
    """By run label (composed, experts, blind) and `expert union`."""
    synergy: Share
    interference: Share
    synergy_ids: dict[str, list[str]]
    interference_ids: dict[str, list[str]]
    """The items behind the counts, by task."""
    synergy_blind_right: int | None
    """Synergy items that the blind LLM also got right (None without a blind run)."""
    versus_union: PairedDifference
    versus: dict[str, PairedDifference]
    """The composed run against each expert and the blind run (that run as base), by label."""


@dataclass
class Coverage:
    """How many of a task's gold items a run has records of; `missing_ids` are those other runs recorded."""

    run: str
    role: str
    task: str
    recorded: int
    n: int
    missing_ids: list[str]


@dataclass
class CompositionGain:
    composed: str
    experts: list[str]
    blind: str | None
    run_dirs: dict[str, str]
    seed: int
    tasks: list[ScopeGain]
    modality_subsets: list[ScopeGain]
    overall: ScopeGain
    coverage: list[Coverage]
    unrecorded: dict[str, int]
    """Per task, gold items that no run has a record of (counted wrong for every run)."""
    without_accuracy: list[str]
    """Tasks of the composed run without right or wrong answers (open answers): left out."""


def share(count: int, n: int, seed: int) -> Share:
    interval = bootstrap_accuracy([(n, count)], seed)
    return Share(count, round(100 * count / n, 4) if n else None, *(interval or (None, None)))


def modality_subset(records) -> str:
    """The modalities of a sample as its records hold them (every run's, a failed run's may hold fewer), in the
    canonical order: `image+video+audio`; `none` for a sample without media."""
    held = {entry.get("modality") for record in records for entry in record.media}
    return "+".join(modality for modality in MODALITIES if modality in held) or "none"


def scope_gain(scope: str, items: Sequence[Item], labels: list[str], blind: str | None, seed: int) -> ScopeGain:
    """The figures over `items`; `labels` name the composed run, then the experts in order."""
    n = len(items)
    composed = [item.composed for item in items]
    union = [item.union for item in items]
    outcomes = {labels[0]: composed}
    outcomes |= {label: [item.experts[index] for item in items] for index, label in enumerate(labels[1:])}
    if blind is not None:
        outcomes[blind] = [bool(item.blind) for item in items]
    synergy = [item for item in items if item.composed and not item.union]
    interference = [item for item in items if not item.composed and item.union]

    def by_task(chosen: list[Item]) -> dict[str, list[str]]:
        ids: dict[str, list[str]] = {}
        for item in chosen:
            ids.setdefault(item.task, []).append(item.id)
        return ids

    return ScopeGain(
        scope=scope,
        n=n,
        accuracy={label: share(sum(flags), n, seed) for label, flags in [*outcomes.items(), (UNION, union)]},
        synergy=share(len(synergy), n, seed),
        interference=share(len(interference), n, seed),
        synergy_ids=by_task(synergy),
        interference_ids=by_task(interference),
        synergy_blind_right=None if blind is None else sum(1 for item in synergy if item.blind),
        versus_union=paired_difference(union, composed, seed),
        versus={label: paired_difference(flags, composed, seed) for label, flags in list(outcomes.items())[1:]},
    )


def run_label(run: RunFiles, taken: set[str]) -> str:
    """`model (run directory name)`, or the run's path where that names another run already."""
    label = f"{run.summary.model.name} ({run.run_dir.name})"
    return str(run.run_dir) if label in taken else label


def check_comparable(composed: RunFiles, others: dict[str, RunFiles], tasks: list[str]) -> None:
    """Refuse runs that hold one of `tasks` on other data or under another protocol than the composed run."""
    conflicts = []
    for label, run in others.items():
        for task in tasks:
            mine, theirs = composed.summary.tasks[task], run.summary.tasks.get(task)
            if theirs is None:
                continue
            if (theirs.question_sha256, theirs.answer_sha256) != (mine.question_sha256, mine.answer_sha256):
                conflicts.append(f"run {label}: task {task}: the task data differ from the composed run's")
            elif theirs.protocol != mine.protocol:
                conflicts.append(f"run {label}: task {task}: protocol {theirs.protocol}, not {mine.protocol}")
    if conflicts:
        raise GainError("; ".join(conflicts) + " (question/answer file hashes and protocols must agree)")


@dataclass(frozen=True)
class Roles:
    """The runs by label: the composed run, the experts in order, the blind run."""

    runs: dict[str, RunFiles]
    composed: str
    experts: list[str]
    blind: str | None

    def role(self, label: str) -> str:
        return "composed" if label == self.composed else "blind" if label == self.blind else "expert"


def read_roles(composed_dir: Path, expert_dirs: list[Path], blind_dir: Path | None) -> Roles:
    dirs = [composed_dir, *expert_dirs, *([blind_dir] if blind_dir else [])]
    resolved = [path.resolve() for path in dirs]
    repeated = [str(path) for path, real in zip(dirs, resolved, strict=True) if resolved.count(real) > 1]
    if repeated:
        raise GainError(f"{', '.join(dict.fromkeys(repeated))}: a run takes one role only (composed, expert or blind)")
    runs: dict[str, RunFiles] = {}
    for path in dirs:
        run = RunFiles(path)
        runs[run_label(run, set(runs))] = run
    labels = list(runs)
    return Roles(runs, labels[0], labels[1 : 1 + len(expert_dirs)], labels[-1] if blind_dir else None)


def task_items(task: str, roles: Roles) -> tuple[list[Item], list[Coverage], int]:
    """A task's items (every id some run recorded, in question order, then the gold items no run recorded), each
    run's coverage, and the count of those unrecorded items (from the largest gold count of the summaries)."""
    held = {label: run.records.get(task, {}) for label, run in roles.runs.items()}
    first: dict[str, Record] = {}
    for records in held.values():
        for record in records.values():
            first.setdefault(record.id, record)
    ids = sorted(first, key=lambda item_id: (first[item_id].question_index, item_id))
    gold = max(run.summary.tasks[task].metrics.n for run in roles.runs.values() if task in run.summary.tasks)
    unrecorded = max(0, gold - len(ids))

    def right(label: str | None, item_id: str) -> bool | None:
        if label is None:
            return None
        record = held[label].get(item_id)
        return record is not None and bool(record.correct)

    items = [
        Item(
            task,
            item_id,
            modality_subset(records[item_id] for records in held.values() if item_id in records),
            right(roles.composed, item_id),
            tuple(right(label, item_id) for label in roles.experts),
            right(roles.blind, item_id),
        )
        for item_id in ids
    ]
    lost = Item(task, None, NO_RECORD, False, (False,) * len(roles.experts), None if roles.blind is None else False)
    coverage = [
        Coverage(
            label, roles.role(label), task, len(records), len(ids) + unrecorded, [i for i in ids if i not in records]
        )
        for label, records in held.items()
    ]
    return items + [lost] * unrecorded, coverage, unrecorded


def subset_order(label: str) -> tuple:
    """Modality subsets by size, then in the canonical order of their modalities; `no record` last."""
    parts = label.split("+")
    return (
        label == NO_RECORD,
        len(parts),
        [MODALITIES.index(p) if p in MODALITIES else len(MODALITIES) for p in parts],
    )


def composition_gain(composed_dir: Path, expert_dirs: list[Path], blind_dir: Path | None, seed: int) -> CompositionGain:
    """Read the runs and compute the figures over the composed run's tasks that have right or wrong answers."""
    roles = read_roles(composed_dir, expert_dirs, blind_dir)
    composed = roles.runs[roles.composed]
    without_accuracy = [name for name, task in composed.summary.tasks.items() if task.metrics.accuracy is None]
    tasks = [name for name in composed.summary.tasks if name not in without_accuracy]
    if not tasks:
        raise GainError(f"{composed_dir}: the composed run has no task with right or wrong answers")
    check_comparable(composed, {label: run for label, run in roles.runs.items() if label != roles.composed}, tasks)
    items: list[Item] = []
    coverage: list[Coverage] = []
    unrecorded: dict[str, int] = {}
    for task in tasks:
        task_part, task_coverage, unrecorded[task] = task_items(task, roles)
        items += task_part
        coverage += task_coverage
    labels = [roles.composed, *roles.experts]

    def scopes(key: Callable[[Item], str], names: list[str]) -> list[ScopeGain]:
        return [
            scope_gain(name, [item for item in items if key(item) == name], labels, roles.blind, seed) for name in names
        ]

    return CompositionGain(
        composed=roles.composed,
        experts=roles.experts,
        blind=roles.blind,
        run_dirs={label: str(run.run_dir) for label, run in roles.runs.items()},
        seed=seed,
        tasks=scopes(lambda item: item.task, tasks),
        modality_subsets=scopes(
            lambda item: item.modalities, sorted({item.modalities for item in items}, key=subset_order)
        ),
        overall=scope_gain("all", items, labels, roles.blind, seed),
        coverage=coverage,
        unrecorded={task: count for task, count in unrecorded.items() if count},
        without_accuracy=without_accuracy,
    )


def _share(value: Share, count: bool = True) -> str:
    if value.percent is None:
        return "-"
    interval = f"{value.percent:.2f} [{value.ci_low:.2f}, {value.ci_high:.2f}]"
    return f"{value.count} ({interval})" if count else interval


def _scopes(gain: CompositionGain) -> list[tuple[str, ScopeGain]]:
    return [
        *((scope.scope, scope) for scope in gain.tasks),
        *((f"[{scope.scope}]", scope) for scope in gain.modality_subsets),
        ("all items", gain.overall),
    ]


def gain_tables(gain: CompositionGain) -> str:
    """Markdown: synergy and interference per scope, the composed run against each run, each run's coverage."""
    blind = gain.blind is not None
    lines = [
        f"composed: {gain.composed}; experts: {', '.join(gain.experts)}" + (f"; blind: {gain.blind}" if blind else ""),
        "",
        "| scope | n | composed | expert union | synergy | interference | composed - union | 95% CI | McNemar p |"
        + (" synergy, blind right |" if blind else ""),
        "|---|---:|---|---|---|---|---:|---|---:|" + ("---:|" if blind else ""),
    ]
    for name, scope in _scopes(gain):
        paired = scope.versus_union
        lines.append(
            f"| {name} | {scope.n} | {_share(scope.accuracy[gain.composed], False)} | "
            f"{_share(scope.accuracy[UNION], False)} | {_share(scope.synergy)} | {_share(scope.interference)} | "
            f"{paired.difference:+.2f} | [{paired.ci_low:+.2f}, {paired.ci_high:+.2f}] | {paired.p_value:.4g} |"
            + (f" {scope.synergy_blind_right} |" if blind else "")
        )
    lines += ["", "| scope | run | accuracy | composed - run | 95% CI | McNemar p |", "|---|---|---|---:|---|---:|"]
    for name, scope in _scopes(gain):
        for label, paired in scope.versus.items():
            lines.append(
                f"| {name} | {label} | {_share(scope.accuracy[label], False)} | {paired.difference:+.2f} | "
                f"[{paired.ci_low:+.2f}, {paired.ci_high:+.2f}] | {paired.p_value:.4g} |"
            )
    lines += ["", "| run | role | recorded | of | missing (counted wrong) |", "|---|---|---:|---:|---|"]
    for label in gain.run_dirs:
        rows = [row for row in gain.coverage if row.run == label]
        missing = ", ".join(f"{row.task}: {row.n - row.recorded}" for row in rows if row.recorded < row.n)
        lines.append(
            f"| {label} | {rows[0].role} | {sum(row.recorded for row in rows)} | {sum(row.n for row in rows)} | "
            f"{missing or 'none'} |"
        )
    if gain.unrecorded:
        counts = ", ".join(f"{task}: {count}" for task, count in gain.unrecorded.items())
        lines.append(f"\ngold items no run has a record of (wrong for every run): {counts}")
    if gain.without_accuracy:
        lines.append(f"\nleft out (no right or wrong answers): {', '.join(gain.without_accuracy)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from mcub.cli import run_command

    parser = argparse.ArgumentParser(prog="mcub gain", description=__doc__)
    parser.add_argument("composed", type=Path, help="the run of the composed model")
    parser.add_argument("--experts", type=Path, nargs="+", required=True, help="the runs of the unimodal experts")
    parser.add_argument("--blind", type=Path, help="the run of the LLM without media (optional)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--out", type=Path, help="write every figure, with the synergy and interference ids, here")
    args = parser.parse_args(argv)

    def command() -> int:
        gain = composition_gain(args.composed, args.experts, args.blind, args.seed)
        print(gain_tables(gain))
        if args.out:
            write_atomically(args.out, json.dumps(asdict(gain), indent=2) + "\n")
        return 0

    return run_command(command)


if __name__ == "__main__":
    raise SystemExit(main())
