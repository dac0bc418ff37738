"""LLM: weights, activation peak of one scheduler step, CUDA-graph pool, and KV bytes per token."""
from __future__ import annotations

from budget.architectures import LLM_TYPES, kv_bytes_per_token, llm_head_dim, llm_kv_heads, llm_parameters
from budget.model_files import find_model_files
from budget.rope import context_error
from budget.estimate import Estimate, PlanInputError, context_bytes
from budget.estimators.sampler import sampler_bytes
from budget.estimators.weights import checkpoint_weights
from budget.gguf import (DEQUANT_ROWS, DEQUANTIZE_FROM_ROWS, INT4_GROUP, cpu_multiplies_blocks, quantized_bytes,
                         read_gguf, served_weight_bytes)
from budget.units import MiB, dtype_bytes, human

GRAPH_OVERHEAD_BYTES = 2 * MiB  # per captured decode graph: its own small pool blocks and workspace
MAX_GRAPH_BATCH = 512


def graph_batch_sizes(max_num_seqs: int) -> list[int]:
    """Decode batch sizes captured as CUDA graphs: 1, 2, 4, 8, then every 8 up to max_num_seqs."""
    top = min(max_num_seqs, MAX_GRAPH_BATCH)
    sizes = [s for s in (1, 2, 4) if s < top] + list(range(8, top + 1, 8))
    return sorted(set(sizes + [top]))


def serving_dtype(requested: str, config: dict) -> str:
    """`auto` takes the checkpoint's dtype, except float32, which is served in bfloat16 as vLLM does."""
    if requested != "auto":
        return requested
    stored = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16").removeprefix("torch.")
    return "bfloat16" if stored == "float32" else stored


def step_activation_bytes(cfg: dict, tokens: int, seqs: int, b: float) -> tuple[int, str]:
    """Peak of one forward step over `tokens` tokens whose `seqs` last tokens need logits."""
    h, inter, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    d = llm_head_dim(cfg)
    q = cfg["num_attention_heads"] * d
    kv = llm_kv_heads(cfg) * d
    hidden = 3 * tokens * h * b
    attention = tokens * (2 * q + 2 * kv) * b
    mlp = 4 * tokens * inter * b
    logits, _ = sampler_bytes(seqs, vocab)
    total = int(hidden + max(attention, mlp) + logits)
    text = (f"3·T·hidden·b (residual, hidden, normed) + max(T·(2q+2kv)·b attention, 4·T·intermediate·b MLP) "
            f"+ the sampler (fp32 logits, then log-probs, scaled copy and CDF, or 16 rows' filter buffers) with "
            f"T={tokens}, S={seqs}, b={b:g} = {human(hidden)} + {human(max(attention, mlp))} + {human(logits)} "
            f"= {human(total)}")
    return total, text


def dequantize_scratch_bytes(cfg: dict, b: float) -> tuple[int, str]:
    """The dequantize-then-matmul path's peak: its largest widened slice (DEQUANT_ROWS output rows at most, of the
    projection or head with the most), and the unpacked codes it is widened from, at most as many bytes again."""
    h, inter, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    d = llm_head_dim(cfg)
    q, kv = cfg["num_attention_heads"] * d, llm_kv_heads(cfg) * d
    shapes = {"qkv": (q + 2 * kv, h), "o": (h, q), "gate_up": (2 * inter, h), "down": (h, inter), "head": (vocab, h)}
    name, (rows, inputs) = max(shapes.items(), key=lambda item: min(item[1][0], DEQUANT_ROWS) * item[1][1])
    rows = min(rows, DEQUANT_ROWS)
    scratch = int(2 * rows * inputs * b)
    return scratch, f" + dequantize scratch 2 × {rows} rows × {inputs} inputs ({name}) × {b:g} B = {human(scratch)}"


def estimate_llm(spec, on_gpu: bool) -> Estimate:
    files = find_model_files(spec.name, spec.path, spec.config)
    header = read_gguf(files.gguf) if files.gguf is not None else None
    cfg = header.config if header is not None else files.json("config.json")
    if cfg is None or cfg.get("model_type") not in LLM_TYPES:
        found = cfg.get("model_type") if cfg else "no config.json"
        raise PlanInputError(f"model {spec.name!r}: {files.describe()} is not a Qwen3 / Qwen2 / Llama checkpoint "
                             f"({found}); the LLM engine serves model_type {', '.join(LLM_TYPES)}")
    dtype = serving_dtype(spec.dtype, cfg)
    b = dtype_bytes(dtype)
    quantization = getattr(spec, "quantization", "auto")
    if quantization == "fp8" and not on_gpu:
        raise PlanInputError(f"model {spec.name!r}: quantization fp8 needs a CUDA GPU of compute capability 8.9 or "
                             "newer (Ada, Hopper, Blackwell) and this stack runs it on the CPU; use int8 (the same "
                             "bytes, served everywhere) or int4")
    if header is not None and quantization in ("int8", "int4", "fp8"):
        raise PlanInputError(f"model {spec.name!r}: quantization {quantization!r} is for 16-bit Hugging Face folders; "
                             "a GGUF is served as stored (quantization: auto) or dequantized (none)")
    by_format: dict[str, int] = {}  # a kept GGUF's bytes by held format
    if header is not None and quantization == "auto":
        params = header.parameters
        weights, by_format = served_weight_bytes(header, b, on_cpu=not on_gpu and cpu_multiplies_blocks())
        parts = " + ".join(f"{human(n)} {fmt}" for fmt, n in sorted(by_format.items()))
        formula = (f"the GGUF header's {len(header.tensors)} tensors ({header.quantization}, "
                   f"{human(header.tensor_bytes)} of tensors on disk) as held: {parts} = {human(weights)}")
        source = f"{files.describe()} (GGUF header)"
        held = ", ".join("the file's blocks" if f == "ggml" else f for f in sorted(by_format) if f != "dense")
        storage = f"{header.quantization} kept packed ({held})"
    elif header is not None:  # quantization: none: parameters x the serving dtype, not the file's size
        params, weights = header.parameters, int(header.parameters * b)
        formula = (f"{params:,} parameters from the GGUF header ({header.quantization}, {human(header.file_bytes)} on "
                   f"disk) dequantized to {dtype} × {b:g} B = {human(weights)}")
        source = f"{files.describe()} (GGUF header)"
        storage = f"{header.quantization} dequantized to {dtype}"
    elif (scheme := cfg.get("quantization_config")) and scheme.get("quant_method") in ("awq", "gptq"):
        params = llm_parameters(cfg)[0]
        weights, formula = _quantized_on_the_fly(cfg, params, b, "int4", tables=False)
        source = files.describe() + ("" if files.config_only else " (config.json quantization_config)")
        group = scheme.get("group_size", scheme.get("q_group_size"))
        storage = f"{scheme['quant_method']}-int4-g{group} (held as int4 groups of {INT4_GROUP})"
    else:
        params, weights, formula = checkpoint_weights(spec.name, files, dtype, lambda: llm_parameters(cfg)[0])
        source = files.describe() + ("" if files.config_only else " (safetensors headers)")
        storage = ""
        if quantization in ("int8", "int4"):
            weights, formula = _quantized_on_the_fly(cfg, params, b, quantization)
            storage = f"{quantization}-g{INT4_GROUP}" if quantization == "int4" else "int8"
        elif quantization == "fp8":  # vLLM's fp8: the projections; embeddings and head stay in the serving dtype
            weights, formula = _quantized_on_the_fly(cfg, params, b, "fp8", tables=False)
            storage = "fp8 (e4m3, a float32 scale per row)"
    formulas = {"weights": formula}

    max_model_len = spec.max_model_len or cfg.get("max_position_embeddings") or 0
    if (error := context_error(cfg, max_model_len)) is not None:
        raise PlanInputError(f"model {spec.name!r}: {error}")
    seqs = spec.max_num_seqs
    tokens = spec.max_num_batched_tokens or max(2048, seqs)
    if tokens < seqs:
        raise PlanInputError(f"model {spec.name!r}: max_num_batched_tokens {tokens} is smaller than max_num_seqs "
                             f"{seqs}; every running sequence needs a token per step, so raise it to {seqs} or more")
    activation, formulas["activations"] = step_activation_bytes(cfg, tokens, seqs, b)
    int8_matmuls = (quantization == "int8" or "int8" in by_format
                    or (quantization == "int4" and header is None and bool(cfg.get("tie_word_embeddings"))))
    int4_matmuls = quantization == "int4" or "int4" in by_format or storage.startswith(("awq", "gptq"))
    # int8 on a GPU widens a slice of rows at a time (int4 has a Triton kernel that widens in registers; a tied int4
    # model's head reads the int8 embedding rows); on the CPU a float32 step of enough rows widens either format
    widened_on_cpu = b == 4 and any(held and tokens >= DEQUANTIZE_FROM_ROWS[fmt] for fmt, held
                                    in (("int8", int8_matmuls), ("int4", int4_matmuls), ("ggml", "ggml" in by_format)))
    if (on_gpu and int8_matmuls) or (not on_gpu and widened_on_cpu):
        scratch, text = dequantize_scratch_bytes(cfg, b)
        activation += scratch
        formulas["activations"] += text
    alternatives = {}
    if header is None and quantization == "auto" and b >= 2:
        alternatives = {fmt: _quantized_on_the_fly(cfg, params, b, fmt)[0] for fmt in ("int8", "int4")}

    graph = 0
    if on_gpu and not spec.enforce_eager:
        sizes = graph_batch_sizes(seqs)
        decode, _ = step_activation_bytes(cfg, sizes[-1], sizes[-1], b)
        graph = decode + len(sizes) * GRAPH_OVERHEAD_BYTES
        formulas["cuda graphs"] = (f"{len(sizes)} decode graphs (batch {sizes[0]}..{sizes[-1]}): shared pool = "
                                   f"one decode step at batch {sizes[-1]} ({human(decode)}) + {len(sizes)} × "
                                   f"{GRAPH_OVERHEAD_BYTES // MiB} MiB = {human(graph)}")
    context, formulas["context"] = context_bytes("torch", on_gpu)

    kv_dtype = dtype if spec.kv_cache_dtype == "auto" else spec.kv_cache_dtype
    layers, kv_heads, head_dim = cfg["num_hidden_layers"], llm_kv_heads(cfg), llm_head_dim(cfg)
    per_token = kv_bytes_per_token(cfg, dtype_bytes(kv_dtype))
    formulas["kv per token"] = (f"2 (K and V) × {layers} layers × {kv_heads} kv heads × {head_dim} head_dim × "
                                f"{dtype_bytes(kv_dtype):g} B ({kv_dtype}) = {per_token:,} B")
    return Estimate(spec.name, "llm", source, "torch", params, weights, activation, context, graph,
                    kv_bytes_per_token=per_token, max_model_len=max_model_len, block_size=spec.block_size,
                    dtype=dtype, storage=storage, quantized_alternatives=alternatives, formulas=formulas)


def _quantized_on_the_fly(cfg: dict, params: int, b: float, fmt: str, tables: bool = True) -> tuple[int, str]:
    """Layer projections packed as `fmt`; embeddings and head as `fmt` when `tables` (quantized at load; int8 rows
    when the head is tied, as it reads the embedding's rows), else dense (an AWQ/GPTQ checkpoint keeps them 16-bit);
    the rest dense."""
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    q = cfg["num_attention_heads"] * llm_head_dim(cfg)
    kv = llm_kv_heads(cfg) * llm_head_dim(cfg)
    vocab, tied = cfg["vocab_size"], bool(cfg.get("tie_word_embeddings"))
    shapes = [(q + 2 * kv, h), (h, q), (2 * inter, h), (h, inter)]  # qkv, o, gate_up, down
    packed = layers * sum(quantized_bytes(fmt, rows, cols) for rows, cols in shapes)
    if not tables:
        dense = int((params - layers * sum(rows * cols for rows, cols in shapes)) * b)
        return packed + dense, (f"{layers} layers × (qkv, o, gate_up, down) as {fmt} = {human(packed)} + the rest "
                                f"(embeddings, head, norms) × {b:g} B = {human(dense)}; total {human(packed + dense)}")
    table_bytes = quantized_bytes("int8", vocab, h) if tied else 2 * quantized_bytes(fmt, vocab, h)
    dense = int((params - layers * sum(rows * cols for rows, cols in shapes) - vocab * h * (1 if tied else 2)) * b)
    tables_held = "embeddings as int8 rows, the tied head reads them" if tied else f"embeddings and head as {fmt}"
    total = packed + table_bytes + dense
    return total, (f"{layers} layers × (qkv, o, gate_up, down) as {fmt} = {human(packed)} + {tables_held} = "
                   f"{human(table_bytes)} + the rest (norms, biases) × {b:g} B = {human(dense)}; total {human(total)}")
