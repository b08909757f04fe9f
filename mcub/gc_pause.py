"""Bulk loads (a run's records, a task's question files) without the cyclic garbage collector: it walks every
container object made so far each time enough new ones are made, which costs about as much as the load itself and
finds nothing to collect in parsed data."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """The block runs with the cyclic collector paused (reference counting still frees what is dropped); it runs
    again afterwards if it ran before. Nested pauses are fine."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
