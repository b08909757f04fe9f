"""Work sharing across torchrun ranks, on one node or several: each rank claims the next unclaimed batch from a
counter in the process group's store, so a fast rank takes more. A rank that loses the others (a node stopped, the
network failed) raises PeerLost instead of a traceback or a wait without end."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from mcub.errors import PeerLost, RunError

PEER_TIMEOUT = timedelta(minutes=30)
"""How long a rank waits for the others (at a barrier, for a value the main rank shares) before it gives up: longer
than the slowest rank's model loading or batch, so that only a rank that stopped or cannot be reached runs into it."""

Result = TypeVar("Result")


class Distributed:
    """This process's place among torchrun ranks (or alone), with a shared counter for the work queue. `rank` is the
    global rank (over every node); the device of a rank follows its rank on its node (LOCAL_RANK)."""

    def __init__(self, rank: int = 0, world_size: int = 1, store: Any = None):
        self.rank = rank
        self.world_size = world_size
        self._store = store
        self._local_counters: dict[str, int] = {}
        self._lost = False

    @classmethod
    def from_environment(cls) -> Distributed:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        import torch.distributed as dist

        # gloo on every device: ranks exchange no tensors, only barriers and the store's counter; a gloo barrier fails
        # as soon as it finds a lost peer's connection closed, where NCCL's would hold GPU memory and wait it out.
        dist.init_process_group("gloo", timeout=PEER_TIMEOUT)
        return cls(dist.get_rank(), world_size, dist.distributed_c10d._get_default_store())

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_device(self, device: str) -> str:
        """The device of this rank: `cuda` means the rank's own GPU on its node (LOCAL_RANK) under torchrun."""
        return rank_device(device) if self.world_size > 1 else device

    def claim(self, key: str) -> int:
        """The next unclaimed index under `key`, atomically across ranks."""
        if self._store is None:
            self._local_counters[key] = self._local_counters.get(key, 0) + 1
            return self._local_counters[key] - 1
        return int(self._with_peers(f"claiming a batch of {key}", lambda: self._store.add(f"mcub/{key}", 1))) - 1

    def share(self, key: str, value: str | None) -> str:
        """The main rank's `value`, on every rank."""
        if self._store is None:
            return value or ""
        if self.is_main:
            self._with_peers(f"sharing {key}", lambda: self._store.set(f"mcub/{key}", value or ""))
        return self._with_peers(f"waiting for rank 0's {key}", lambda: self._store.get(f"mcub/{key}")).decode()

    def check_shared(self, path: Path) -> None:
        """Check that this rank reads the file the main rank wrote at `path`: ranks on every node write their records
        into the run directory, so it must be on a filesystem that every node mounts."""
        if self._store is None:
            return
        written = self.share(f"file/{path.name}", path.read_text(encoding="utf-8") if self.is_main else None)
        if self.is_main:
            return
        seen = path.read_text(encoding="utf-8") if path.is_file() else None
        if seen != written:
            missing = "does not see" if seen is None else "reads another file than"
            raise RunError(
                f"{path}: rank {self.rank} (host {socket.gethostname()}) {missing} the one rank 0 wrote; under "
                "torchrun on several nodes, --output-dir must be a directory that every node shares (NFS, Lustre)"
            )

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            self._with_peers("waiting for the other ranks at a barrier", dist.barrier)

    def close(self) -> None:
        """Tear the process group down; one that lost a rank is left to the process's exit (its teardown could wait
        on the lost rank)."""
        if self.world_size > 1 and not self._lost:
            import torch.distributed as dist

            dist.destroy_process_group()

    def _with_peers(self, doing: str, operation: Callable[[], Result]) -> Result:
        """`operation()`, its failure (a closed connection, no answer within PEER_TIMEOUT) raised as PeerLost."""
        try:
            return operation()
        except RuntimeError as error:  # torch's store and gloo errors; DistError derives from RuntimeError
            self._lost = True
            cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise PeerLost(
                f"rank {self.rank} of {self.world_size} lost the other ranks while {doing} (a rank or node stopped, "
                f"the network failed, or none answered within {PEER_TIMEOUT.total_seconds() / 60:g} minutes): {cause}"
            ) from None


def rank_device(device: str) -> str:
    """`cuda` as this torchrun rank's own GPU on its node (LOCAL_RANK, not the global RANK); other devices as given."""
    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if device == "cuda" else device
