"""GGUF weights kept in the file's own blocks on the CPU (llm_kernels/ggml_matmul.cpp): the blocks read back as the
gguf package's own dequantization, the matmul against dequantize-then-matmul, and what the planner counts.

Tolerance, derived: the dequantized weights are exact (the same float32 arithmetic as gguf's). A step of fewer than
DEQUANTIZE_FROM_ROWS["ggml"] rows, on a CPU with AVX512-BF16, splits each float32 activation into two bfloat16
halves, hi + lo, off from x by at most 2^-18·|x| (hi is within 2^-9·|x|, lo rounds that remainder to within 2^-9 of
itself); the products with the weights' integer codes are exact in float32 and the sums of K terms are off by at
most K·2^-24 of Σ|x·w| (the float32 reference's own sums as much again). So |ours - reference| <= (2^-18 +
2·K·2^-24) · (|x| @ |W|ᵀ) per output; a larger step widens the blocks and multiplies in float32, within the same
bound.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize
from gguf_blocks import DEMO_TYPES, QWEN, SMOL, one_tensor_of_each_type, random_blocks

from budget.gguf import GGML_TYPES
from engines.llm.models.quant_linear import QuantEmbedding, QuantLinear
from engines.llm.models.quantization import GGMLBlocks, from_gguf, stack
from llm_kernels.cpu_extension import extension

CPU = torch.device("cpu")
STEP_ROWS = (1, 3, 8, 9, 17, 40)  # steps of a whole tile of 8 rows and not, one and more


@pytest.fixture(scope="module", autouse=True)
def kernels():
    kernels = extension()
    assert kernels is not None, "the C++ CPU kernels did not build (scripts/setup.sh builds them)"
    return kernels


def dense_of(blocks: np.ndarray, type_name: str, shape: tuple[int, int]) -> torch.Tensor:
    """The oracle: the gguf package's dequantization."""
    values = dequantize(blocks, GGMLQuantizationType[type_name]).reshape(shape)
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))


def check_matmul(layer: QuantLinear, dense: torch.Tensor, seed: int) -> None:
    """The layer (rows below DEQUANTIZE_FROM_ROWS["ggml"] direct, the rest widened), then each path forced, on steps
    of every size in STEP_ROWS."""
    kernels = extension()
    gen = torch.Generator().manual_seed(seed)
    cols = dense.shape[1]
    forced = [lambda x: kernels.ggml_matmul(x, layer.blocks, layer.segments, 1)]   # widened
    if kernels.GGML_DIRECT:  # a CPU without AVX512-BF16 has no direct path: every step widens
        forced.append(lambda x: kernels.ggml_matmul(x, layer.blocks, layer.segments, 1 << 30))
    for rows in STEP_ROWS:
        x = torch.randn(rows, cols, generator=gen)
        want = x.double() @ dense.double().t()
        bound = (2 ** -18 + 2 * cols * 2 ** -24) * (x.abs().double() @ dense.abs().double().t())
        for path, multiply in enumerate([layer, *forced]):
            excess = ((multiply(x).double() - want).abs() - bound).max().item()
            assert excess <= 0, (rows, path, excess)


@pytest.mark.parametrize("type_name", GGML_TYPES)
def test_blocks_read_back_as_gguf_dequantizes_them_and_multiply_within_the_bound(kernels, type_name):
    block_weights = GGML_QUANT_SIZES[GGMLQuantizationType[type_name]][0]
    shape = (48, 3 * max(block_weights, 64))
    blocks = random_blocks(type_name, *shape, np.random.default_rng(1))
    weight = from_gguf(blocks, type_name, shape, as_stored=True)
    assert isinstance(weight, GGMLBlocks) and weight.shape == shape and weight.data.numel() == blocks.nbytes
    dense = dense_of(blocks, type_name, shape)
    rows = torch.from_numpy(np.ascontiguousarray(blocks))
    assert torch.equal(kernels.ggml_dequantize(rows, GGMLQuantizationType[type_name].value, shape[1]), dense)
    check_matmul(QuantLinear(weight, None, CPU), dense, seed=2)


def test_a_stack_of_types_multiplies_each_segment_and_adds_the_bias():
    """q and k in Q5_0, v in Q8_0 (as the Qwen Q4_K_M file stores some layers): one weight of two segments."""
    parts = [("Q5_0", 64), ("Q5_0", 32), ("Q8_0", 32)]
    arrays = [random_blocks(name, rows, 128, np.random.default_rng(i)) for i, (name, rows) in enumerate(parts)]
    weight = stack([from_gguf(a, name, (rows, 128), as_stored=True) for a, (name, rows) in zip(arrays, parts)])
    assert weight.segments == [(GGMLQuantizationType.Q5_0.value, 96), (GGMLQuantizationType.Q8_0.value, 32)]
    dense = torch.cat([dense_of(a, name, (rows, 128)) for a, (name, rows) in zip(arrays, parts)])
    bias = torch.randn(128)
    layer = QuantLinear(weight, bias, CPU)
    check_matmul(QuantLinear(weight, None, CPU), dense, seed=3)
    x = torch.randn(2, 128)
    assert torch.allclose(layer(x), QuantLinear(weight, None, CPU)(x) + bias)
    order = torch.randperm(64)
    single = from_gguf(arrays[0], "Q5_0", (64, 128), as_stored=True)
    assert torch.equal(QuantLinear(single.rows(order), None, CPU)(x), QuantLinear(single, None, CPU)(x)[:, order])


@pytest.mark.parametrize("model", [QWEN, SMOL], ids=lambda m: m[0])
def test_the_demo_files_real_tensors(real_models, model):
    """Every tensor type each demo file holds (Q4_1, Q8_0; Q4_K, Q5_0, Q6_K, Q8_0), one real tensor of each: the
    matmul within the bound, and an embedding lookup exactly gguf's rows."""
    seen = set()
    for kind, blocks, shape in one_tensor_of_each_type(real_models / model[0] / model[1]):
        seen.add(kind)
        rows = shape[0]
        dense = dense_of(blocks, kind, shape)
        weight = from_gguf(blocks, kind, shape, as_stored=True)
        check_matmul(QuantLinear(weight, None, CPU), dense, seed=4)
        ids = torch.tensor([[0, rows - 1], [7, 7]])
        assert torch.equal(QuantEmbedding(weight, torch.float32, CPU)(ids), dense[ids])
    assert seen >= DEMO_TYPES[model], seen


def test_the_planner_counts_the_files_bytes(real_models):
    """On the CPU the weights held are the file's tensor bytes, exactly (the float norms and biases as served)."""
    from budget.gguf import read_gguf, served_weight_bytes

    for name, file in (QWEN, SMOL):
        header = read_gguf(real_models / name / file)
        held, by_format = served_weight_bytes(header, 4, on_cpu=True)
        assert by_format["ggml"] == sum(t.n_bytes for t in header.tensors if t.type_name in GGML_TYPES)
        assert held == header.tensor_bytes  # the rest is float32 on disk and served so


def test_a_module_with_a_type_not_multiplied_as_stored_is_repacked():
    """A stack mixing a GGML type with one the C++ does not multiply (F16 here; Q2_K alike) keeps the repacked
    format; the same stack of GGML types alone keeps the file's blocks."""
    from budget.gguf import GGUFHeader, GGUFTensor, kept_modules

    def header(*types: str) -> GGUFHeader:
        tensors = tuple(GGUFTensor(name, f"model.layers.0.self_attn.{name}.weight", kind, (64, 64), 0)
                        for name, kind in zip(("q_proj", "k_proj", "v_proj"), types))
        return GGUFHeader(None, "llama", {}, 0, 0, "Q4_0", tensors)

    assert kept_modules(header("Q4_0", "Q4_0", "F16"), on_cpu=True) == {"model.layers.0.self_attn.qkv_proj": "int4"}
    assert kept_modules(header("Q4_0", "Q4_0", "Q8_0"), on_cpu=True) == {"model.layers.0.self_attn.qkv_proj": "ggml"}
    assert kept_modules(header("Q4_0", "Q4_0", "Q8_0")) == {"model.layers.0.self_attn.qkv_proj": "int8"}
