"""Flatten a scheduled batch into the tensors one forward step needs, with Python work per block, not per token."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engines.llm.context import AttentionContext
from engines.llm.scheduler import SchedulerOutput

ALIGN = 16  # int32 elements: 64 bytes


@dataclass(slots=True)
class StepInputs:
    input_ids: torch.Tensor
    positions: torch.Tensor
    context: AttentionContext
    sample_rows: list[int]      # rows of the flat batch whose logits are sampled (a sequence's last token)


def build_inputs(batch: SchedulerOutput, block_size: int, device: torch.device) -> StepInputs:
    """Token ids, positions, pool slots, per-sequence lengths and block tables for the step's batch."""
    bs = block_size
    ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    cu, lens, tables, sample_rows = [0], [], [], []
    for seq, n in zip(batch.seqs, batch.num_new_tokens):
        start, end, table = seq.num_computed_tokens, seq.num_computed_tokens + n, seq.block_table
        if n == 1:
            ids.append(seq.token_ids[start])
            positions.append(start)
            slots.append(table[start // bs] * bs + start % bs)
        else:
            ids.extend(seq.token_ids[start:end])
            positions.extend(range(start, end))
            for b in range(start // bs, (end - 1) // bs + 1):
                base = table[b] * bs
                slots.extend(range(base + max(start - b * bs, 0), base + min(end - b * bs, bs)))
        cu.append(cu[-1] + n)
        lens.append(end)
        tables.append(table)
        if end == seq.num_tokens:
            sample_rows.append(cu[-1] - 1)
    width = max(len(t) for t in tables)
    flat_tables: list[int] = []
    for table in tables:
        flat_tables += table
        flat_tables += [0] * (width - len(table))
    input_ids, positions, slot_mapping, cu_seqlens_q, seq_lens, block_tables = pack_metadata(
        [ids, positions, slots, cu, lens, flat_tables], device)
    context = AttentionContext(slot_mapping, cu_seqlens_q, seq_lens, block_tables.view(len(lens), width),
                               max(batch.num_new_tokens))
    return StepInputs(input_ids, positions, context, sample_rows)


def pack_metadata(parts: list[list[int]], device: torch.device) -> list[torch.Tensor]:
    """The lists as int32 tensors sliced from one buffer (one host-to-device copy), each starting 64 bytes aligned:
    Triton specialises a kernel on its pointers' 16-byte alignment and dtype, so slices whose offsets moved with the
    batch's shape compiled new kernel variants while serving."""
    sizes = [-(-len(part) // ALIGN) * ALIGN for part in parts]
    starts = [sum(sizes[:i]) for i in range(len(parts))]
    flat = np.zeros(sum(sizes), dtype=np.int32)
    for start, part in zip(starts, parts):
        flat[start:start + len(part)] = part  # numpy converts int lists ~4x faster than torch
    packed = torch.from_numpy(flat)
    if device.type == "cuda":  # one pinned host-to-device copy for the whole step
        packed = packed.pin_memory().to(device, non_blocking=True)
    return [packed[start:start + len(part)] for start, part in zip(starts, parts)]
