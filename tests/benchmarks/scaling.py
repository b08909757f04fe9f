"""Host-side cost of the run-reading commands at 1k, 10k and 100k records: wall and CPU seconds (user + system: the
steadier figure on a shared machine) and peak memory (the RSS of each command's process) of `compare`,
`leaderboard validate`, `report`, `eval --resume` with every sample done, and `data check`, plus the exact McNemar
statistic at 24k discordant items and the open-answer bootstrap at the largest size. The runs are made by
`mcub eval --model random` on an `mcub-sample`-format task of N questions that the script writes: each question's
text is its own, and its four media inputs come from a small pool of tiny files, so that `data check` measures the
per-sample work rather than decoding. Not a timed test: run it as

    python tests/benchmarks/scaling.py [--sizes 1000,10000,100000] [--repeats 3] [--source CHECKOUT]

`--source` measures another checkout of mcub (e.g. a worktree at an older commit) on the same runs."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POOL = 16
"""Distinct media files per modality; question i uses file i % POOL."""
TASK = "mcub-sample"
OPTIONS = ("A cat", "A synthetic test signal", "A river", "A bell")


def write_task(data_root: Path, size: int) -> None:
    """`test/mcub-sample.json` and its answer file with `size` questions, and the media pool under `pool/`."""
    from mcub.media import synthetic

    pool = data_root / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    (data_root / "test").mkdir(parents=True, exist_ok=True)
    for k in range(POOL):
        synthetic.write_image(pool / f"image-{k}.png", 48, 32, seed=k)
        synthetic.write_audio(pool / f"audio-{k}.wav", 0.2, 16_000, 1, 220.0 * (k + 1))
        synthetic.write_video(pool / f"video-{k}.mp4", 8, 64, 48, 12)
        synthetic.write_points(pool / f"point-{k}.npy", 256, 6, seed=k)
    lettered = "\n".join(f"{chr(ord('A') + index)}. {text}" for index, text in enumerate(OPTIONS))
    questions, answers = [], []
    for index in range(size):
        k = index % POOL
        question = f"What do these inputs of item {index} share?"
        prompt = f"image: <image>\naudio: <audio>\nvideo: <video>\npoint: <point>\n{question}\n{lettered}"
        inputs = {"vision": [f"data/pool/image-{k}.png"], "audio": [f"data/pool/audio-{k}.wav"],
                  "video": [f"data/pool/video-{k}.mp4"], "point": [f"data/pool/point-{k}.npy"]}  # fmt: skip
        turns = [{"from": "human", "value": prompt}, {"from": "gpt", "value": None}]
        questions.append({"id": f"q{index}", "conversations": turns, "modal_inputs": inputs})
        answers.append({"id": f"q{index}", "conversations": [turns[0], {"from": "gpt", "value": "ABCD"[index % 4]}]})
    (data_root / "test" / "mcub-sample.json").write_text(json.dumps(questions), encoding="utf-8")
    (data_root / "test" / "mcub-sample-answer.json").write_text(json.dumps(answers), encoding="utf-8")


def measured(command: list[str], env: dict[str, str]) -> tuple[float, float, float, int]:
    """(wall seconds, CPU seconds (user + system), peak RSS in MiB, exit code) of one command in its own process."""
    start = time.perf_counter()
    with open(os.devnull, "w") as quiet:
        process = subprocess.Popen(command, stdout=quiet, stderr=subprocess.PIPE, env=env, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        error = process.stderr.read()
        process.stderr.close()
    if process.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{error}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, process.returncode


def mcub(module: str, *arguments: str) -> list[str]:
    return [sys.executable, "-m", f"mcub.{module}", *arguments]


def commands(workdir: Path) -> dict[str, list[str]]:
    data = ["--data-root", str(workdir / "data")]
    runs = workdir / "runs" / "random"
    resume = ["--model", "random", "--tasks", TASK, *data, "--output-dir", str(workdir / "runs"), "--no-progress"]
    return {
        "compare": mcub("compare", str(runs / "base"), str(runs / "new")),
        "leaderboard validate": mcub("leaderboard", "validate", str(runs / "base"), *data),
        "report": mcub("report", str(runs / "base"), str(runs / "new")),
        "eval --resume": mcub("eval", *resume, "--run-name", "base", "--resume"),
        "data check": mcub("data", "check", "--tasks", TASK, *data, "--no-progress", "--workers", "2"),
    }


def build_runs(workdir: Path, size: int, env: dict[str, str]) -> None:
    write_task(workdir / "data", size)
    for name, seed in (("base", "0"), ("new", "1")):
        arguments = ["--model", "random", "--tasks", TASK, "--data-root", str(workdir / "data"), "--output-dir",
                     str(workdir / "runs"), "--run-name", name, "--seed", seed, "--no-progress"]  # fmt: skip
        seconds, _, _, code = measured(mcub("eval", *arguments), env)
        if code:
            raise SystemExit(f"building the {name} run of {size} records failed")
        print(f"  built run {name} ({size} records) in {seconds:.1f} s", flush=True)


def statistic_seconds(env: dict[str, str]) -> str:
    """Min / median seconds of the exact McNemar p-value at 24k discordant items (12k each way, and 11k / 13k)."""
    code = (
        "import time, statistics\nfrom mcub.stats import mcnemar_exact\ntimes = []\n"
        "for _ in range(5):\n    start = time.perf_counter()\n"
        "    mcnemar_exact(12000, 12000); mcnemar_exact(11000, 13000); times.append(time.perf_counter() - start)\n"
        "print(f'{min(times):.4f} / {statistics.median(times):.4f}')"
    )
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def bootstrap_cost(size: int, env: dict[str, str]) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of `mean_score` on `size` seeded open-answer scores, in a process of its own."""
    code = (
        "import time, numpy\nfrom mcub.scoring import mean_score\n"
        f"values = numpy.random.default_rng(0).random({size}).tolist()\n"
        "start = time.perf_counter(); mean_score(values, 0); print(time.perf_counter() - start)"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, text=True)
    _, _, usage = os.wait4(process.pid, 0)
    seconds = float(process.stdout.read())
    process.stdout.close()
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="records per run, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command (min / median reported)")
    parser.add_argument("--source", type=Path, help="the checkout of mcub to measure (default: the installed one)")
    parser.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.source:
        env["PYTHONPATH"] = str(args.source.resolve())
    print(f"exact McNemar at d = 24k (two p-values), s min / median: {statistic_seconds(env).strip()}")
    sizes = [int(size) for size in args.sizes.split(",")]
    seconds, peak = bootstrap_cost(max(sizes), env)
    print(f"open-answer bootstrap (mean_score) at {max(sizes)} items: {seconds:.2f} s, peak RSS {peak:.0f} MiB")
    with tempfile.TemporaryDirectory() as temporary:
        root = args.workdir or Path(temporary)
        for size in sizes:
            workdir = root / str(size)
            if not (workdir / "runs" / "random" / "new" / "summary.json").is_file():
                build_runs(workdir, size, env)
            print(f"{size} records: wall s and CPU s min / median, peak RSS MiB max ({args.repeats} runs)", flush=True)
            for name, command in commands(workdir).items():
                results = [measured(command, env) for _ in range(args.repeats)]
                wall, cpu = ([result[index] for result in results] for index in (0, 1))
                peak = max(result[2] for result in results)
                print(f"  {name:<22} wall {min(wall):7.2f} / {statistics.median(wall):7.2f}  cpu {min(cpu):7.2f} / "
                      f"{statistics.median(cpu):7.2f}  {peak:6.0f} MiB  (exit {results[-1][3]})")  # fmt: skip


if __name__ == "__main__":
    main()
