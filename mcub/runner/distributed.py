"""Work sharing across torchrun ranks: each rank claims the next unclaimed batch from a counter in the process
group's store, so a fast rank takes more."""

from __future__ import annotations

import os
from typing import Any


class Distributed:
    """This process's place among torchrun ranks (or alone), with a shared counter for the work queue."""

    def __init__(self, rank: int = 0, world_size: int = 1, store: Any = None):
        self.rank = rank
        self.world_size = world_size
        self._store = store
        self._local_counters: dict[str, int] = {}

    @classmethod
    def from_environment(cls, device: str) -> Distributed:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        import torch.distributed as dist

        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return cls(dist.get_rank(), world_size, dist.distributed_c10d._get_default_store())

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_device(self, device: str) -> str:
        """The device of this rank: `cuda` means the rank's own GPU (LOCAL_RANK) under torchrun."""
        if self.world_size > 1 and device == "cuda":
            return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
        return device

    def claim(self, key: str) -> int:
        """The next unclaimed index under `key`, atomically across ranks."""
        if self._store is None:
            self._local_counters[key] = self._local_counters.get(key, 0) + 1
            return self._local_counters[key] - 1
        return int(self._store.add(f"mcub/{key}", 1)) - 1

    def share(self, key: str, value: str | None) -> str:
        """The main rank's `value`, on every rank."""
        if self._store is None:
            return value or ""
        if self.is_main:
            self._store.set(f"mcub/{key}", value or "")
        return self._store.get(f"mcub/{key}").decode()

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
