"""The step's attention metadata, set once by the ModelRunner and read by every attention layer."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from llm_kernels.reference import ReferencePlan


@dataclass(slots=True)
class AttentionContext:
    slot_mapping: torch.Tensor   # [tokens] pool slot of each new token (-1: padding, not written)
    cu_seqlens_q: torch.Tensor   # [seqs + 1] where each sequence's new tokens start in the flat batch
    seq_lens: torch.Tensor       # [seqs] tokens of context each sequence attends to, new ones included
    block_tables: torch.Tensor   # [seqs, max_blocks] pool block of each of a sequence's blocks
    max_seqlen_q: int            # longest run of new tokens (1 for a pure decode step)
    reference_plan: ReferencePlan | None = None  # off CUDA: the gather/scatter indices every layer shares


_context: AttentionContext | None = None


def set_context(context: AttentionContext | None) -> None:
    global _context
    _context = context


def get_context() -> AttentionContext:
    assert _context is not None, "attention ran outside ModelRunner.run"
    return _context
