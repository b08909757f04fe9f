"""The leaderboard page (`leaderboard/index.html`): submissions as rows, task columns grouped by benchmark with a mean
per group, filters by model family and protocol, sortable columns and an accuracy chart with intervals per group.
Self-contained (inline CSS, SVG and JS: no CDN); every string that came from a file is escaped."""

from __future__ import annotations

import html
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import TYPE_CHECKING

from mcub.schema import Accuracy, ModelInfo
from mcub.scoring import group_metrics
from mcub.tasks import Registry

if TYPE_CHECKING:
    from mcub.leaderboard import Entry

FAMILIES = ("composed", "expert", "baseline")
COMPOSING_ADAPTERS = ("modelcompose", "modelcompose-tiny")
POINT_TASKS = "point tasks"
BENCHMARK_ORDER = ("mcub-4", "mcub-3", "avqa", "music-avqa", POINT_TASKS)
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
SUBMISSION_COLUMNS = ("rank", "model", "run", "score", "family", "protocol")


def model_family(model: ModelInfo) -> str:
    """`composed` for a ModelCompose model of more than one expert (its `experts` argument, else its modalities),
    `expert` for one of a single expert, `baseline` for every other adapter (random, blind, third-party MLLMs)."""
    if model.adapter not in COMPOSING_ADAPTERS:
        return "baseline"
    experts = model.args.get("experts")
    count = len(experts) if isinstance(experts, dict) else len(model.modalities)
    return "composed" if count > 1 else "expert"


def benchmark_of(task: str, registry: Registry) -> str:
    """The column group of a task: the registry group made of tasks only that holds it (mcub-3, avqa, music-avqa),
    else `point tasks` for a task on point clouds alone, else the task itself (mcub-4; a task this mcub lacks)."""
    for name, group in registry.groups.items():
        if task in group.members and all(member in registry.tasks for member in group.members):
            return name
    spec = registry.tasks.get(task)
    if spec is not None and spec.modalities == ("point",):
        return POINT_TASKS
    return task


@dataclass(frozen=True)
class ColumnGroup:
    """A benchmark's columns: its name and the tasks of it that some submission ran."""

    name: str
    tasks: tuple[str, ...]

    @property
    def label(self) -> str:
        return self.name if self.name == POINT_TASKS else self.name.upper()

    @property
    def has_mean(self) -> bool:
        """Whether the group shows a mean column (a group of one task shows that task's column alone)."""
        return len(self.tasks) > 1

    def short(self, task: str) -> str:
        """A task's header within its group: the input combination or subset (`image+audio`), else its name."""
        prefix = f"{self.name}-"
        return task[len(prefix) :] if task.startswith(prefix) and task != prefix else task


def column_groups(tasks: list[str], registry: Registry) -> list[ColumnGroup]:
    """The tasks grouped by benchmark, the benchmarks in BENCHMARK_ORDER and then as first met, tasks in the
    registry's order within a group."""
    members: dict[str, list[str]] = {}
    for task in tasks:
        members.setdefault(benchmark_of(task, registry), []).append(task)
    order = list(registry.tasks)
    placed = sorted(members, key=lambda name: BENCHMARK_ORDER.index(name) if name in BENCHMARK_ORDER else len(order))
    return [
        ColumnGroup(name, tuple(sorted(members[name], key=lambda t: order.index(t) if t in order else len(order))))
        for name in placed
    ]


def group_mean(entry: Entry, group: ColumnGroup) -> Accuracy | None:
    """The mean of the entry's accuracies over every task of the group, with its bootstrap interval (the run's
    seed; a group of one task: that task's accuracy and interval); None when the entry lacks one of them or a task has
    no accuracy."""
    tasks = entry.run.summary.tasks
    if not all(task in tasks and tasks[task].metrics.accuracy is not None for task in group.tasks):
        return None
    if not group.has_mean:
        return tasks[group.tasks[0]].metrics
    metrics = {task: tasks[task].metrics for task in group.tasks}
    return group_metrics(metrics, entry.run.summary.settings.seed).macro


def protocols_of(entry: Entry) -> list[str]:
    return sorted({task.protocol for task in entry.run.summary.tasks.values()})


def _interval(value: Accuracy | None) -> tuple[str, float]:
    if value is None or value.accuracy is None:
        return "-", -1.0
    return f"{value.accuracy:.2f} [{value.ci_low:.2f}, {value.ci_high:.2f}]", value.accuracy


def _options(element: str, values: list[str]) -> str:
    choices = "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in values)
    return f'<select id="{element}"><option value="">all</option>{choices}</select>'


def render_page(entries: list[Entry], tasks: list[str], shared: list[str], registry: Registry, tie_alpha: float) -> str:
    """The page's HTML for ranked entries (`shared`: the tasks the score averages over)."""
    groups = column_groups(tasks, registry)
    means = [[group_mean(entry, group) for group in groups] for entry in entries]
    group_head = "".join(
        f'<th colspan="{len(g.tasks) + g.has_mean}" class="group">{html.escape(g.label)}</th>' for g in groups
    )
    headers = [*SUBMISSION_COLUMNS]
    titles = [*SUBMISSION_COLUMNS]
    for group in groups:
        if group.has_mean:
            headers.append("mean")
            titles.append(f"{group.label}: mean of its tasks")
        headers += [group.short(task) for task in group.tasks]
        titles += group.tasks
    column_head = "".join(
        f'<th data-column="{i}" title="{html.escape(title)}">{html.escape(text)}</th>'
        for i, (text, title) in enumerate(zip(headers, titles, strict=True))
    )
    rows = [_row(index, entry, groups, means[index]) for index, entry in enumerate(entries)]
    families = [family for family in FAMILIES if any(model_family(e.run.summary.model) == family for e in entries)]
    protocols = sorted({protocol for entry in entries for protocol in protocols_of(entry)})
    template = Template(resources.files("mcub").joinpath("leaderboard_page.html").read_text(encoding="utf-8"))
    return template.substitute(
        shared=html.escape(", ".join(shared) or "none"),
        tie_alpha=tie_alpha,
        family_filter=_options("family-filter", families),
        protocol_filter=_options("protocol-filter", protocols),
        submission_span=len(SUBMISSION_COLUMNS),
        group_head=group_head,
        column_head=column_head,
        rows="".join(rows),
        chart=chart_svg(entries, groups, means),
        legend="".join(
            f'<li data-entry="{index}"><span class="swatch" style="background:{PALETTE[index % len(PALETTE)]}">'
            f"</span>{html.escape(_entry_label(entry))}</li>"
            for index, entry in enumerate(entries)
        ),
    )


def _entry_label(entry: Entry) -> str:
    return f"{entry.model} ({entry.run.run_dir.name})"


def _row(index: int, entry: Entry, groups: list[ColumnGroup], means: list[Accuracy | None]) -> str:
    family = model_family(entry.run.summary.model)
    protocols = " ".join(protocols_of(entry))
    cells = [
        f'<td data-sort="{entry.rank}" data-entry="{index}">{html.escape(entry.rank_label)}</td>',
        f"<td>{html.escape(entry.model)}</td>",
        f"<td>{html.escape(entry.run.run_dir.name)}</td>",
        f'<td data-sort="{entry.score:.4f}">{entry.score:.2f}</td>',
        f'<td data-family="{family}">{family}</td>',
        f'<td data-protocols="{html.escape(protocols)}">{html.escape(protocols)}</td>',
    ]
    summaries = entry.run.summary.tasks
    for group, mean in zip(groups, means, strict=True):
        if group.has_mean:
            text, value = _interval(mean)
            cells.append(f'<td class="mean" data-sort="{value:.4f}">{html.escape(text)}</td>')
        for task in group.tasks:
            text, value = _interval(summaries[task].metrics if task in summaries else None)
            cells.append(f'<td data-sort="{value:.4f}">{html.escape(text)}</td>')
    return f"<tr>{''.join(cells)}</tr>"


CHART_HEIGHT = 200
CHART_TOP = 16
CHART_LEFT = 44
BAR_WIDTH = 14
GROUP_GAP = 28


def chart_svg(entries: list[Entry], groups: list[ColumnGroup], means: list[list[Accuracy | None]]) -> str:
    """An inline SVG: per benchmark group, a bar per entry at its group mean with a whisker over its 95% interval
    (groups no entry has a mean for are left out); each mark carries its entry's index for the page's filters."""
    drawn = [g for g, _ in enumerate(groups) if any(row[g] is not None for row in means)]
    if not drawn:
        return '<p id="chart-empty">No submission has every task of a benchmark group: nothing to chart.</p>'
    group_width = BAR_WIDTH * max(1, len(entries)) + GROUP_GAP
    width = CHART_LEFT + group_width * len(drawn) + 8
    height = CHART_TOP + CHART_HEIGHT + 40

    def y(value: float) -> float:
        return CHART_TOP + CHART_HEIGHT * (1 - value / 100)

    parts = [
        f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="accuracy per benchmark group with 95% intervals">'
    ]
    for tick in (0, 25, 50, 75, 100):
        parts.append(
            f'<line class="grid" x1="{CHART_LEFT}" x2="{width - 8}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>'
            f'<text class="tick" x="{CHART_LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick}</text>'
        )
    for slot, g in enumerate(drawn):
        left = CHART_LEFT + slot * group_width + GROUP_GAP / 2
        centre = left + group_width / 2 - GROUP_GAP / 2
        parts.append(
            f'<text class="group-label" x="{centre:.1f}" y="{CHART_TOP + CHART_HEIGHT + 18}" '
            f'text-anchor="middle">{html.escape(groups[g].label)}</text>'
        )
        for index, entry in enumerate(entries):
            mean = means[index][g]
            if mean is None:
                continue
            x = left + index * BAR_WIDTH
            colour = PALETTE[index % len(PALETTE)]
            centre = x + BAR_WIDTH / 2
            title = f"{_entry_label(entry)}, {groups[g].label}: {_interval(mean)[0]}"
            parts.append(
                f'<g class="mark" data-entry="{index}" data-group="{html.escape(groups[g].name)}">'
                f"<title>{html.escape(title)}</title>"
                f'<rect x="{x + 1:.1f}" y="{y(mean.accuracy):.1f}" width="{BAR_WIDTH - 2}" '
                f'height="{CHART_HEIGHT * mean.accuracy / 100:.1f}" fill="{colour}"/>'
                f'<line class="interval" x1="{centre:.1f}" x2="{centre:.1f}" y1="{y(mean.ci_low):.1f}" '
                f'y2="{y(mean.ci_high):.1f}"/></g>'
            )
    parts.append(
        f'<text class="tick" x="12" y="{CHART_TOP + CHART_HEIGHT / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {CHART_TOP + CHART_HEIGHT / 2:.1f})">accuracy (%)</text></svg>'
    )
    return "".join(parts)
