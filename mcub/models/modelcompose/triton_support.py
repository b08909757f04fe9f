"""Whether a tensor may go to one of the project's Triton kernels (fps_kernel, fp8_kernel): it is on CUDA and triton
is installed (looked up once per process, not on every call of a hot path)."""

from __future__ import annotations

import importlib.util
from functools import cache

from torch import Tensor


@cache
def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def on_triton_device(tensor: Tensor) -> bool:
    """A CUDA tensor, with triton installed: the kernel modules can be imported and may take it."""
    return tensor.is_cuda and triton_installed()
