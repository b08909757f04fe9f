"""Timing one call on a device, and what the bench says of times taken on a CPU."""

from __future__ import annotations

import time

CPU_NOTE = "on CPU these times only show that the bench runs: they are not throughput figures"


def seconds_per_call(function, device: str, warmup: int, iterations: int) -> float:
    import torch

    for _ in range(warmup):
        function()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        function()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iterations
