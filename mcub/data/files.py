"""Finding a task's files (under the data root, bundled, or fetched from the hub) and reading them as records."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from mcub.errors import DataError
from mcub.schema import DataPaths
from mcub.tasks import TaskSpec

_NOT_REGULAR = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}
_NO_STAND_IN = "nothing else is read in its place"


def locate_file(task: TaskSpec, name: str, paths: DataPaths) -> Path:
    """The local path of one of the task's files, downloading it from the task's hub dataset if allowed.
    Something at the path under the data root that is not a readable file is an error, never a reason to read
    the bundled copy or the hub's instead."""
    existing_file(paths.data_root / task.folder / name)
    local = task.data_root(paths.data_root) / task.folder / name
    if existing_file(local):
        return local
    pointer = f"put a copy there, or pass --data-root pointing at the folder that holds {task.folder}/{name}"
    if task.bundled:
        raise DataError(f"{local}: bundled file of task {task.name} is missing from the installed package")
    if task.hub_dataset is None:
        raise DataError(f"{local}: not found, and task {task.name} has no hub source; {pointer}")
    if not paths.download:
        raise DataError(f"{local}: not found (downloads are off); {pointer}")
    from huggingface_hub import hf_hub_download

    try:
        fetched = hf_hub_download(
            task.hub_dataset,
            task.hub_filename(name),
            repo_type="dataset",
            local_dir=task.data_root(paths.data_root),
        )
    except Exception as error:  # noqa: BLE001 - every hub failure becomes the same actionable message
        raise DataError(
            f"{local}: not found, and fetching {task.hub_filename(name)} from the hub dataset "
            f"{task.hub_dataset} failed ({type(error).__name__}: {error}); {pointer}"
        ) from None
    return Path(fetched)


def existing_file(path: Path) -> bool:
    """False when nothing is at `path`, True for a readable regular file. Anything else there (a broken symbolic
    link, a FIFO, a directory, a file this process may not read) is a DataError naming it; nothing is opened."""
    try:
        path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as error:
        raise DataError(f"{path}: cannot be inspected ({error.strerror}); {_NO_STAND_IN}") from None
    try:
        mode = path.stat().st_mode
    except OSError as error:
        if path.is_symlink():
            raise DataError(
                f"{path}: a broken symbolic link (to {os.readlink(path)}: {error.strerror}); {_NO_STAND_IN}"
            ) from None
        raise DataError(f"{path}: cannot be inspected ({error.strerror}); {_NO_STAND_IN}") from None
    if not stat.S_ISREG(mode):
        kind = _NOT_REGULAR.get(stat.S_IFMT(mode), "a special file")
        raise DataError(f"{path}: {kind}, not a regular file; {_NO_STAND_IN}")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: not readable (permission denied); {_NO_STAND_IN}")
    return True


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror or error})") from None


def count_questions(task: TaskSpec, data_root: Path) -> int | None:
    """The number of records in the task's question file, or None when the file is not on disk."""
    path = task.question_path(data_root)
    if not path.is_file():
        return None
    return len(parse_records(path, read_bytes(path)))


def read_records_file(path: Path) -> list[dict[str, Any]]:
    """The records of a question or answer file, as stored (ids keep their JSON type)."""
    return parse_records(path, read_bytes(path))


def json_array(path: Path, raw: bytes) -> list[Any]:
    """A file holding one JSON array; malformed JSON is reported with its line and column."""
    try:
        records = json.loads(raw)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}:{error.colno}: malformed JSON: {error.msg}") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error})") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON array of records, found {type(records).__name__}")
    return records


def parse_records(path: Path, raw: bytes) -> list[dict[str, Any]]:
    """The records of a reference-format file: objects, each with a string or integer `id`."""
    records = json_array(path, raw)
    for index, record in enumerate(records):
        if not isinstance(record, dict) or "id" not in record:
            raise DataError(f"{path}: record #{index} is not an object with an 'id'")
        if not isinstance(record["id"], (str, int)) or isinstance(record["id"], bool):
            raise DataError(f"{path}: record #{index} has an id of type {type(record['id']).__name__}")
    return records


def resolve_media_path(path: str, data_root: Path, media_root: Path | None) -> Path:
    """Resolve a media path as the authors' files write it (relative to the folder that holds `data/`)."""
    return MediaPaths(data_root, media_root).resolve(path)


class MediaPaths:
    """Media paths of one task load resolved as the authors' files write them: an absolute path as it is; a relative
    one under `media_root` when given, else under the data root's parent when the file is there, else under the data
    root when it is there, else under the parent. Each distinct path is resolved once, and whether a file is there is
    read from one listing per folder, not a stat per sample (a name the listing lacks or shows as a link is looked up
    itself: a case-insensitive file system, a link's target)."""

    def __init__(self, data_root: Path, media_root: Path | None):
        self.data_root = data_root
        self.media_root = media_root
        self._resolved: dict[str, Path] = {}
        self._names: dict[Path, frozenset[str] | None] = {}

    def resolve(self, path: str) -> Path:
        resolved = self._resolved.get(path)
        if resolved is None:
            resolved = self._resolved[path] = self._resolution(Path(path))
        return resolved

    def _resolution(self, candidate: Path) -> Path:
        if candidate.is_absolute():
            return candidate
        if self.media_root is not None:
            return self.media_root / candidate
        bases = (self.data_root.parent, self.data_root)
        for base in bases:
            if self._exists(base / candidate):
                return base / candidate
        return bases[0] / candidate

    def _exists(self, path: Path) -> bool:
        folder = path.parent
        if folder not in self._names:
            self._names[folder] = _plain_names(folder)
        names = self._names[folder]
        return names is not None and (path.name in names or path.exists())


def _plain_names(folder: Path) -> frozenset[str] | None:
    """The names in a folder that are not symbolic links; None when there is no such folder (an empty set when it
    cannot be listed: each name is then looked up itself)."""
    try:
        with os.scandir(folder) as entries:
            return frozenset(entry.name for entry in entries if not entry.is_symlink())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return frozenset()
