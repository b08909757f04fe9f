"""Host-side decoding times, before and after: a 60 s 720p mp4 through LanguageBind's preprocessing, a batch of 8
questions on that one video through the runner's loader (no workers: what one worker spends), and a 30 s stereo
44.1 kHz wav through the BEATs fbank, for this checkout and, with `--base DIR` (e.g. `git archive <commit> | tar
-x -C DIR`), for that one: min and median of `--repeats` rounds, each round a fresh interpreter per checkout in
turn (so that a busy machine slows both alike) timing every figure once after a first, untimed call.

Run as `python tests/benchmarks/decoding.py [--base DIR] [--workdir DIR] [--repeats 5]`; the media are written
deterministically into the work directory once (the video takes about a minute)."""

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

CHECKOUT = Path(__file__).resolve().parents[2]
FIGURES = {
    "video": "720p 60 s mp4, languagebind-224",
    "batch": "batch of 8 on one 720p video, loader",
    "audio": "stereo 44.1 kHz wav, beats-fbank",
}


def write_media(directory: Path) -> dict[str, Path]:
    """The bench's media, written once into `directory` (kept when already there)."""
    from mcub.media import synthetic

    directory.mkdir(parents=True, exist_ok=True)
    files = {"video": directory / "video-720p-60s.mp4", "audio": directory / "stereo-44k-30s.wav"}
    if not files["video"].is_file():
        partial = directory / "partial.mp4"
        synthetic.write_video(partial, frames=1800, width=1280, height=720, fps=30)
        partial.replace(files["video"])
    if not files["audio"].is_file():
        synthetic.write_audio(files["audio"], seconds=30.0, rate=44100, channels=2)
    return files


def measure(files: dict[str, str], repeats: int) -> dict[str, list[float]]:
    """Seconds per repeat of each figure, with the mcub that this interpreter imports."""
    import itertools

    from mcub.media import load_media
    from mcub.runner.loading import SampleDataset, load_batches
    from mcub.schema import Sample

    video, audio = files["video"], files["audio"]
    samples = [
        Sample("bench", str(i), "<video> Which?", (("video", video),), {}, "A", {"question_index": i}) for i in range(8)
    ]
    dataset = SampleDataset(samples, {"video": "languagebind-224"})

    def batch():
        [loaded] = load_batches(dataset, [list(range(8))], itertools.count().__next__, 0, False, False, "bench")
        if any(item.error for item in loaded):
            raise RuntimeError(loaded[0].error)

    runs = {"video": lambda: load_media("video", video), "batch": batch, "audio": lambda: load_media("audio", audio)}
    seconds: dict[str, list[float]] = {}
    for name, run in runs.items():
        run()  # imports and first-call costs are not what is measured
        seconds[name] = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def measured_in(checkout: Path, files: dict[str, Path], repeats: int) -> dict[str, list[float]]:
    """`measure` in a fresh interpreter importing mcub from `checkout`."""
    environment = {**os.environ, "PYTHONPATH": str(checkout)}
    arguments = json.dumps({name: str(path) for name, path in files.items()})
    command = [sys.executable, __file__, "--measure", arguments, "--repeats", str(repeats)]
    output = subprocess.run(command, env=environment, cwd=checkout, capture_output=True, text=True, check=True)
    return json.loads(output.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, help="a checkout of the code to compare with (e.g. the base commit)")
    parser.add_argument("--workdir", type=Path, help="where the media are written (default: a temporary directory)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure), args.repeats)))
        return
    with tempfile.TemporaryDirectory(prefix="mcub-decoding-") as temporary:
        files = write_media(args.workdir or Path(temporary))
        checkouts = ({"base": args.base.resolve()} if args.base else {}) | {"this": CHECKOUT}
        results: dict[str, dict[str, list[float]]] = {name: {figure: [] for figure in FIGURES} for name in checkouts}
        for _ in range(args.repeats):
            for name, path in checkouts.items():
                for figure, seconds in measured_in(path, files, 1).items():
                    results[name][figure] += seconds
    print(f"ms, min / median of {args.repeats} (cores: {os.cpu_count()})")
    print("| figure | " + " | ".join(results) + " |")
    print("|---|" + "---:|" * len(results))
    for figure, label in FIGURES.items():
        cells = [f"{min(r[figure]) * 1e3:.1f} / {statistics.median(r[figure]) * 1e3:.1f}" for r in results.values()]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
