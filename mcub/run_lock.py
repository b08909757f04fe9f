"""One writer per run directory: an advisory lock (`RUN_DIR/.lock`) held for as long as a process evaluates or
rescores the run. The kernel drops the lock when its holder dies, so a lock left by a killed process is detected
as stale and taken over; the file names its holder (pid, host, start) for the message a second process gets.
torchrun ranks share a run by design: only the main rank takes the lock."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from mcub.errors import McubError

LOCK_FILE = ".lock"


class RunLocked(McubError):
    """Another process holds the run directory."""


class RunLock:
    """`with RunLock(run_dir, log):` holds the run directory's lock; a second holder is refused with RunLocked."""

    def __init__(self, run_dir: Path, log=None):
        self.path = run_dir / LOCK_FILE
        self.log = log
        self._handle: Any = None

    def __enter__(self) -> RunLock:
        import fcntl

        if not self.path.parent.is_dir():
            raise McubError(f"{self.path.parent}: no such run directory")
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            handle.close()
            raise RunLocked(
                f"{self.path.parent}: in use by {_describe(holder)}; wait for it to finish, or stop it "
                "(one process writes a run; torchrun ranks share one)"
            ) from None
        earlier = _holder(handle)
        if earlier and self.log is not None:
            self.log(f"note: {self.path} was left by {_describe(earlier)}, which is no longer running; taken over")
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}) + "\n")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc_info) -> None:
        handle, self._handle = self._handle, None
        handle.seek(0)
        handle.truncate()
        handle.close()


def _holder(handle) -> dict[str, Any] | None:
    handle.seek(0)
    try:
        holder = json.loads(handle.read() or "null")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else None


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process"
    since = holder.get("since")
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, int | float) else "?"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} (since {started})"
