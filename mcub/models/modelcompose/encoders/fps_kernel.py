"""Farthest-point sampling in one Triton launch: one program per cloud, its running minimum held in registers.

The picks are those of `pointbert.loop_farthest_point_sample` on the same CUDA device, bit for bit: each step
rounds as ATen's kernels do there. `x - c` and its square are rounded to the input dtype; the three squares are
added in float32 in the order of ATen's CUDA reduction over a last dimension of 3 (`Reduce.cuh`: two lanes, the
first accumulating coordinates 0 and 2, then the lanes combined: `(x^2 + z^2) + y^2`; the CPU adds
`(x^2 + y^2) + z^2`) and rounded to the input dtype once; the running minimum is float32 from 1e10; ties go to
the lowest index. Floating-point contraction is off, so no multiply and add are fused into one rounding.
Roundings to bfloat16 are written out on the bits because Triton's interpreter truncates float32 to bfloat16.

Imports triton: `pointbert.farthest_point_sample` imports this module only for CUDA inputs with triton installed.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import triton
import triton.language as tl
from torch import Tensor

MAX_POINTS = 16384
"""The most points a cloud may have for the kernel: every point's coordinates and running minimum stay in the
registers of one program (ptxas for sm_90: 114 to 127 registers and no spills up to 8,192 points at 16 warps,
a few hundred bytes spilled at 16,384); larger clouds take the loop."""
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
"""Input dtypes the kernel takes; float64 clouds keep a float64 running minimum in the reference, and the loop."""


def supports(xyz: Tensor) -> bool:
    """Whether the kernel takes xyz: a CUDA tensor (B, N, 3) of a dtype in DTYPES with at most MAX_POINTS points."""
    return xyz.is_cuda and xyz.ndim == 3 and xyz.shape[2] == 3 and xyz.dtype in DTYPES and xyz.shape[1] <= MAX_POINTS


@triton.jit
def _rounded(value, dtype: tl.constexpr):
    """float32 `value` rounded to `dtype` (to nearest, ties to even), returned as float32."""
    if dtype == tl.float16:
        value = value.to(tl.float16).to(tl.float32)
    elif dtype == tl.bfloat16:
        bits = value.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        value = bits.to(tl.float32, bitcast=True)
    return value


@triton.jit(do_not_specialize=["start"])
def _farthest_point_rows(
    xyz_ptr,
    picks_ptr,
    start,
    num_points,
    count,
    stride_row,
    stride_point,
    stride_coord,
    BLOCK: tl.constexpr,
):
    """Program `row` writes the `count` picks of cloud `row`, starting from index `start`."""
    dtype: tl.constexpr = xyz_ptr.dtype.element_ty
    row = tl.program_id(0).to(tl.int64)
    cloud = xyz_ptr + row * stride_row
    picks = picks_ptr + row * count
    index = tl.arange(0, BLOCK)
    inside = index < num_points
    at = cloud + index * stride_point
    x = tl.load(at, mask=inside, other=0.0).to(tl.float32)
    y = tl.load(at + stride_coord, mask=inside, other=0.0).to(tl.float32)
    z = tl.load(at + 2 * stride_coord, mask=inside, other=0.0).to(tl.float32)
    running = tl.where(inside, 1e10, -1.0)
    current = start
    for step in range(count):
        tl.store(picks + step, current.to(tl.int64))
        centre = cloud + current * stride_point
        dx = _rounded(x - tl.load(centre).to(tl.float32), dtype)
        dy = _rounded(y - tl.load(centre + stride_coord).to(tl.float32), dtype)
        dz = _rounded(z - tl.load(centre + 2 * stride_coord).to(tl.float32), dtype)
        squared_x = _rounded(dx * dx, dtype)
        squared_y = _rounded(dy * dy, dtype)
        squared_z = _rounded(dz * dz, dtype)
        running = tl.minimum(running, _rounded((squared_x + squared_z) + squared_y, dtype))
        current = tl.argmax(running, axis=0, tie_break_left=True)


def kernel_farthest_point_sample(xyz: Tensor, count: int, start: int) -> Tensor:
    """Indices (B, count) of the farthest-point picks from xyz (B, N, 3), every row starting at `start`."""
    batch, num_points, coordinates = xyz.shape
    if coordinates != 3 or xyz.dtype not in DTYPES or num_points > MAX_POINTS:
        raise ValueError(
            f"the FPS kernel takes (B, N <= {MAX_POINTS}, 3) clouds of {', '.join(map(str, DTYPES))}, "
            f"got {tuple(xyz.shape)} {xyz.dtype}"
        )
    if not 0 <= start < num_points:
        raise ValueError(f"FPS start index {start} is outside the cloud's {num_points} points")
    picks = torch.empty(batch, count, dtype=torch.long, device=xyz.device)
    block = triton.next_power_of_2(num_points)
    with torch.cuda.device(xyz.device) if xyz.is_cuda else nullcontext():  # triton launches on the current device
        _farthest_point_rows[(batch,)](xyz, picks, start, num_points, count, *xyz.stride(), **launch_options(block))
    return picks


def launch_options(block: int) -> dict[str, int | bool]:
    """The kernel's compile options for a power-of-two `block` of points: 16 points a thread (up to 16 warps),
    and no floating-point contraction (a fused multiply-add would round the fp32 sum differently from ATen's)."""
    return {"BLOCK": block, "num_warps": max(1, min(16, block // 512)), "enable_fp_fusion": False}
