"""Throughput of the `openai-compatible` adapter against a loopback stub server that takes 0.25 s per request: one
batch of 32 text-only samples at concurrency 1 (serial) and at concurrency 8. The target is a speed-up of at least
0.7 x 8. Run as `python tests/benchmarks/openai_concurrency.py`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mcub.models.base import Runtime
from mcub.models.openai_compatible.arguments import OpenAICompatibleArguments
from mcub.models.openai_compatible.model import OpenAICompatibleModel
from mcub.schema import Sample

SAMPLES = 32
DELAY_S = 0.25
CONCURRENCY = 8


def timed_batch(url: str, concurrency: int) -> tuple[float, list[str]]:
    """Seconds to answer one batch of every sample at this concurrency, and the answers."""
    arguments = OpenAICompatibleArguments(model="stub", base_url=url, concurrency=concurrency)
    model = OpenAICompatibleModel(Runtime(), arguments)
    samples = [Sample("bench", str(i), f"DELAY question {i}\nA. x\nB. y", (), {"A": "x", "B": "y"}, "A")
               for i in range(SAMPLES)]  # fmt: skip
    start = time.perf_counter()
    answers = model.generate(model.prepare(samples, [[] for _ in samples]), 16)
    return time.perf_counter() - start, answers


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from stub_openai_server import StubOpenAIServer

    stub = StubOpenAIServer(delay_s=DELAY_S, deadline_s=120)
    try:
        serial, serial_answers = timed_batch(stub.url, 1)
        concurrent, concurrent_answers = timed_batch(stub.url, CONCURRENCY)
    finally:
        stub.close()
    if serial_answers != concurrent_answers or not all(answer.startswith("A") for answer in serial_answers):
        raise SystemExit("the serial and concurrent answers differ or failed")
    speedup = serial / concurrent
    print(f"{SAMPLES} requests, stub server {DELAY_S} s per request")
    print(f"serial (concurrency 1):     {serial:.2f} s  {SAMPLES / serial:.2f} requests/s")
    print(f"concurrency {CONCURRENCY}:              {concurrent:.2f} s  {SAMPLES / concurrent:.2f} requests/s"
          f"  (most in flight: {stub.most_in_flight})")  # fmt: skip
    print(f"speed-up:                   {speedup:.2f}x  (target >= {0.7 * CONCURRENCY:.1f}x)")
    if speedup < 0.7 * CONCURRENCY:
        raise SystemExit("below the target")


if __name__ == "__main__":
    main()
