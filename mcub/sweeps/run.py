"""Running a sweep: every point an ordinary run directory (`<sweep>/runs/<model>/<point>`) made by
`mcub.evaluate`, the points sharing one feature cache (`<sweep>/features` unless the request names one), so that
the encoders run for the first point only; a finished point is skipped and a partial one resumed on a rerun.
`sweep.json` (written atomically after every point) holds the grid, each point's run directory and status and
the selection; the table and the plot are written once every point is done."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from mcub.errors import McubError
from mcub.models.base import adapter_arguments, check_model_args, find_model_spec, load_model_specs, merge_args
from mcub.request import EvalRequest
from mcub.results import IDENTITY_FILE, RunFiles, check_identity, read_summary, write_atomically
from mcub.run_lock import RunLock
from mcub.schema import RunSummary
from mcub.sweeps.grid import Axis, GridError, Point, grid_points
from mcub.sweeps.results import Selection, SweepResults, sweep_results
from mcub.sweeps.selection import SelectOn
from mcub.tasks import load_registry

MANIFEST = "sweep.json"
Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


class PointEntry(BaseModel):
    """A point in sweep.json: its values by `--grid` key, its run directory (relative to the sweep's), whether it
    is done, and how many of its media inputs came from the feature cache."""

    name: str
    values: dict[str, Any]
    run_dir: str
    status: Literal["pending", "done"] = "pending"
    media_inputs: int | None = None
    from_feature_cache: int | None = None


class SweepManifest(BaseModel):
    """sweep.json."""

    model: str
    grid: dict[str, list[str]]
    """The axes in grid order (the first varies slowest): key -> value labels."""
    feature_cache: str | None
    tasks: list[str] | None
    select_on: str | None
    points: list[PointEntry]
    selection: Selection | None = None


@dataclass(frozen=True)
class SweepPlan:
    """A sweep resolved and checked before any weight is read: the request every point shares (the feature cache
    set), the axes and points, the sweep directory, the selection, and the reported tasks (None: every task run)."""

    request: EvalRequest
    axes: list[Axis]
    points: list[Point]
    directory: Path
    select_on: SelectOn | None
    reported: list[str] | None

    def point_request(self, point: Point) -> EvalRequest:
        return self.request.model_copy(
            update={"model_args": merge_args(self.request.model_args, point.model_args()),
                    "output_dir": self.directory / "runs", "run_name": point.name, "resume": False}
        )  # fmt: skip

    def run_dir(self, point: Point) -> Path:
        return self.directory / "runs" / self.request.model / point.name


def default_directory(request: EvalRequest, axes: list[Axis]) -> Path:
    """`<output dir>/sweeps/<model>/<key+key>`: the same command finds the same sweep again."""
    return request.output_dir / "sweeps" / request.model / "+".join(axis.key for axis in axes)


def plan_sweep(
    request: EvalRequest, axes: list[Axis], directory: Path | None, select_on: SelectOn | None, log: Log = _stderr
) -> SweepPlan:
    """Check the grid against the model (its arguments, those that change the encoders, those the request sets
    already) and every point's arguments; set the shared feature cache; add the selection task to the run."""
    spec = find_model_spec(request.model, load_model_specs())
    arguments = adapter_arguments(spec.adapter, f"model {spec.name}")
    for axis in axes:
        name = axis.path[0]
        if name in arguments.encoder_arguments or name == "feature_cache":
            raise GridError(
                f"--grid {axis.key}: {name} changes what the encoders compute, so the points could not share "
                f"encoder features; run one sweep per value (a grid keeps the cache warm over the other arguments)"
            )
        if _sets(request.model_args, axis.path):
            raise GridError(f"--grid {axis.key}: the request sets it already (--model-arg or --config)")
    points = grid_points(axes)
    for point in points:
        try:
            check_model_args(spec, merge_args(request.model_args, point.model_args()))
        except McubError as error:
            raise GridError(f"--grid point {point.name}: {error}") from None
    directory = directory or default_directory(request, axes)
    model_args = request.model_args
    if "feature_cache" not in spec.arguments(merge_args(model_args, points[0].model_args())).effective():
        if "feature_cache" in arguments.model_fields:
            model_args = {**model_args, "feature_cache": str(directory / "features")}
        else:
            log(f"note: model {spec.name} keeps no feature cache; every point runs its encoders")
    tasks, reported = request.tasks, None
    if request.tasks:
        registry = load_registry()
        reported = [task.name for task in registry.resolve(request.tasks)]
        if select_on is not None and select_on.task not in reported:
            if select_on.task not in registry.tasks:
                raise McubError(f"--select-on {select_on}: unknown task {select_on.task}")
            tasks = [*request.tasks, select_on.task]
    request = request.model_copy(update={"model_args": model_args, "tasks": tasks})
    return SweepPlan(request, axes, points, directory, select_on, reported)


def _sets(args: dict[str, Any], path: tuple[str, ...]) -> bool:
    """Whether `args` sets the argument at `path`, or one inside it, or a value above it."""
    target: Any = args
    for name in path:
        if not isinstance(target, dict) or name not in target:
            return False
        target = target[name]
        if not isinstance(target, dict):
            return True
    return True


def run_sweep(plan: SweepPlan, log: Log = _stderr) -> tuple[SweepResults, SweepManifest]:
    """Run every point not done yet, then write the table, the plot and sweep.json (see the module's docstring)."""
    from mcub.sweeps.plot import plot_sweep
    from mcub.sweeps.table import sweep_frame, sweep_markdown

    plan.directory.mkdir(parents=True, exist_ok=True)
    with RunLock(plan.directory, log):
        manifest = SweepManifest(
            model=plan.request.model,
            grid={axis.key: list(axis.labels) for axis in plan.axes},
            feature_cache=plan.request.model_args.get("feature_cache"),
            tasks=plan.request.tasks,
            select_on=None if plan.select_on is None else str(plan.select_on),
            points=[PointEntry(name=p.name, values=p.values, run_dir=str(plan.run_dir(p).relative_to(plan.directory)))
                    for p in plan.points],
        )  # fmt: skip
        summaries = []
        for number, (point, entry) in enumerate(zip(plan.points, manifest.points, strict=True), start=1):
            log(f"point {number}/{len(plan.points)}: {point.name}")
            summaries.append(run_point(plan.point_request(point), plan.run_dir(point), log))
            entry.status = "done"
            entry.media_inputs, entry.from_feature_cache = cached_media(plan.run_dir(point))
            write_manifest(plan.directory, manifest)
        tasks = plan.reported or list(dict.fromkeys(task for summary in summaries for task in summary.tasks))
        results = sweep_results(plan.axes, plan.points, summaries, tasks, plan.select_on)
        manifest.selection = results.selection
        write_atomically(plan.directory / "table.csv", sweep_frame(results, numeric=True).to_csv())
        write_atomically(plan.directory / "table.md", sweep_markdown(results) + "\n")
        figure = plot_sweep(results, plan.directory / "plot.png")
        if figure is None:
            log("note: no point has a figure to plot; no plot.png")
        else:
            import matplotlib.pyplot as plt

            plt.close(figure)
        write_manifest(plan.directory, manifest)
    return results, manifest


def run_point(request: EvalRequest, run_dir: Path, log: Log) -> RunSummary:
    """The summary of a point's run: read when the run is finished (its identity checked against the request and
    every task present), else made by evaluating it, resuming what a run directory there holds."""
    from mcub.evaluation import evaluate, identity, plan_run

    if (run_dir / "summary.json").is_file():
        plan = plan_run(request, load_registry(), log=lambda message: None)
        check_identity(run_dir, identity(request, plan))
        summary = read_summary(run_dir)
        if set(summary.tasks) == {data.task.name for data in plan.datasets}:
            log(f"  finished before: {run_dir}")
            return summary
    summary = evaluate(request.model_copy(update={"resume": (run_dir / IDENTITY_FILE).is_file()}), log)
    if summary is None:
        raise McubError("mcub sweep runs in one process (not under torchrun)")
    return summary


def cached_media(run_dir: Path) -> tuple[int, int]:
    """How many media inputs the point's records hold, and how many of them were encoder features from the cache."""
    run = RunFiles(run_dir)
    media = [item for records in run.records.values() for record in records.values() for item in record.media]
    return len(media), sum(item.get("features") == "cache" for item in media)


def write_manifest(directory: Path, manifest: SweepManifest) -> None:
    write_atomically(directory / MANIFEST, manifest.model_dump_json(indent=2) + "\n")
