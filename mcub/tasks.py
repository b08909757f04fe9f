"""Task and group definitions: the schema of `tasks/*.yaml` and the registry built from those files."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mcub.errors import TaskError
from mcub.modalities import Modality

TASKS_DIR = Path(__file__).resolve().parent.parent / "tasks"
BUNDLED_DATA_ROOT = Path(__file__).resolve().parent / "sample_data" / "data"

AnswerType = Literal["letter", "text", "class"]
FileFormat = Literal["reference", "pointllm"]
PaperMatch = Literal["first-character", "evalai-exact"]


class TaskSpec(BaseModel):
    """One evaluation task: which files hold it, what it feeds the model and how it is scored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    family: str
    description: str
    modalities: tuple[Modality, ...] = Field(min_length=1)
    folder: str = "test"
    questions: str
    answers: str
    hub_dataset: str | None = None
    bundled: bool = False
    answer_type: AnswerType
    protocol: str
    """The protocol the task runs under by default (a name of mcub.protocols)."""
    paper_match: PaperMatch | None = None
    breakdown: tuple[str, ...] = ()
    options: dict[str, str] | None = None
    format: FileFormat = "reference"
    prompt: str | None = None
    point_file: str | None = None
    metrics: tuple[str, ...] = ()
    judgement: Literal["classification", "caption", "close-set"] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        if self.format == "pointllm" and not (self.prompt and self.point_file):
            raise ValueError("a pointllm-format task needs `prompt` and `point_file`")
        from mcub.protocols import ProtocolError, get_protocol

        try:
            reason = get_protocol(self.protocol).refusal(self)
        except ProtocolError as error:
            raise ValueError(str(error)) from None
        if reason is not None:
            raise ValueError(f"task {self.name} {reason}")
        return self

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from mcub.open_metrics import OPEN_METRICS

        unknown = [metric for metric in value if metric not in OPEN_METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; known: {list(OPEN_METRICS)}")
        return value

    @field_validator("modalities")
    @classmethod
    def _distinct(cls, value: tuple[Modality, ...]) -> tuple[Modality, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"modalities repeat: {list(value)}")
        return value

    def question_path(self, data_root: Path) -> Path:
        return self.data_root(data_root) / self.folder / self.questions

    def answer_path(self, data_root: Path) -> Path:
        return self.data_root(data_root) / self.folder / self.answers

    def data_root(self, data_root: Path) -> Path:
        """The data root this task reads: the one given, or for a bundled task whose question file is not
        there, the copy inside the package."""
        if self.bundled and not (data_root / self.folder / self.questions).is_file():
            return BUNDLED_DATA_ROOT
        return data_root

    def hub_filename(self, local_name: str) -> str:
        return f"{self.folder}/{local_name}"


class GroupSpec(BaseModel):
    """A named set of tasks and groups, scored together."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    members: tuple[str, ...] = Field(min_length=1)


class TaskFile(BaseModel):
    """The schema of one `tasks/*.yaml` file: defaults shared by its tasks, the tasks, the groups."""

    model_config = ConfigDict(extra="forbid")

    family: str
    defaults: dict[str, Any] = {}
    tasks: list[dict[str, Any]] = Field(min_length=1)
    groups: list[GroupSpec] = []


@dataclass(frozen=True)
class Registry:
    """Every known task and group, by name."""

    tasks: dict[str, TaskSpec]
    groups: dict[str, GroupSpec]

    def resolve(self, names: Iterable[str]) -> list[TaskSpec]:
        """Expand task and group names into distinct tasks, in the order first named."""
        seen: dict[str, TaskSpec] = {}
        for name in names:
            for task in self._expand(name.strip()):
                seen.setdefault(task.name, task)
        return list(seen.values())

    def group_tasks(self, group: str) -> list[TaskSpec]:
        return list(self._expand(group))

    def _expand(self, name: str) -> Iterable[TaskSpec]:
        if name in self.tasks:
            yield self.tasks[name]
        elif name in self.groups:
            for member in self.groups[name].members:
                yield from self._expand(member)
        else:
            known = [*self.tasks, *self.groups]
            close = difflib.get_close_matches(name, known, n=4, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else "; `python -m mcub.eval --list-tasks` lists them"
            raise TaskError(f"unknown task or group {name!r}{hint}")


def load_registry(tasks_dir: Path = TASKS_DIR) -> Registry:
    """Read and validate every `*.yaml` under `tasks_dir`."""
    import yaml

    files = sorted(tasks_dir.glob("*.yaml"))
    if not files:
        raise TaskError(f"no task files (*.yaml) in {tasks_dir}")
    tasks: dict[str, TaskSpec] = {}
    groups: dict[str, GroupSpec] = {}
    for path in files:
        with path.open(encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
        try:
            task_file = TaskFile.model_validate(raw)
            specs = [
                TaskSpec.model_validate({"family": task_file.family, **task_file.defaults, **entry})
                for entry in task_file.tasks
            ]
        except ValidationError as error:
            raise TaskError(f"{path}: invalid task definition:\n{error}") from None
        for spec in specs:
            _claim_name(spec.name, path, tasks, groups)
            tasks[spec.name] = spec
        for group in task_file.groups:
            _claim_name(group.name, path, tasks, groups)
            groups[group.name] = group
    registry = Registry(tasks, groups)
    for group in groups.values():
        _check_members(registry, group, ())
    return registry


def _claim_name(name: str, path: Path, tasks: dict, groups: dict) -> None:
    if name in tasks or name in groups:
        raise TaskError(f"{path}: the name {name!r} is defined twice")


def _check_members(registry: Registry, group: GroupSpec, trail: tuple[str, ...]) -> None:
    if group.name in trail:
        raise TaskError(f"group {group.name!r} contains itself: {' -> '.join((*trail, group.name))}")
    for member in group.members:
        if member in registry.groups:
            _check_members(registry, registry.groups[member], (*trail, group.name))
        elif member not in registry.tasks:
            raise TaskError(f"group {group.name!r} names an unknown task {member!r}")
