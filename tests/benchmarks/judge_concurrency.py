"""Wall time of judging 32 open answers against a loopback stub judge that takes 0.5 s per call: serially
(concurrency 1) and at the default concurrency. Run as `python tests/benchmarks/judge_concurrency.py`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mcub.judge import Judge, Judgement, JudgeRequest
from mcub.schema import JudgeConfig

ANSWERS = 32
DELAY_S = 0.5


def timed_judging(url: str, concurrency: int) -> tuple[float, list[Judgement]]:
    """Seconds to judge every answer at this concurrency, and the judgements."""
    judge = Judge(JudgeConfig(model="stub-judge", base_url=url, concurrency=concurrency))
    requests = [JudgeRequest("caption", f"a red chair, take {index}", "a red chair") for index in range(ANSWERS)]
    start = time.perf_counter()
    judgements = judge.judge_all(requests)
    return time.perf_counter() - start, judgements


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from stub_judge import StubJudge

    default = JudgeConfig.model_fields["concurrency"].default
    stub = StubJudge(default_reply="70#the type matches", delay_s=DELAY_S)
    try:
        serial, serial_judgements = timed_judging(stub.url, 1)
        concurrent, concurrent_judgements = timed_judging(stub.url, default)
    finally:
        stub.close()
    if serial_judgements != concurrent_judgements or any(j.verdict != 70.0 for j in serial_judgements):
        raise SystemExit("the serial and concurrent judgements differ or failed")
    print(f"{ANSWERS} open answers, stub judge {DELAY_S} s per call")
    print(f"serial (concurrency 1):          {serial:.2f} s")
    print(f"concurrent (concurrency {default}):      {concurrent:.2f} s  (most in flight: {stub.most_in_flight})")
    print(f"speed-up:                        {serial / concurrent:.2f}x")


if __name__ == "__main__":
    main()
