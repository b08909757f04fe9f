"""Running Triton kernels through Triton's interpreter on CPU tensors, in child processes: TRITON_INTERPRET=1 must be
set before triton compiles a kernel, and must not reach the other tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch


def interpret(folder: Path, script: str, cases_by_dtype: Mapping[torch.dtype, Mapping[str, Any]]) -> dict[str, Any]:
    """`script`, run as `python -c SCRIPT INPUTS OUTPUTS` (INPUTS: a torch.save'd dict of cases, OUTPUTS: where it
    saves its dict of results), on each dtype's cases keyed "DTYPE NAME", one child per dtype at once; their results
    merged."""
    environment = {**os.environ, "TRITON_INTERPRET": "1"}
    children = []
    for dtype, cases in cases_by_dtype.items():
        inputs, outputs = folder / f"{dtype}-cases.pt", folder / f"{dtype}-results.pt"
        torch.save({f"{dtype} {name}": case for name, case in cases.items()}, inputs)
        command = [sys.executable, "-c", script, str(inputs), str(outputs)]
        children.append((subprocess.Popen(command, env=environment, stderr=subprocess.PIPE, text=True), outputs))
    results = {}
    for child, outputs in children:
        _, errors = child.communicate(timeout=120)
        assert child.returncode == 0, errors
        results |= torch.load(outputs, weights_only=True)
    return results
