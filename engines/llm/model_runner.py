"""Run the model on a scheduled batch: flatten it, point attention at the paged pool, sample.

The KV pool is allocated once, of exactly the bytes the config gives. On CUDA, pure decode
steps replay CUDA graphs captured for a ladder of batch sizes; on the CPU they run every layer in one C++ call
(engines/llm/models/cpu_decode.py). `enforce_eager` turns both off.
"""
from __future__ import annotations

import logging

import torch

from budget.architectures import kv_bytes_per_token, llm_head_dim, llm_kv_heads
from budget.estimators.llm import graph_batch_sizes
from engines.llm.config import EngineConfig
from engines.llm.context import AttentionContext, set_context
from engines.llm.input_batch import build_inputs, pack_metadata
from engines.llm.models.cpu_decode import CPUDecode
from engines.llm.models.loader import load_model
from engines.llm.sampler import SampledToken, Sampler
from engines.llm.sampling_params import SamplingParams
from engines.llm.scheduler import SchedulerOutput
from engines.llm.sequence import Sequence
from engines.llm.structured_output import MaskFiller
from llm_kernels.reference import ReferencePlan

log = logging.getLogger(__name__)


class ModelRunner:
    def __init__(self, config: EngineConfig, hf_config: dict) -> None:
        self.config, self.device = config, torch.device(config.device)
        self.block_size = config.block_size
        dtype = config.torch_dtype(hf_config)
        self.model = load_model(config.model, dtype, self.device, config.quantization, config.max_model_len or 0)
        self.kv_cache = self._allocate_kv_cache(hf_config)
        self.num_blocks = self.kv_cache.shape[2]
        self.sampler = Sampler()
        self.masks = MaskFiller(self.model.config["vocab_size"], overlap=self.device.type == "cuda")
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.cpu_decode = None if config.enforce_eager or self.device.type != "cpu" else \
            CPUDecode.build(self.model, dtype, self.kv_cache)
        if self.device.type == "cpu":
            log.info("decode steps run %s", "in the fused C++ layers" if self.cpu_decode else "layer by layer")

    def _allocate_kv_cache(self, cfg: dict) -> torch.Tensor:
        layers, head_dim, kv_heads = cfg["num_hidden_layers"], llm_head_dim(cfg), llm_kv_heads(cfg)
        dtype = self.config.kv_torch_dtype(cfg)
        block_bytes = self.block_size * kv_bytes_per_token(cfg, dtype.itemsize)  # the planner's formula
        blocks = self.config.num_kv_blocks or self.config.kv_cache_bytes // block_bytes
        if blocks < 1:
            raise ValueError(f"the KV cache share ({self.config.kv_cache_bytes:,} B) is smaller than one block "
                             f"({block_bytes:,} B); give the LLM more memory")
        self.block_bytes = block_bytes
        cache = torch.zeros(2, layers, blocks, self.block_size, kv_heads, head_dim, dtype=dtype, device=self.device)
        for i, layer in enumerate(self.model.model.layers):
            layer.self_attn.k_cache, layer.self_attn.v_cache = cache[0, i], cache[1, i]
        log.info("KV pool: %d blocks of %d tokens, %.1f MiB (%s)", blocks, self.block_size,
                 cache.numel() * dtype.itemsize / 2**20, dtype)
        return cache

    @torch.inference_mode()
    def run(self, batch: SchedulerOutput) -> list[SampledToken]:
        """One forward step; returns a sampled token for each sequence whose prompt is now fully computed."""
        inputs = build_inputs(batch, self.block_size, self.device)
        sampled = [seq for seq, n in zip(batch.seqs, batch.num_new_tokens) if seq.num_computed_tokens + n == seq.num_tokens]
        masks = self.masks.start([seq.grammar for seq in sampled])  # on a GPU, filled while the model runs
        hidden = self._forward(inputs.input_ids, inputs.positions, inputs.context)
        if not inputs.sample_rows:
            return []
        logits = self.model.compute_logits(hidden[inputs.sample_rows])
        return self.sampler(logits, sampled, masks.result() if masks is not None else None)

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor, context: AttentionContext) -> torch.Tensor:
        n = input_ids.shape[0]
        if self.cpu_decode is not None and context.max_seqlen_q == 1:
            return self.cpu_decode(input_ids, positions, context)
        size = next((s for s in self.graphs if s >= n), None) if context.max_seqlen_q == 1 else None
        if size is None or context.block_tables.shape[1] > self.graph_inputs["block_tables"].shape[1]:
            if self.device.type != "cuda":
                context.reference_plan = ReferencePlan.build(context.slot_mapping, context.cu_seqlens_q,
                                                             context.seq_lens, context.block_tables, self.block_size)
            set_context(context)
            try:
                return self.model(input_ids, positions)
            finally:
                set_context(None)
        g = self.graph_inputs
        g["input_ids"][:n] = input_ids
        g["positions"][:n] = positions
        g["slot_mapping"].fill_(-1)
        g["slot_mapping"][:n] = context.slot_mapping
        g["seq_lens"].fill_(1)
        g["seq_lens"][:n] = context.seq_lens
        g["block_tables"][:size].zero_()
        g["block_tables"][:n, :context.block_tables.shape[1]] = context.block_tables
        self.graphs[size].replay()
        return g["hidden"][:n]

    @torch.inference_mode()
    def capture_cudagraphs(self) -> None:
        """Record one decode step per batch size of the ladder, sharing one memory pool."""
        sizes = graph_batch_sizes(self.config.max_num_seqs)
        top = sizes[-1]
        max_blocks = -(-self.config.max_model_len // self.block_size)
        hidden_size = self.model.config["hidden_size"]
        dev = self.device
        g = self.graph_inputs = {
            "input_ids": torch.zeros(top, dtype=torch.int32, device=dev),  # int32, as every step's metadata
            "positions": torch.zeros(top, dtype=torch.int32, device=dev),
            "slot_mapping": torch.full((top,), -1, dtype=torch.int32, device=dev),
            "cu_seqlens_q": torch.arange(top + 1, dtype=torch.int32, device=dev),
            "seq_lens": torch.ones(top, dtype=torch.int32, device=dev),
            "block_tables": torch.zeros(top, max_blocks, dtype=torch.int32, device=dev),
            "hidden": torch.zeros(top, hidden_size, dtype=self.model.lm_head.weight.dtype, device=dev),
        }
        pool = None
        for size in reversed(sizes):
            graph = torch.cuda.CUDAGraph()
            set_context(AttentionContext(g["slot_mapping"][:size], g["cu_seqlens_q"][:size + 1], g["seq_lens"][:size],
                                         g["block_tables"][:size], 1))
            g["hidden"][:size] = self.model(g["input_ids"][:size], g["positions"][:size])  # compiles the kernels
            with torch.cuda.graph(graph, pool):
                g["hidden"][:size] = self.model(g["input_ids"][:size], g["positions"][:size])
            pool = pool or graph.pool()
            self.graphs[size] = graph
            torch.cuda.synchronize()
        set_context(None)
        self.graphs = dict(sorted(self.graphs.items()))
        log.info("captured %d decode CUDA graphs (batch %d..%d)", len(sizes), sizes[0], top)

    @torch.inference_mode()
    def warmup(self) -> None:
        """Run the largest step the scheduler can build (a full token budget of prefill) so its peak is real, the
        sampler's filtered path on max_num_seqs rows (its vocab-sized buffers are part of the peak), and decode steps
        at full and single batch, so no attention variant compiles while serving."""
        tokens = min(self.config.max_num_batched_tokens, self.config.max_model_len * self.config.max_num_seqs)
        seqs = max(1, min(self.config.max_num_seqs, -(-tokens // self.config.max_model_len)))
        hidden = self._dummy_step([tokens // seqs + (i < tokens % seqs) for i in range(seqs)])
        rows = min(self.config.max_num_seqs, hidden.shape[0])
        warm = SamplingParams(temperature=1.0, top_k=50, top_p=0.9, min_p=0.05, logprobs=5)
        self.sampler(self.model.compute_logits(hidden[:rows]), [Sequence("warmup", [0], warm) for _ in range(rows)])
        del hidden
        self._dummy_step([1] * self.config.max_num_seqs)
        self._dummy_step([1])  # a lone decode takes the split-KV path on a GPU (a full batch may not)
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def _dummy_step(self, lengths: list[int]) -> torch.Tensor:
        """A forward step over sequences of these lengths, all new, writing nothing to the pool."""
        width = -(-max(lengths) // self.block_size)
        cu = [sum(lengths[:i]) for i in range(len(lengths) + 1)]
        ids, positions, slots, cu_seqlens_q, seq_lens, tables = pack_metadata(
            [[0] * cu[-1], [p for n in lengths for p in range(n)], [-1] * cu[-1], cu, lengths,
             [0] * (len(lengths) * width)], self.device)
        context = AttentionContext(slots, cu_seqlens_q, seq_lens, tables.view(len(lengths), width), max(lengths))
        return self._forward(ids, positions, context)
