"""Quantized weights served as they are stored: GGUF blocks repacked code for code (int4) or per row (int8), the
packed matmul against dequantize-then-matmul, and what the planner counts.

Tolerances, derived: the CPU kernels take bfloat16 activations and bfloat16 scales/zeros, each rounded with a relative
error of at most u = 2^-9, and accumulate in float32. For W = (q - 8)·s + z each product x·w is then off by at most
about 3u·|x|·(|q - 8|·|s| + |z|) (int8: 2u·|x|·|q|·|s|), so |ours - reference| <= 3u · (|x| @ |W|ᵀ) per output,
with |W| taken term by term as above. Requantizing a 5/6/8-bit GGUF tensor into int8 rows adds at most half a step,
rowmax/254, to every weight: |x|.sum() · rowmax / 254 per output.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize, quantize
from gguf_blocks import DEMO_TYPES, K_SCALES, QWEN, SMOL, one_tensor_of_each_type, random_blocks

from engines.llm.models.quant_linear import QuantEmbedding, QuantLinear
from engines.llm.models.quantization import GROUP, QuantFormat, QuantizedTensor, from_gguf
from engines.llm.models.quantization import quantize as quantize_weight
from llm_kernels.cpu_extension import extension
from llm_kernels.reference import int4_matmul_reference, scaled_matmul_reference, pack_int4

U = 2.0 ** -9
CPU = torch.device("cpu")


def magnitude(weight) -> torch.Tensor:
    """|W| term by term: |q - 8|·|s| + |z| for int4, |q|·|s| for int8 (the scales as stored, in bfloat16)."""
    if weight.format == QuantFormat.INT8:
        return weight.codes.float().abs() * weight.scales.bfloat16().float()[:, None].abs()
    scales = weight.scales.bfloat16().float().repeat_interleave(GROUP, dim=1)
    zeros = weight.zeros.bfloat16().float().repeat_interleave(GROUP, dim=1)
    return (weight.codes.float() - 8).abs() * scales.abs() + zeros.abs()


def check_layer(blocks: np.ndarray, type_name: str, shape: tuple[int, int], seed: int = 0) -> None:
    """The packed layer's output against the gguf package's own dequantization, then a float32 matmul."""
    weight = from_gguf(blocks, type_name, shape)
    dense = torch.from_numpy(np.ascontiguousarray(
        dequantize(blocks, GGMLQuantizationType[type_name]).reshape(shape), dtype=np.float32))
    if weight.format == QuantFormat.INT4:  # a repack, not a requantization: code for code
        assert torch.equal(weight.dequantize(), dense), type_name
    x = torch.randn(5, shape[1], generator=torch.Generator().manual_seed(seed))
    ours = QuantLinear(weight, None, CPU)(x)
    want = x @ dense.t()
    bound = 3 * U * (x.abs() @ magnitude(weight).t()) + 1e-5
    if weight.format == QuantFormat.INT8:
        bound += x.abs().sum(dim=1, keepdim=True) * dense.abs().amax(dim=1)[None, :] / 254
    excess = ((ours - want).abs() - bound).max().item()
    assert excess <= 0, (type_name, excess)


@pytest.mark.parametrize("type_name", ["Q4_0", "Q4_1", "Q8_0", "Q5_0", "Q5_1"])
def test_packed_matmul_on_tensors_quantized_by_gguf(type_name):
    rng = np.random.default_rng(1)
    shape = (48, 256)
    weights = rng.standard_normal(shape).astype(np.float32) * rng.uniform(0.01, 1, (shape[0], 1)).astype(np.float32)
    check_layer(quantize(weights, GGMLQuantizationType[type_name]), type_name, shape)


@pytest.mark.parametrize("type_name", sorted(K_SCALES))
def test_packed_matmul_on_random_k_quant_blocks(type_name):
    """Random k-quant blocks (gguf has no quantizer for them): Q4_K repacks code for code, Q5_K and Q6_K into int8
    rows."""
    block_weights = GGML_QUANT_SIZES[GGMLQuantizationType[type_name]][0]
    shape = (32, 2 * block_weights)
    check_layer(random_blocks(type_name, *shape, np.random.default_rng(2)), type_name, shape)


@pytest.mark.parametrize("model", [QWEN, SMOL], ids=lambda m: m[0])
def test_packed_matmul_on_the_demo_files_real_tensors(real_models, model):
    """Every tensor type each demo file holds (Q4_1, Q8_0; Q4_K, Q5_0, Q6_K, Q8_0), one real tensor of each."""
    seen = set()
    for kind, blocks, shape in one_tensor_of_each_type(real_models / model[0] / model[1]):
        seen.add(kind)
        check_layer(blocks, kind, shape)
    assert seen >= DEMO_TYPES[model], seen


def layer_and_twin(dense: torch.Tensor, fmt: QuantFormat, x: torch.Tensor):
    """The weight quantized, its QuantLinear on the CPU, and the dequantize-then-matmul twin's output for x."""
    weight = quantize_weight(dense, fmt)
    layer = QuantLinear(weight, None, CPU)
    if fmt == QuantFormat.INT4:
        return weight, layer, int4_matmul_reference(x, pack_int4(weight.codes), layer.scales_zeros, GROUP)
    return weight, layer, scaled_matmul_reference(x, layer.codes, layer.scales)


def test_the_cpu_kernels_equal_the_reference_twins():
    """Same stored weights, two paths: torch's packed CPU kernels and the dequantize-then-matmul twins."""
    gen = torch.Generator().manual_seed(3)
    dense = torch.randn(64, 128, generator=gen)
    x = torch.randn(7, 128, generator=gen)
    for fmt in (QuantFormat.INT4, QuantFormat.INT8):  # the formats torch's packed CPU kernels serve
        weight, layer, twin = layer_and_twin(dense, fmt, x)
        bound = 3 * U * (x.abs() @ magnitude(weight).t()) + 1e-5
        assert ((layer(x) - twin).abs() - bound).max() <= 0, fmt
    odd = QuantLinear(quantize_weight(torch.randn(40, 64, generator=gen), QuantFormat.INT4), None, CPU)
    assert odd.packed.shape == (40, 32)  # 40 rows: not whole blocks of the CPU layout, so the reference layout, path
    assert torch.allclose(odd(x[:, :64]), x[:, :64] @ odd_dense(odd).t(), atol=1e-5)


def test_a_prefill_sized_step_multiplies_the_widened_weights_in_float32():
    """A step of DEQUANTIZE_FROM_ROWS rows or more (by format) skips the bfloat16 kernels: the same stored weights
    widened a slice at a time (torch's CPU int4 layout read back code for code) and multiplied in float32, as the
    twins do."""
    from budget.gguf import DEQUANTIZE_FROM_ROWS
    from llm_kernels.dispatch import pack_int4_for, unpack_int4_cpu

    gen = torch.Generator().manual_seed(4)
    for rows in (64, 192, 4096 + 64):  # whole blocks of 64; the last spans two of the twins' slices
        codes = torch.randint(0, 16, (rows, 96), generator=gen)
        assert torch.equal(unpack_int4_cpu(pack_int4_for(codes, CPU)).long(), codes), rows
    dense = torch.randn(128, 256, generator=gen)
    for fmt in (QuantFormat.INT4, QuantFormat.INT8):
        x = torch.randn(DEQUANTIZE_FROM_ROWS[fmt.value], 256, generator=gen)
        _, layer, twin = layer_and_twin(dense, fmt, x)
        assert torch.allclose(layer(x), twin, rtol=1e-5, atol=1e-5), fmt   # float32 sums, not bfloat16 rounding
        decode = layer(x[:1])
        assert not torch.allclose(decode, twin[:1], rtol=1e-6, atol=1e-6), fmt  # one row: the bfloat16 kernel


@pytest.mark.parametrize("m, n, k", [(1, 96, 128), (5, 130, 96), (40, 64, 256)])
def test_the_triton_int4_kernel_equals_its_reference_twin(m, n, k):
    """The CUDA path's Triton kernel (the interpreter here; natively on a GPU) against dequantize-then-matmul, in
    float32: decode's one row, a K that is not a whole number of tiles, N off the tile. Both sum K float32 products
    in different orders: |difference| <= 2·K·2^-24 · (|x| @ |W|ᵀ)."""
    from llm_kernels.triton_int4_matmul import int4_matmul_triton

    gen = torch.Generator().manual_seed(m)
    codes = torch.randint(0, 16, (n, k), generator=gen, dtype=torch.uint8)
    scales_zeros = torch.randn(k // GROUP, n, 2, generator=gen).bfloat16()
    x = torch.randn(m, k, generator=gen)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ours = int4_matmul_triton(x.to(device), pack_int4(codes).to(device), scales_zeros.to(device), GROUP).cpu()
    twin = int4_matmul_reference(x, pack_int4(codes), scales_zeros, GROUP)
    weight = (codes.float() - 8) * scales_zeros[..., 0].t().float().repeat_interleave(GROUP, dim=1) \
        + scales_zeros[..., 1].t().float().repeat_interleave(GROUP, dim=1)
    bound = 2 * k * 2.0 ** -24 * (x.abs() @ weight.abs().t())
    assert ((ours - twin).abs() - bound).max() <= 0


def odd_dense(layer: QuantLinear) -> torch.Tensor:
    from llm_kernels.reference import unpack_int4

    sz = layer.scales_zeros.float()
    scales = sz[..., 0].t().repeat_interleave(GROUP, dim=1)
    zeros = sz[..., 1].t().repeat_interleave(GROUP, dim=1)
    return (unpack_int4(layer.packed).float() - 8) * scales + zeros


def test_int4_round_to_nearest_error_is_at_most_half_a_step():
    dense = torch.randn(32, 256, generator=torch.Generator().manual_seed(4))
    weight = quantize_weight(dense, QuantFormat.INT4)
    step = weight.scales.repeat_interleave(GROUP, dim=1)
    assert ((weight.dequantize() - dense).abs() <= step / 2 + 1e-6).all()
    assert weight.codes.max() <= 15 and weight.codes.dtype == torch.uint8


def test_embeddings_gather_int8_rows():
    dense = torch.randn(100, 64, generator=torch.Generator().manual_seed(5))
    weight = quantize_weight(dense, QuantFormat.INT8)
    table = QuantEmbedding(weight, torch.float32, CPU)
    ids = torch.tensor([3, 99, 3, 0])
    want = weight.codes[ids].float() * weight.scales.bfloat16().float()[ids, None]
    assert torch.equal(table(ids), want)
    assert (table(ids) - dense[ids]).abs().max() <= dense.abs().amax() / 254 * 1.01 + 1e-6


def test_embeddings_gather_int4_rows():
    """int4 embeddings (an untied model's, quantized at load or a GGUF's Q4 table): a lookup gathers each row's codes
    and its groups' scales and zeros, and equals the dequantized row in the serving dtype's arithmetic."""
    dense = torch.randn(100, 64, generator=torch.Generator().manual_seed(9))
    weight = quantize_weight(dense, QuantFormat.INT4)
    table = QuantEmbedding(weight, torch.float32, CPU)
    ids = torch.tensor([3, 99, 3, 0])
    rounded = QuantizedTensor(QuantFormat.INT4, weight.codes, weight.scales.bfloat16().float(),
                              weight.zeros.bfloat16().float())
    assert torch.equal(table(ids), rounded.dequantize()[ids])
    assert table.nibbles.shape == (100, 32) and table.scales.shape == table.zeros.shape == (100, 2)


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_on_the_fly_quantization_of_a_16_bit_folder(tiny_models, fmt):
    """`quantization: int8 | int4` on a random Qwen3 folder: the layer projections are packed (the plan's bytes,
    exactly), and the logits equal a dense model whose projections hold the dequantized codes, within the
    kernels' bfloat16 bound."""
    from budget.planner import plan_stack
    from engines.llm import EngineConfig, LLMEngine, SamplingParams
    from engines.llm.models.loader import load_model
    from orchestrator.stack import Stack

    path = tiny_models["qwen3"]
    llm = LLMEngine(EngineConfig(str(path), dtype="float32", num_kv_blocks=64, max_model_len=256,
                                 quantization=fmt))
    model = llm.runner.model
    layers = [m for name, m in model.named_modules() if isinstance(m, QuantLinear) and ".layers." in name]
    assert len(layers) == 4 * 2 and all(layer.format == fmt for layer in layers)
    assert isinstance(model.model.embed_tokens, QuantEmbedding)  # a lookup reads single rows of either format
    assert model.model.embed_tokens.format == model.lm_head.format == fmt  # this Qwen3's head is not tied
    stack = Stack.model_validate({"gpu": {"device": "cpu", "memory": "4GiB"}, "models": [
        {"name": "tiny", "kind": "llm", "path": str(path), "dtype": "float32", "memory": "rest",
         "max_model_len": 256, "quantization": fmt}]})
    assert plan_stack(stack, 4 << 30, "test").models[0].estimate.weights_bytes == model.weight_bytes()

    dense = load_model(path, torch.float32, CPU, "none")
    stored = {}
    for name, module in dense.named_modules():
        if isinstance(model.get_submodule(name), QuantLinear) and ".layers." in name:
            stored[name] = quantize_weight(module.weight.data, QuantFormat(fmt))
            module.weight.data = stored[name].dequantize()
    out = llm.generate([list(range(3, 40))], SamplingParams(temperature=0, max_tokens=4))[0]
    assert len(out.token_ids) == 4
    gen = torch.Generator().manual_seed(6)
    for name, weight in stored.items():
        x = torch.randn(6, weight.shape[1], generator=gen)
        bound = 3 * U * (x.abs() @ magnitude(weight).t()) + 1e-5
        assert ((model.get_submodule(name)(x) - dense.get_submodule(name)(x)).abs() - bound).max() <= 0, name


def test_fp8_rows_are_within_half_a_step_and_the_layer_multiplies_them(tiny_models, monkeypatch):
    """fp8 (e4m3, a float32 scale per row): each weight within half an e4m3 step of the original (3 mantissa bits:
    2^-4 relative, or 2^-10 of the row's scale among the subnormals); the layer's product equals x @ the dequantized
    weight; a folder loads with the projections as fp8 and the plan's bytes exactly (the load is made to believe its
    device multiplies fp8, so the CPU runs the reference twin); and where no such card is, load and plan refuse."""
    from budget.estimate import PlanInputError
    from budget.estimators.llm import estimate_llm
    from engines.llm.models import loader
    from orchestrator.stack import LLMSpec

    gen = torch.Generator().manual_seed(8)
    dense = torch.randn(48, 128, generator=gen) * torch.rand(48, 1, generator=gen)
    weight = quantize_weight(dense, QuantFormat.FP8)
    assert weight.codes.dtype == torch.float8_e4m3fn
    step = torch.maximum(dense.abs() * 2.0 ** -4, weight.scales[:, None] * 2.0 ** -10)
    assert ((weight.dequantize() - dense).abs() <= step).all()
    x = torch.randn(3, 128, generator=gen)
    assert torch.allclose(QuantLinear(weight, None, CPU)(x), x @ weight.dequantize().t(), rtol=1e-5, atol=1e-5)

    path = tiny_models["qwen3"]
    with pytest.raises(loader.ModelLoadError, match="compute capability 8.9"):
        loader.load_model(path, torch.float32, CPU, "fp8")
    with pytest.raises(PlanInputError, match="compute capability 8.9"):
        estimate_llm(LLMSpec(name="tiny", kind="llm", path=str(path), quantization="fp8"), on_gpu=False)
    monkeypatch.setattr(loader, "fp8_matmul_supported", lambda device: True)
    model = loader.load_model(path, torch.float32, CPU, "fp8")
    layers = [m for name, m in model.named_modules() if isinstance(m, QuantLinear)]
    assert len(layers) == 4 * 2 and all(layer.format == QuantFormat.FP8 for layer in layers)
    spec = LLMSpec(name="tiny", kind="llm", path=str(path), dtype="float32", quantization="fp8")
    assert estimate_llm(spec, on_gpu=True).weights_bytes == model.weight_bytes()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch's fp8 matmul needs a CUDA card")
def test_fp8_matmul_on_a_capable_card_equals_its_reference_twin():
    """On CUDA (compute capability 8.9+), the fp8 matmul (activations quantized per row) against the dequantized
    weight: within the activations' own e4m3 rounding, 2^-4 relative of |x| @ |W|ᵀ."""
    from llm_kernels.dispatch import fp8_matmul, fp8_matmul_supported

    device = torch.device("cuda")
    if not fp8_matmul_supported(device):
        pytest.skip(f"{torch.cuda.get_device_name(device)} has no fp8 matmul (compute capability below 8.9)")
    gen = torch.Generator().manual_seed(9)
    weight = quantize_weight(torch.randn(256, 512, generator=gen), QuantFormat.FP8)
    x = torch.randn(16, 512, generator=gen)
    layer = QuantLinear(weight, None, device)
    ours = fp8_matmul(x.to(device, torch.bfloat16), layer.codes, layer.scales).float().cpu()
    want = x @ weight.dequantize().t()
    assert ((ours - want).abs() <= 2.0 ** -4 * (x.abs() @ weight.dequantize().abs().t()) + 1e-2).all()


def test_a_gguf_is_not_quantized_on_the_fly_and_the_plan_says_why(real_models):
    from budget.estimate import PlanInputError
    from budget.planner import plan_stack
    from engines.llm.models.loader import ModelLoadError, load_model
    from orchestrator.stack import Stack

    gguf = real_models / SMOL[0] / SMOL[1]
    with pytest.raises(ModelLoadError, match="quantization 'int4' is for 16-bit Hugging Face folders"):
        load_model(gguf, torch.float32, CPU, "int4")
    stack = Stack.model_validate({"gpu": {"device": "cpu", "memory": "4GiB"}, "models": [
        {"name": "smol", "kind": "llm", "path": str(gguf), "memory": "rest", "quantization": "int8"}]})
    with pytest.raises(PlanInputError, match="quantization 'int8' is for 16-bit Hugging Face folders"):
        plan_stack(stack, 4 << 30, "test")


def _pack_along(values: np.ndarray, axis: int, order=(0, 1, 2, 3, 4, 5, 6, 7)) -> np.ndarray:
    """Eight 4-bit values per int32 along `axis`; nibble i holds element 8j + order[i] (the test's own packer)."""
    values = np.moveaxis(values.astype(np.uint32), axis, -1)
    grouped = values.reshape(*values.shape[:-1], -1, 8)
    word = np.zeros(grouped.shape[:-1], dtype=np.uint32)
    for i, column in enumerate(order):
        word |= grouped[..., column] << np.uint32(4 * i)
    return np.ascontiguousarray(np.moveaxis(word.view(np.int32), -1, axis))


def _write_prequantized(tiny: Path, out: Path, method: str, act_order: bool, sym: bool) -> dict:
    """The tiny Qwen3 with every layer projection in AutoAWQ's GEMM or GPTQ's published layout (group 32); returns
    name -> (the test's own dequantized weight [out, in], its term-by-term magnitude |q - 8|·s + |8 - z|·s)."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(tiny, out)
    tensors = load_file(out / "model.safetensors")
    group, rng, expected, orders = 32, np.random.default_rng(7), {}, {}
    for name in [n for n in tensors if n.endswith("_proj.weight") and ".layers." in n]:
        w = tensors.pop(name).float().numpy()                     # [out, in]
        rows, cols = w.shape
        g_idx = np.arange(cols) // group
        if act_order:  # one order per input: q/k/v share theirs (and gate/up theirs), as GPTQ's Hessian is shared
            shared = name.replace("k_proj", "q_proj").replace("v_proj", "q_proj").replace("up_proj", "gate_proj")
            g_idx = g_idx[orders.setdefault(shared, rng.permutation(cols))]  # each group: 32 inputs, scattered
        groups = cols // group
        scale, zero = np.zeros((groups, rows), np.float32), np.zeros((groups, rows), np.int64)
        q = np.zeros((cols, rows), np.int64)
        for g in range(groups):
            ins = np.flatnonzero(g_idx == g)
            block = w[:, ins].T                                   # [32, out]
            if sym:
                s = np.abs(block).max(0) / 7.5
                z = np.full(rows, 8)
            else:
                s = (block.max(0) - block.min(0)) / 15
                z = np.clip(np.round(-block.min(0) / s), 1, 15).astype(np.int64)  # v1 GPTQ stores z - 1: 0 underflows
            s = s.astype(np.float16).astype(np.float32)
            q[ins] = np.clip(np.round(block / s) + z, 0, 15)
            scale[g], zero[g] = s, z
        expected[name] = (((q - zero[g_idx]) * scale[g_idx]).T.astype(np.float32),   # [out, in]
                          ((np.abs(q - 8) + np.abs(8 - zero[g_idx])) * scale[g_idx]).T.astype(np.float32))
        base = name.removesuffix(".weight")
        if method == "awq":
            tensors[base + ".qweight"] = torch.from_numpy(_pack_along(q, 1, (0, 2, 4, 6, 1, 3, 5, 7)))
            tensors[base + ".qzeros"] = torch.from_numpy(_pack_along(zero, 1, (0, 2, 4, 6, 1, 3, 5, 7)))
        else:
            tensors[base + ".qweight"] = torch.from_numpy(_pack_along(q, 0))
            tensors[base + ".qzeros"] = torch.from_numpy(_pack_along(zero - 1, 1))  # v1: stored one less
            tensors[base + ".g_idx"] = torch.from_numpy(g_idx.astype(np.int32))
        tensors[base + ".scales"] = torch.from_numpy(scale.astype(np.float16))
    save_file(tensors, out / "model.safetensors")
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"] = ({"quant_method": "awq", "bits": 4, "group_size": group, "version": "gemm",
                                      "zero_point": True} if method == "awq" else
                                     {"quant_method": "gptq", "bits": 4, "group_size": group, "desc_act": act_order,
                                      "sym": sym, "checkpoint_format": "gptq"})
    (out / "config.json").write_text(json.dumps(config))
    return expected


@pytest.mark.parametrize("method, act_order, sym", [("awq", False, False), ("gptq", False, True),
                                                    ("gptq", False, False), ("gptq", True, False)])
def test_awq_and_gptq_checkpoints_load_into_the_same_module(tiny_models, tmp_path, method, act_order, sym):
    from engines.llm import EngineConfig, LLMEngine, SamplingParams

    expected = _write_prequantized(tiny_models["qwen3"], tmp_path / method, method, act_order, sym)
    llm = LLMEngine(EngineConfig(str(tmp_path / method), dtype="float32", num_kv_blocks=64, max_model_len=256))
    model = llm.runner.model
    gen = torch.Generator().manual_seed(8)
    for layer in range(2):
        for stacked, parts in (("self_attn.qkv_proj", ("q_proj", "k_proj", "v_proj")),
                               ("self_attn.o_proj", ("o_proj",)), ("mlp.gate_up_proj", ("gate_proj", "up_proj")),
                               ("mlp.down_proj", ("down_proj",))):
            prefix = f"model.layers.{layer}.{stacked.split('.')[0]}"
            want = torch.from_numpy(np.concatenate([expected[f"{prefix}.{p}.weight"][0] for p in parts]))
            size = torch.from_numpy(np.concatenate([expected[f"{prefix}.{p}.weight"][1] for p in parts]))
            module = model.get_submodule(f"model.layers.{layer}.{stacked}")
            assert isinstance(module, QuantLinear) and module.format == QuantFormat.INT4
            x = torch.randn(5, want.shape[1], generator=gen)
            bound = 3 * U * (x.abs() @ size.t()) + 1e-5
            assert ((module(x) - x @ want.t()).abs() - bound).max() <= 0, (method, stacked)
    assert len(llm.generate([[5, 6, 7]], SamplingParams(temperature=0, max_tokens=3))[0].token_ids) == 3


@pytest.mark.parametrize("change, field", [({"bits": 3}, "quantization_config.bits is 3"),
                                           ({"quant_method": "exl2"}, "quant_method is 'exl2'"),
                                           ({"checkpoint_format": "marlin"}, "Marlin layout")])
def test_a_quantization_config_we_cannot_serve_is_refused_by_name(tiny_models, tmp_path, change, field, run_cli):
    import json

    _write_prequantized(tiny_models["qwen3"], tmp_path / "m", "gptq", False, True)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["quantization_config"].update(change)
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    from engines.llm.models.loader import ModelLoadError, load_model

    with pytest.raises(ModelLoadError, match=field):
        load_model(tmp_path / "m", torch.float32, CPU)


def test_an_awq_folder_is_planned_as_the_bytes_it_is_held_in(tiny_models, tmp_path):
    from budget.planner import plan_stack
    from engines.llm import EngineConfig, LLMEngine
    from orchestrator.stack import Stack

    _write_prequantized(tiny_models["qwen3"], tmp_path / "awq", "awq", False, False)
    llm = LLMEngine(EngineConfig(str(tmp_path / "awq"), dtype="float32", num_kv_blocks=64, max_model_len=256))
    stack = Stack.model_validate({"gpu": {"device": "cpu", "memory": "4GiB"}, "models": [
        {"name": "awq", "kind": "llm", "path": str(tmp_path / "awq"), "dtype": "float32", "memory": "rest",
         "max_model_len": 256}]})
    estimate = plan_stack(stack, 4 << 30, "test").models[0].estimate
    assert estimate.storage.startswith("awq-int4-g32")
    assert estimate.weights_bytes == llm.runner.model.weight_bytes()


LOAD_PEAK = """
import gc, sys, threading, time, psutil, torch
from engines.llm.models.loader import load_model

def load(path, quantization):
    # the peak resident growth while one load runs, sampled every 2 ms, and the bytes the model holds
    proc = psutil.Process()
    gc.collect()
    before, peak, done = proc.memory_info().rss, [0], threading.Event()
    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss - before)
            time.sleep(0.002)
    watcher = threading.Thread(target=watch)
    watcher.start()
    model = load_model(path, torch.float32, torch.device("cpu"), quantization)
    done.set()
    watcher.join()
    return peak[0], model.weight_bytes()

load(sys.argv[1], sys.argv[2])  # the first load also pays for lazy library set-up
print(*load(sys.argv[1], sys.argv[2]))
"""
# glibc hands freed blocks back at once, so the resident set follows what is alive, not what the allocator keeps
LIVE_MEMORY = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def test_int4_at_load_never_holds_the_dense_model(tmp_path):
    """A 78M-parameter Qwen3 in bfloat16 shards, loaded dense (float32) and quantized to int4 at load, each in a fresh
    process: the int4 load's peak stays below the dense load's peak by at least half the difference in what they
    hold (measured: 238 MB against 419 MB, holding 52 MB against 310 MB). A loader that built the dense model first
    and packed it afterwards would peak at least as high as the dense load."""
    import os
    import subprocess
    import sys

    from transformers import AutoModelForCausalLM, Qwen3Config

    config = Qwen3Config(vocab_size=8192, hidden_size=1024, intermediate_size=4096, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=2, head_dim=128, tie_word_embeddings=False)
    AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(tmp_path, max_shard_size="40MB")
    peaks, held = {}, {}
    for quantization in ("none", "int4"):
        result = subprocess.run([sys.executable, "-c", LOAD_PEAK, str(tmp_path), quantization], capture_output=True,
                                text=True, timeout=300, env={**os.environ, **LIVE_MEMORY})
        assert result.returncode == 0, result.stderr
        peaks[quantization], held[quantization] = map(int, result.stdout.split())
    assert held["int4"] < held["none"] / 5
    assert peaks["int4"] < peaks["none"] - (held["none"] - held["int4"]) / 2, (peaks, held)


@pytest.mark.parametrize("kernels", ["built", "absent", "without AVX512-BF16"])
def test_a_gguf_with_untied_q4_tables_keeps_them_packed(tmp_path, monkeypatch, kernels):
    """A Llama GGUF whose token_embd and output are Q4_0 (as Ollama's Q4_K_M files keep Q4_K tables). On the CPU
    with the C++ kernels built (and AVX512-BF16 to run them), every weight stays in the file's blocks and a lookup is
    gguf's own dequantization exactly. Without them (as on CUDA), the embedding stays int4 groups (rows gathered, not
    int8 rows), the head an int4 layer, and a lookup is gguf's but for the scales' bfloat16 rounding. Either way the
    plan holds exactly the bytes the model holds."""
    import gguf

    import engines.llm.models.loader as loader
    from budget.gguf import kept_modules, read_gguf, served_weight_bytes
    from engines.llm.models.loader import load_model

    if kernels == "absent":
        monkeypatch.setattr(loader, "extension", lambda: None)
    elif kernels == "without AVX512-BF16":  # the build's own flag: every step would widen, so the loader repacks
        monkeypatch.setattr(loader, "extension", lambda: SimpleNamespace(GGML_DIRECT=False))

    vocab, hidden, inter, heads, kv_heads = 96, 64, 128, 2, 1
    head_dim = hidden // heads
    gen = np.random.default_rng(11)
    path = tmp_path / "tiny-llama.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    for add, value in ((writer.add_block_count, 1), (writer.add_context_length, 256),
                       (writer.add_embedding_length, hidden), (writer.add_feed_forward_length, inter),
                       (writer.add_head_count, heads), (writer.add_head_count_kv, kv_heads),
                       (writer.add_layer_norm_rms_eps, 1e-5), (writer.add_vocab_size, vocab)):
        add(value)

    def q4(name: str, rows: int, cols: int) -> np.ndarray:
        dense = gen.standard_normal((rows, cols), dtype=np.float32) * 0.1
        packed = quantize(dense, GGMLQuantizationType.Q4_0)
        writer.add_tensor(name, packed, raw_dtype=GGMLQuantizationType.Q4_0)
        return packed

    tables = {"token_embd.weight": q4("token_embd.weight", vocab, hidden), "output.weight": q4("output.weight", vocab,
                                                                                                hidden)}
    for name, rows, cols in (("attn_q", hidden, hidden), ("attn_k", kv_heads * head_dim, hidden),
                             ("attn_v", kv_heads * head_dim, hidden), ("attn_output", hidden, hidden),
                             ("ffn_gate", inter, hidden), ("ffn_up", inter, hidden), ("ffn_down", hidden, inter)):
        q4(f"blk.0.{name}.weight", rows, cols)
    for name in ("blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "output_norm.weight"):
        writer.add_tensor(name, np.ones(hidden, dtype=np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file()
    writer.close()

    header = read_gguf(path)
    on_cpu = kernels == "built" and extension().GGML_DIRECT  # a CPU without AVX512-BF16 repacks too
    fmt = "ggml" if on_cpu else "int4"
    assert kept_modules(header, on_cpu)["model.embed_tokens"] == kept_modules(header, on_cpu)["lm_head"] == fmt
    model = load_model(path, torch.float32, CPU, "auto")
    table = model.model.embed_tokens
    assert isinstance(table, QuantEmbedding) and table.format == fmt and model.lm_head.format == fmt
    ids = torch.tensor([0, 5, 95, 5])
    want = torch.from_numpy(dequantize(tables["token_embd.weight"], GGMLQuantizationType.Q4_0))[ids]
    assert served_weight_bytes(header, 4, on_cpu)[0] == model.weight_bytes()
    if on_cpu:
        assert torch.equal(table(ids), want)
        return
    step = table.scales[ids].float().abs().repeat_interleave(GROUP, dim=1)  # Q4_0's scale may be negative
    assert ((table(ids) - want).abs() <= step * 8 * 2 ** -8 + 1e-6).all()  # |q - 8| <= 8 steps of a bf16 scale
