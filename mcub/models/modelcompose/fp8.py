"""FP8 prefill linears (`--dtype fp8`): the decoder layers' projections run their prompt pass in FP8, every other
pass (decoding steps, continuation passes) on the 16-bit weights they keep.

Scales: each weight is quantised once, at load time, to float8_e4m3fn with one scale per output channel (per row
of W: one outlier channel costs only its own precision, and the scale is applied to the output column after the
GEMM, which `torch._scaled_mm` supports as row-wise scaling); activations are quantised at run time with one scale
per token (row). A row's scale maps its largest |value| to 448, the largest e4m3fn value; an all-zero row gets
scale 1.

The GEMM is `torch._scaled_mm` (float32 accumulation, scales applied to the float32 product, one cast to the
output dtype) on CUDA devices of compute capability 9.0 or later (row-wise scaling needs Hopper) for bfloat16
outputs and in/out features that are multiples of 16 (the kernel's constraint); anywhere else the same
computation is emulated (quantise, the exact float8 values in float32, matmul, scale, cast): the same numbers up
to the order of float32 accumulation, without the speed-up."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mcub.models.modelcompose.triton_support import on_triton_device

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8_DTYPE).max
SCALED_MM_MULTIPLE = 16
"""`torch._scaled_mm` needs the inner dimension and the output features to be multiples of this."""
SCALED_MM_CAPABILITY = (9, 0)


class Fp8Switch:
    """Whether the FP8 linears sharing it compute in FP8: only inside `prefill()` (a prompt's forward pass); and the
    quantised input of the last of them, for the next that reads the same tensor."""

    def __init__(self) -> None:
        self.active = False
        self._input: Tensor | None = None
        self._quantised: tuple[Tensor, Tensor] | None = None

    @contextmanager
    def prefill(self) -> Iterator[None]:
        self.active = True
        try:
            yield
        finally:
            self.active = False
            self._input = self._quantised = None

    def quantised_input(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The rows of `x` (... x in) quantised by `quantise_rows`, once for consecutive projections that read the
        same tensor (q, k and v; gate and up), which transformers' Llama never changes in place between them. The
        tensor is held until the next input or the prefill's end, so a new one cannot be taken for it."""
        if x is not self._input:
            self._input = x
            self._quantised = quantise_rows(x.reshape(-1, x.shape[-1]))
        return self._quantised


def quantise_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """A 2-D tensor in float8_e4m3fn with one float32 scale per row (shape rows x 1): x ~ q * scale; this runs on
    every prefill's inputs. CUDA tensors the Triton kernel takes (`fp8_kernel.supports`: float32, float16 or
    bfloat16) are quantised in one launch with the bytes and scales of `torch_quantise_rows` on that device; the
    rest (CPU, float64, no triton) take `torch_quantise_rows`."""
    if on_triton_device(x):
        from mcub.models.modelcompose import fp8_kernel

        if fp8_kernel.supports(x):
            return fp8_kernel.kernel_quantise_rows(x)
    return torch_quantise_rows(x)


def torch_quantise_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """`quantise_rows` in eager torch: the values are divided in float32 (a 16-bit x is promoted). On CUDA, ATen
    computes `amax / FP8_MAX` as amax times float32(1 / 448), on the CPU as a division: about half of all scales
    differ in their last bit between the two devices."""
    amax = torch.linalg.vector_norm(x, float("inf"), dim=-1, keepdim=True).float()
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    return (x / scale).clamp_(-FP8_MAX, FP8_MAX).to(FP8_DTYPE), scale


def emulated_scaled_mm(a: Tensor, a_scale: Tensor, w: Tensor, w_scale: Tensor, out_dtype: torch.dtype) -> Tensor:
    """What the row-wise scaled FP8 GEMM computes: (a @ w^T) in float32 from the float8 values, times the row scales
    of `a` (m x 1) and of `w` (1 x n, one per output channel), cast once to `out_dtype`."""
    return ((a.float() @ w.float().T) * a_scale * w_scale).to(out_dtype)


def scaled_mm_supported(weight: Tensor) -> bool:
    """Whether `torch._scaled_mm` computes this weight's FP8 GEMM with row-wise scales on its device."""
    return (
        weight.device.type == "cuda"
        and torch.cuda.get_device_capability(weight.device) >= SCALED_MM_CAPABILITY
        and weight.dtype == torch.bfloat16
        and all(size % SCALED_MM_MULTIPLE == 0 for size in weight.shape)
    )


class Fp8Linear(nn.Module):
    """A bias-free Linear holding its 16-bit weight and, quantised once, its FP8 weight and per-output-channel scales;
    it computes in FP8 while its switch is active, with the 16-bit weight otherwise."""

    def __init__(self, linear: nn.Linear, switch: Fp8Switch, name: str):
        super().__init__()
        if linear.bias is not None:
            raise ValueError(f"FP8 prefill: {name} has a bias; only bias-free projections are quantised")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.switch = switch
        quantised, scale = quantise_rows(linear.weight.detach())
        self.register_buffer("weight_fp8", quantised, persistent=False)
        self.register_buffer("weight_scale", scale.T.contiguous(), persistent=False)
        self.uses_scaled_mm = scaled_mm_supported(linear.weight)

    def forward(self, x: Tensor) -> Tensor:
        if not self.switch.active:
            return F.linear(x, self.weight)
        rows, row_scale = self.switch.quantised_input(x)
        if self.uses_scaled_mm:
            y = torch._scaled_mm(
                rows, self.weight_fp8.T, scale_a=row_scale, scale_b=self.weight_scale, out_dtype=x.dtype
            )
        else:
            y = emulated_scaled_mm(rows, row_scale, self.weight_fp8, self.weight_scale, x.dtype)
        return y.view(*x.shape[:-1], self.out_features)


def install_fp8_prefill(layers: Sequence[nn.Module]) -> Fp8Switch:
    """Replace every nn.Linear inside the decoder layers (the seven projections, or the base Linear of their routed
    LoRA wrappers) by an Fp8Linear; all share the returned switch. Call it after the base weights are final (a
    dense language delta folded in): the FP8 weights are quantised here, once."""
    switch = Fp8Switch()
    for index, layer in enumerate(layers):
        linears = [(name, module) for name, module in layer.named_modules() if type(module) is nn.Linear]
        for name, linear in linears:
            parent_name, _, child_name = name.rpartition(".")
            fp8 = Fp8Linear(linear, switch, f"layer {index} {name}")
            setattr(layer.get_submodule(parent_name), child_name, fp8)
    return switch


def gemm_name(layers: Sequence[nn.Module]) -> str:
    """How the FP8 linears of the layers compute: `torch._scaled_mm`, `emulated`, or `mixed` (some of each)."""
    kinds = {module.uses_scaled_mm for layer in layers for module in layer.modules() if isinstance(module, Fp8Linear)}
    if not kinds:
        raise ValueError("FP8 prefill: the layers hold no FP8 linear")
    return "mixed" if len(kinds) == 2 else "torch._scaled_mm" if kinds == {True} else "emulated"
