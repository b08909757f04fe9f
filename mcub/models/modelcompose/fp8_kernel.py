"""FP8 activation quantisation in one Triton launch: `fp8.torch_quantise_rows` on the same CUDA device, bit for bit.

One program per row, over tiles of at most MAX_BLOCK features: a first pass for the row's largest |value| (exact:
a max), a second that divides each value by the row's scale and rounds it to float8_e4m3fn; about 5 bytes of memory
traffic per 16-bit element where the torch path moves about 21. Each step rounds as ATen's CUDA kernels do:

- the scale is `amax / 448` as ATen computes it on CUDA, amax times float32(1 / 448) (a division by a CPU scalar
  is a multiplication by its reciprocal there; ATen's CPU kernel divides), or 1 where amax is 0 or NaN;
- x / scale is the correctly rounded float32 division (`div_rn`: Triton's own is approximate);
- the clamp to +-448 (NaN kept) and the rounding to e4m3fn (to nearest, ties to even, subnormals included) are
  written on the bits, as c10's `fp8e4m3fn_from_fp32_value`, and the byte is stored through a uint8 view: Triton's
  interpreter converts float32 to float8e4nv wrongly at rounding carries (124.06 became 64, not 128).

Floating-point contraction is off. Imports triton: `fp8.quantise_rows` imports it only for CUDA inputs with triton
installed.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import triton
import triton.language as tl
from torch import Tensor

from mcub.models.modelcompose.fp8 import FP8_DTYPE, FP8_MAX

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
"""Input dtypes the kernel takes; float64 rows would be divided in float64 by the torch path, which they keep."""
MAX_BLOCK = 4096
"""The most features of one tile; longer rows loop over tiles (11,008 at Vicuna-7B's MLP: three)."""
SCALE_FACTOR = (torch.tensor(1.0) / FP8_MAX).item()
"""float32(1 / 448), exactly as a Python float: what ATen's CUDA division by the scalar 448 multiplies by."""


def supports(x: Tensor) -> bool:
    """Whether the kernel takes x: a non-empty 2-D CUDA tensor (rows x features) of a dtype in DTYPES."""
    return x.is_cuda and x.ndim == 2 and x.dtype in DTYPES and x.numel() > 0


@triton.jit
def _e4m3_bits(value):
    """float32 `value` clamped to +-448 (NaN stays NaN) and rounded to float8_e4m3fn: its byte, as int32."""
    bits = value.to(tl.int32, bitcast=True)
    sign = (bits >> 24) & 0x80
    magnitude = bits & 0x7FFFFFFF
    exponent = magnitude >> 23
    # normal results: the exponent rebiased from 127 to 7, the mantissa cut to 3 bits, to nearest even
    normal = (magnitude + (((7 - 127) << 23) + 0x7FFFF) + ((magnitude >> 20) & 1)) >> 20
    # below 2**-6, the smallest normal: the value in units of 2**-9 (the subnormal step), to nearest even
    mantissa = tl.where(exponent > 0, (magnitude & 0x7FFFFF) | 0x800000, magnitude)
    shift = tl.minimum(tl.maximum(141 - exponent, 1), 30)
    units = mantissa >> shift
    rest = mantissa & ((1 << shift) - 1)
    half = 1 << (shift - 1)
    subnormal = units + ((rest > half) | ((rest == half) & ((units & 1) == 1))).to(tl.int32)
    rounded = tl.where(exponent < 121, subnormal, normal)
    clamped = tl.where(magnitude >= 0x43E00000, 0x7E, rounded)  # 448 and beyond, infinity included
    return tl.where(magnitude > 0x7F800000, 0x7F, clamped) | sign


@triton.jit
def _quantise_rows(x_ptr, q_ptr, scale_ptr, features, stride_row, stride_feature, scale_factor, BLOCK: tl.constexpr):
    """Program `row` writes the e4m3fn bytes of row `row` (contiguous) and its float32 scale."""
    row = tl.program_id(0).to(tl.int64)
    source = x_ptr + row * stride_row
    target = q_ptr + row * features
    offsets = tl.arange(0, BLOCK)
    largest = tl.zeros([BLOCK], dtype=tl.float32)
    unordered = tl.zeros([BLOCK], dtype=tl.int32)
    for start in range(0, features, BLOCK):
        index = start + offsets
        value = tl.load(source + index.to(tl.int64) * stride_feature, mask=index < features, other=0.0).to(tl.float32)
        largest = tl.maximum(largest, tl.abs(value))
        unordered = tl.maximum(unordered, (value != value).to(tl.int32))
    amax = tl.max(largest, axis=0)
    scale = tl.where((amax > 0) & (tl.max(unordered, axis=0) == 0), amax * scale_factor, 1.0)
    for start in range(0, features, BLOCK):
        index = start + offsets
        inside = index < features
        value = tl.load(source + index.to(tl.int64) * stride_feature, mask=inside, other=0.0).to(tl.float32)
        tl.store(target + index, _e4m3_bits(tl.math.div_rn(value, scale)).to(tl.uint8), mask=inside)
    tl.store(scale_ptr + row, scale)


def kernel_quantise_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """x (rows x features) in float8_e4m3fn (contiguous) with one float32 scale per row (rows x 1): the bytes and
    scales of `fp8.torch_quantise_rows(x)` on a CUDA device."""
    if x.ndim != 2 or x.dtype not in DTYPES or x.numel() == 0:
        raise ValueError(
            f"the FP8 quantisation kernel takes non-empty 2-D tensors of {', '.join(map(str, DTYPES))}, "
            f"got {tuple(x.shape)} {x.dtype}"
        )
    rows, features = x.shape
    quantised = torch.empty(rows, features, dtype=FP8_DTYPE, device=x.device)
    scale = torch.empty(rows, 1, dtype=torch.float32, device=x.device)
    options = launch_options(features)
    with torch.cuda.device(x.device) if x.is_cuda else nullcontext():  # triton launches on the current device
        _quantise_rows[(rows,)](x, quantised.view(torch.uint8), scale, features, *x.stride(), SCALE_FACTOR, **options)
    return quantised, scale


def launch_options(features: int) -> dict[str, int | bool]:
    """The kernel's compile options for rows of `features`: tiles of up to MAX_BLOCK features, 16 a thread (up to
    8 warps), and no floating-point contraction."""
    block = min(MAX_BLOCK, triton.next_power_of_2(features))
    return {"BLOCK": block, "num_warps": max(1, min(8, block // 512)), "enable_fp_fusion": False}
