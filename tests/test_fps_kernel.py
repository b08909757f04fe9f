"""The Triton FPS kernel: the reference loop's picks, run by Triton's interpreter on CPU; compiled for sm_90."""

from __future__ import annotations

import re

import pytest
import torch
from triton_interpreter import interpret

from mcub.models.modelcompose.encoders.pointbert import (
    farthest_point_sample,
    fps_start_index,
    loop_farthest_point_sample,
)

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# (x, y, z) whose squares sum differently in the CPU's order, (x^2 + y^2) + z^2, and CUDA's, (x^2 + z^2) + y^2:
# the CPU's sum is the smaller (found by a search over k * 2^e coordinates; checked in the test).
ORDER_SENSITIVE = {
    torch.float32: (1.0, 3 * 2**-13, 1.0),
    torch.float16: (11.0, 3 * 2**-10, 3.25),
    torch.bfloat16: (3.0, 9 * 2**-13, 2.75),
}
# Triton's interpreter runs the kernel on CPU tensors when TRITON_INTERPRET is set before triton compiles it:
# in a child process, so that the setting stays out of this one.
INTERPRET = """
import sys
import torch
from mcub.models.modelcompose.encoders.fps_kernel import kernel_farthest_point_sample
cases = torch.load(sys.argv[1], weights_only=True)
picks = {name: kernel_farthest_point_sample(c["xyz"], c["count"], c["start"]) for name, c in cases.items()}
torch.save(picks, sys.argv[2])
"""


def random_cloud(batch: int, count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, count, 3, generator=generator) * 2 - 1


def lattice_with_duplicates(batch: int) -> torch.Tensor:
    """(batch, 128, 3): a 4 x 4 x 2 lattice, every point four times, shuffled differently in each row."""
    axes = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), torch.arange(2.0), indexing="ij")
    lattice = torch.stack(axes, -1).reshape(-1, 3).repeat(4, 1)
    generator = torch.Generator().manual_seed(9)
    return torch.stack([lattice[torch.randperm(len(lattice), generator=generator)] for _ in range(batch)])


def order_cloud(dtype: torch.dtype) -> torch.Tensor:
    """(1, 3, 3): the origin, p = (x, y, z) and q = (x, z, y); from the origin the CPU picks q next, CUDA p."""
    x, y, z = ORDER_SENSITIVE[dtype]
    return torch.tensor([[[0.0, 0.0, 0.0], [x, y, z], [x, z, y]]], dtype=dtype)


def cases(dtype: torch.dtype) -> dict[str, dict]:
    """Clouds, counts and starts for one dtype: random (with N not a power of two), seeded, exact ties and
    duplicate points, every point picked, a strided view (xyz of xyz+rgb), and the summation-order cloud."""
    cloud = random_cloud(2, 1000, seed=1).to(dtype)
    xyzrgb = torch.cat([random_cloud(2, 300, seed=2), torch.rand(2, 300, 3)], -1).to(dtype)
    return {
        "random": {"xyz": cloud, "count": 16, "start": fps_start_index(1000, None)},
        "seeded": {"xyz": cloud, "count": 16, "start": fps_start_index(1000, 7)},
        "ties": {"xyz": lattice_with_duplicates(2).to(dtype), "count": 36, "start": 5},
        "every point": {"xyz": random_cloud(1, 40, seed=3).to(dtype), "count": 40, "start": 0},
        "strided": {"xyz": xyzrgb[..., :3], "count": 8, "start": 3},
        "order": {"xyz": order_cloud(dtype), "count": 3, "start": 0},
    }


def cuda_order_reference(xyz: torch.Tensor, count: int, start: int) -> torch.Tensor:
    """The reference loop as it runs on CUDA, on the CPU: coordinates 1 and 2 swapped, so the CPU's sum order
    over the last dimension, (0 + 1) + 2, adds the squares in CUDA's, (x^2 + z^2) + y^2."""
    return loop_farthest_point_sample(xyz[..., [0, 2, 1]], count, start)


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The kernel's picks for every case of every dtype, by Triton's interpreter: a child process per dtype."""
    pytest.importorskip("triton", reason="the FPS kernel is written in Triton")
    return interpret(tmp_path_factory.mktemp("fps"), INTERPRET, {dtype: cases(dtype) for dtype in DTYPES})


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_interpreted_kernel_picks_what_the_loop_picks_on_cuda(interpreted, dtype):
    for name, case in cases(dtype).items():
        picks = interpreted[f"{dtype} {name}"]
        assert picks.dtype == torch.long and picks.shape == (case["xyz"].shape[0], case["count"]), name
        assert torch.equal(picks, cuda_order_reference(case["xyz"], case["count"], case["start"])), name
    assert interpreted[f"{dtype} seeded"][0, 0] == fps_start_index(1000, 7) != 0
    every_point = interpreted[f"{dtype} every point"][0]
    assert sorted(every_point.tolist()) == list(range(40))
    for row in interpreted[f"{dtype} ties"].tolist():  # the 32 lattice points, then index 0: every distance is 0
        assert len(set(row[:32])) == 32 and row[32:] == [0, 0, 0, 0]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernel_adds_the_squares_in_cuda_order_not_the_cpus(interpreted, dtype):
    x, y, z = (torch.tensor(value, dtype=dtype) for value in ORDER_SENSITIVE[dtype])
    cpu_sum = ((x.float() ** 2 + y.float() ** 2) + z.float() ** 2).to(dtype)
    cuda_sum = ((x.float() ** 2 + z.float() ** 2) + y.float() ** 2).to(dtype)
    assert torch.stack([x, y, z]).square().sum() == cpu_sum < cuda_sum
    assert loop_farthest_point_sample(order_cloud(dtype), 3, 0).tolist() == [[0, 2, 1]]
    assert interpreted[f"{dtype} order"].tolist() == [[0, 1, 2]]


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_kernel_compiles_for_sm90_without_fused_multiply_adds(dtype):
    triton = pytest.importorskip("triton", reason="the FPS kernel is written in Triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from mcub.models.modelcompose.encoders import fps_kernel

    options = fps_kernel.launch_options(8192)
    signature = {"xyz_ptr": f"*{dtype}", "picks_ptr": "*i64", "start": "i32", "num_points": "i32", "count": "i32"}
    signature |= {"stride_row": "i32", "stride_point": "i32", "stride_coord": "i32", "BLOCK": "constexpr"}
    source = ASTSource(fn=fps_kernel._farthest_point_rows, signature=signature, constexprs={"BLOCK": options["BLOCK"]})
    compiled = triton.compile(
        source, target=GPUTarget("cuda", 90, 32), options={k: v for k, v in options.items() if k != "BLOCK"}
    )
    ptx = compiled.asm["ptx"]
    assert compiled.metadata.num_warps == 16
    assert "fma." not in ptx and re.search(r"\badd\.rn\.f32\b", ptx)
    assert not re.search(r"\b(add|sub|mul)\.f32\b", ptx)  # without .rn, ptxas itself may fuse them


def test_kernel_refuses_what_it_does_not_take():
    pytest.importorskip("triton", reason="the FPS kernel is written in Triton")
    from mcub.models.modelcompose.encoders import fps_kernel

    cloud = random_cloud(1, 16, seed=4)
    assert not fps_kernel.supports(cloud)  # CPU tensors take the loop
    with pytest.raises(ValueError, match=r"got \(1, 16, 3\) torch.float64"):
        fps_kernel.kernel_farthest_point_sample(cloud.double(), 4, 0)
    with pytest.raises(ValueError, match=r"got \(1, 16385, 3\)"):
        fps_kernel.kernel_farthest_point_sample(random_cloud(1, fps_kernel.MAX_POINTS + 1, seed=4), 4, 0)
    with pytest.raises(ValueError, match="start index 16 is outside the cloud's 16 points"):
        fps_kernel.kernel_farthest_point_sample(cloud, 4, 16)


def test_count_below_one_is_refused():
    with pytest.raises(ValueError, match="count of at least 1, got 0"):
        farthest_point_sample(random_cloud(1, 16, seed=5), 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: the kernel against ATen's own loop")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernel_picks_what_the_loop_picks_on_cuda(dtype):
    pytest.importorskip("triton", reason="the FPS kernel is written in Triton")
    from mcub.models.modelcompose.encoders import fps_kernel

    full = {"xyz": (random_cloud(8, 8192, seed=6) * 40).to(dtype), "count": 512, "start": fps_start_index(8192, 1)}
    for name, case in {**cases(dtype), "full size": full}.items():
        xyz = case["xyz"].cuda()
        assert fps_kernel.supports(xyz)
        expected = loop_farthest_point_sample(xyz, case["count"], case["start"])
        assert torch.equal(fps_kernel.kernel_farthest_point_sample(xyz, case["count"], case["start"]), expected), name
    assert loop_farthest_point_sample(order_cloud(dtype).cuda(), 3, 0).tolist() == [[0, 1, 2]]  # CUDA's sum order
    assert farthest_point_sample(order_cloud(dtype).cuda(), 3).tolist() == [[0, 1, 2]]
