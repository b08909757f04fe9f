"""FP8 prefill (`--dtype fp8`, modelcompose/fp8.py): row-wise quantisation, the FP8 GEMM against its formula and
float32, the switch that keeps FP8 to prompt passes, `--dtype fp8` on the tiny DAMC end to end, and its refusal by
every other adapter. On the CPU the GEMM is the emulated one; torch._scaled_mm itself runs only on Hopper."""

import json
from pathlib import Path
from typing import get_args

import pytest
import torch
from torch import nn

from mcub.eval import main as eval_main
from mcub.models import base
from mcub.models.base import ModelError, compute_dtype, load_model_specs, resolve_dtype
from mcub.models.modelcompose import fp8
from mcub.models.modelcompose.fp8 import (
    Fp8Linear,
    Fp8Switch,
    emulated_scaled_mm,
    gemm_name,
    install_fp8_prefill,
    quantise_rows,
)
from mcub.models.modelcompose.llm import ComposedLM, Span
from mcub.models.modelcompose.lora import LANGUAGE, TARGET_MODULES, RoutingState, install_routed_lora
from mcub.models.modelcompose.tiny import tiny_damc_layout
from mcub.request import Dtype
from mcub.throughput.synthetic import damc_adapters

# e4m3 has 3 mantissa bits: rounding moves a normal value by at most 2**-4 of itself; subnormals (below 2**-6) are
# spaced 2**-9 apart, so they move by at most 2**-10 (in units of the row's scale).
HALF_STEP, HALF_SUBNORMAL_STEP = 2**-4, 2**-10
LAYERS = 2


def _rows(seed=0):
    """Rows of very different sizes, a zero row and an outlier."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 40, generator=generator) * torch.tensor([1.0, 1e-3, 50.0, 0.0, 1.0, 3.0])[:, None]
    x[4, 7] = -900.0
    return x


def _error_bound(x, scale):
    """How far each dequantised element may be from `x`: half a step of its e4m3 binade, or of the subnormals."""
    return torch.maximum(x.abs() * HALF_STEP, scale * HALF_SUBNORMAL_STEP)


def test_row_scales_map_each_rows_largest_value_to_the_e4m3_maximum():
    x = _rows()
    q, scale = quantise_rows(x)
    assert q.dtype == torch.float8_e4m3fn and q.shape == x.shape
    assert scale.dtype == torch.float32 and scale.shape == (6, 1)
    amax = x.abs().amax(-1, keepdim=True)
    nonzero = amax[:, 0] > 0
    assert torch.equal(scale[nonzero], amax[nonzero] / 448)
    assert scale[3, 0] == 1 and not q[3].float().any()
    assert torch.equal(q.float().abs().amax(-1)[nonzero], torch.full((5,), 448.0))


def test_the_round_trip_is_within_half_an_e4m3_step():
    x = _rows()
    q, scale = quantise_rows(x)
    error = (q.float() * scale - x).abs()
    assert (error <= _error_bound(x, scale) * (1 + 2**-20)).all()
    assert error[4].max() > 0 and error[4, 7] == 0  # the outlier is the row's maximum: exact


def test_sixteen_bit_inputs_quantise_as_their_float32_values():
    x = _rows().to(torch.bfloat16)
    q16, scale16 = quantise_rows(x)
    q32, scale32 = quantise_rows(x.float())
    assert torch.equal(q16.float(), q32.float()) and torch.equal(scale16, scale32)


def _fp8_linear(in_features, out_features, dtype, seed=0):
    torch.manual_seed(seed)
    linear = nn.Linear(in_features, out_features, bias=False).to(dtype)
    switch = Fp8Switch()
    return linear, Fp8Linear(linear, switch, "test projection"), switch


def test_the_weight_is_quantised_once_per_output_channel_and_kept_in_16_bits():
    linear, layer, _ = _fp8_linear(64, 48, torch.bfloat16)
    q, scale = quantise_rows(linear.weight.detach())
    assert torch.equal(layer.weight_fp8.float(), q.float()) and torch.equal(layer.weight_scale, scale.T)
    assert layer.weight_scale.shape == (1, 48) and layer.weight_scale.is_contiguous()
    assert layer.weight is linear.weight and not layer.uses_scaled_mm  # a CPU weight: the emulated GEMM


def test_the_fp8_linear_is_the_scaled_gemm_of_its_quantised_input_and_weight():
    linear, layer, switch = _fp8_linear(64, 48, torch.bfloat16)
    x = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    with switch.prefill():
        y = layer(x)
    assert y.shape == (2, 5, 48) and y.dtype == torch.bfloat16
    qx, sx = quantise_rows(x.reshape(-1, 64))
    qw, sw = quantise_rows(linear.weight.detach())
    exact = (qx.double() * sx.double()) @ (qw.double() * sw.double()).T  # the dequantised operands' product
    # float32 accumulation of 64 exact products, then bfloat16's rounding of the output (at most 2**-8 of it)
    assert torch.allclose(y.reshape(-1, 48).double(), exact, rtol=2**-8, atol=1e-6)
    assert not torch.equal(y, linear(x))  # FP8, not the 16-bit weight


def test_the_emulated_gemm_equals_torch_scaled_mm_where_this_torch_has_it_on_the_cpu():
    generator = torch.Generator().manual_seed(4)
    qa, sa = quantise_rows(torch.randn(24, 256, generator=generator))
    qw, sw = quantise_rows(torch.randn(80, 256, generator=generator))
    try:
        kernel = torch._scaled_mm(qa, qw.T, scale_a=sa, scale_b=sw.T.contiguous(), out_dtype=torch.bfloat16)
    except (RuntimeError, NotImplementedError) as error:
        pytest.skip(f"torch {torch.__version__} has no CPU torch._scaled_mm with row-wise scales: {error}")
    assert torch.equal(emulated_scaled_mm(qa, sa, qw, sw.T.contiguous(), torch.bfloat16), kernel)


HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (9, 0)


@pytest.mark.skipif(not HOPPER, reason="torch._scaled_mm with row-wise scales needs CUDA compute capability 9.0+")
def test_on_hopper_the_fp8_linear_runs_torch_scaled_mm_as_the_emulated_gemm_computes():
    switch = Fp8Switch()
    layer = Fp8Linear(nn.Linear(256, 128, bias=False).to("cuda", torch.bfloat16), switch, "cuda projection")
    odd = Fp8Linear(nn.Linear(200, 128, bias=False).to("cuda", torch.bfloat16), switch, "odd projection")
    assert layer.uses_scaled_mm and not odd.uses_scaled_mm  # 200 is no multiple of 16: emulated
    x = torch.randn(3, 50, 256, device="cuda", dtype=torch.bfloat16)
    with switch.prefill():
        y = layer(x)
    rows, scale = quantise_rows(x.reshape(-1, 256))
    expected = emulated_scaled_mm(rows, scale, layer.weight_fp8, layer.weight_scale, torch.bfloat16)
    # the same float32 sums in another order: at most one bfloat16 rounding step (2**-8 relative) apart
    assert torch.allclose(y.reshape(-1, 128).float(), expected.float(), rtol=2**-7, atol=1e-4)


def test_the_fp8_linear_stays_within_the_e4m3_error_bound_of_float32():
    linear, layer, switch = _fp8_linear(64, 48, torch.float32)
    x = torch.randn(10, 64, generator=torch.Generator().manual_seed(5))
    with switch.prefill():
        y = layer(x).double()
    w = linear.weight.detach()
    reference = x.double() @ w.double().T
    _, sx = quantise_rows(x)
    _, sw = quantise_rows(w)
    ex, ew = _error_bound(x, sx).double(), _error_bound(w, sw).double()
    # |x'w' - xw| <= |x' - x||w| + |x||w' - w| + |x' - x||w' - w|, summed over the inner dimension
    bound = ex @ w.abs().double().T + x.abs().double() @ ew.T + ex @ ew.T
    assert ((y - reference).abs() <= bound + 1e-5).all()
    relative = float((y - reference).norm() / reference.norm())
    assert 0.005 < relative < 0.05  # a few percent, as 3 mantissa bits give: quantised, and not by much


def test_a_linear_with_a_bias_is_refused_by_name():
    with pytest.raises(ValueError, match="layer 3 mlp.up_proj has a bias"):
        Fp8Linear(nn.Linear(8, 8), Fp8Switch(), "layer 3 mlp.up_proj")


def _composed(dtype=torch.bfloat16, seed=0):
    """A tiny Llama with DAMC routed LoRA (random experts), in `dtype`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256,
    )  # fmt: skip
    llama = LlamaForCausalLM(config).to(dtype).eval()
    adapters, routes = damc_adapters(llama, 4, "cpu", dtype)
    state = RoutingState()
    install_routed_lora(llama.model.layers, adapters, routes, state)
    return llama, state


def _spans(seed=0):
    generator = torch.Generator().manual_seed(seed)
    block = torch.randn(6, 32, generator=generator) * 0.5
    return [
        [Span(LANGUAGE, token_ids=(5, 9, 12)), Span("image", embeddings=block), Span(LANGUAGE, token_ids=(7, 30))],
        [Span(LANGUAGE, token_ids=(11, 3, 8, 40, 41))],
    ]


def test_every_projection_of_every_layer_is_replaced_and_the_lm_head_kept():
    llama, _ = _composed()
    weights = {(i, path): layer.get_submodule(path).base.weight for i, layer in enumerate(llama.model.layers)
               for path in TARGET_MODULES}  # fmt: skip
    install_fp8_prefill(llama.model.layers)
    for (index, path), weight in weights.items():
        projection = llama.model.layers[index].get_submodule(path).base
        assert isinstance(projection, Fp8Linear) and projection.weight is weight
    assert type(llama.lm_head) is nn.Linear
    assert not [m for layer in llama.model.layers for m in layer.modules() if type(m) is nn.Linear]
    assert gemm_name(llama.model.layers) == "emulated"
    with pytest.raises(ValueError, match="no FP8 linear"):
        gemm_name([nn.Linear(4, 4)])


def test_only_the_prompt_pass_runs_in_fp8_and_each_input_is_quantised_once(monkeypatch):
    llama, state = _composed()
    reference = ComposedLM(*_composed())
    quantised: list[tuple[int, ...]] = []
    real = fp8.quantise_rows
    monkeypatch.setattr(fp8, "quantise_rows", lambda x: quantised.append(tuple(x.shape)) or real(x))
    lm = ComposedLM(llama, state, install_fp8_prefill(llama.model.layers))
    assert len(quantised) == 7 * LAYERS  # the weights, at load
    active: list[bool] = []
    for module in llama.modules():
        if isinstance(module, Fp8Linear):
            module.register_forward_hook(lambda m, args, out: active.append(m.switch.active))
    quantised.clear()
    batch = lm.pack(_spans())
    tokens = lm.generate(batch, max_new_tokens=4, eos_id=-1)
    projections = 7 * LAYERS
    assert active == [True] * projections + [False] * projections * 3  # the prompt, then three decoding steps
    assert len(quantised) == 4 * LAYERS  # q, k and v share their input, gate and up theirs
    assert all(len(row) == 4 for row in tokens) and not lm.fp8.active
    active.clear()
    lm.continuation_logprobs(batch, [[[5, 6, 7], [8]], [[9], [10, 11]]])
    assert active == [True] * projections + [False] * projections  # the continuations' pass: 16 bits
    found, expected = lm.prefill_logits(batch), reference.prefill_logits(reference.pack(_spans()))
    assert not torch.equal(found, expected)
    unpadded = batch.attention_mask.bool()
    assert torch.nn.functional.cosine_similarity(found, expected, dim=-1)[unpadded].min() > 0.99


def test_outside_the_prompt_pass_the_fp8_model_computes_exactly_as_the_16_bit_model():
    llama, state = _composed()
    reference, _ = _composed()
    switch = install_fp8_prefill(llama.model.layers)
    embeddings = llama.model.embed_tokens(torch.tensor([[5, 9, 12, 7]]))
    with torch.inference_mode():
        expected = reference.model(inputs_embeds=embeddings).last_hidden_state
        assert torch.equal(llama.model(inputs_embeds=embeddings).last_hidden_state, expected)
        with switch.prefill():
            assert not torch.equal(llama.model(inputs_embeds=embeddings).last_hidden_state, expected)


def test_the_switch_is_off_and_holds_no_input_after_a_failed_prefill():
    switch = Fp8Switch()
    with pytest.raises(RuntimeError), switch.prefill():
        switch.quantised_input(torch.ones(2, 16))
        raise RuntimeError("the forward pass failed")
    assert not switch.active and switch._input is None


def test_fp8_is_a_dtype_of_the_modelcompose_adapters_only():
    assert compute_dtype("fp8") is torch.bfloat16 and compute_dtype("float16") is torch.float16
    specs = load_model_specs()
    for spec in specs.values():
        if spec.adapter in ("modelcompose", "modelcompose-tiny"):
            assert resolve_dtype(spec, "cpu", "fp8") == "fp8"
            continue
        with pytest.raises(ModelError, match=f"model {spec.name}: dtype fp8 .* only for the ModelCompose adapters"):
            resolve_dtype(spec, "cpu", "fp8")
    with pytest.raises(ModelError, match="unknown dtype 'fp4'; known: float32, bfloat16, float16, fp8"):
        base.check_dtype(specs["tiny-damc"], "fp4")
    assert get_args(Dtype) == ("auto", *base.DTYPES)  # the request's, the flag's and the models' dtypes agree


def test_eval_refuses_fp8_for_another_adapter_before_reading_weights(tmp_path, capsys):
    code = eval_main(["--model", "random", "--dtype", "fp8", "--tasks", "mcub-sample", "--output-dir", str(tmp_path)])
    assert code == 2
    assert "error: model random: dtype fp8 (an FP8 prefill) is only for the ModelCompose adapters" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "random").exists()


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> str:
    layout = tiny_damc_layout(tmp_path_factory.mktemp("cache") / "tiny-damc")
    return str(Path(layout["base"]).parent)


def test_tiny_damc_runs_with_dtype_fp8_on_the_cpu_and_its_run_says_fp8(tiny_cache, tmp_path):
    common = ["--model", "tiny-damc", "--model-arg", f"cache_dir={tiny_cache}", "--tasks", "mcub-sample"]
    common += ["--output-dir", str(tmp_path), "--no-progress", "--num-workers", "0", "--device", "cpu"]
    common += ["--protocol", "loglik", "--batch-size", "2", "--model-arg", f"feature_cache={tmp_path / 'features'}"]
    assert eval_main([*common, "--run-name", "fp8", "--dtype", "fp8"]) == 0
    assert eval_main([*common, "--run-name", "bf16", "--dtype", "bfloat16"]) == 0

    def run(name):
        directory = tmp_path / "tiny-damc" / name
        lines = (directory / "records" / "mcub-sample.jsonl").read_text().splitlines()
        return json.loads((directory / "summary.json").read_text()), [json.loads(line) for line in lines]

    (summary, records), (_, bf16_records) = run("fp8"), run("bf16")
    assert summary["model"]["dtype"] == "fp8" and summary["settings"]["dtype"] == "fp8"
    assert "dtype: fp8" in (tmp_path / "tiny-damc" / "fp8" / "run.yaml").read_text()
    assert summary["model"]["details"]["fp8_prefill"] == {
        "weights": "float8_e4m3fn, one scale per output channel, quantised at load",
        "activations": "float8_e4m3fn, one scale per token",
        "gemm": "emulated",
        "compute_dtype": "bfloat16",
    }
    assert records and all(r["error"] is None for r in records)
    assert all(m.get("features") != "cache" for r in records for m in r["media"])
    assert all(m["features"] == "cache" for r in bf16_records for m in r["media"])  # encoders: bfloat16 in both
    found = [value for r in records for value in r["option_logliks"].values()]
    expected = [value for r in bf16_records for value in r["option_logliks"].values()]
    assert found != expected and max(abs(a - b) for a, b in zip(found, expected, strict=True)) < 0.1
    assert [r["extracted"] for r in records] == [r["extracted"] for r in bf16_records]
