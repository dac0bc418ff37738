"""Continuous batching: each step, pick decodes and (chunked) prefills under a shared token budget.

Order of service: sequences already running (interactive before batch, then by admission), each
decode one token, a prefill chunk as much as the budget allows while leaving one token for every
running sequence behind it; then waiting sequences, interactive first. When blocks run out, the
lowest-priority, newest running sequence is preempted by recompute: its blocks are freed and it
waits at the head of its queue, to be recomputed later (often from the prefix cache).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from engines.llm.block_manager import BlockManager
from engines.llm.requests import Priority
from engines.llm.sequence import Sequence, SequenceStatus


@dataclass(slots=True)
class SchedulerOutput:
    """The step's batch: sequences and how many of their tokens to compute now (parallel lists)."""
    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)
    total_tokens: int = 0
    num_preempted: int = 0

    def __len__(self) -> int:
        return len(self.seqs)

    def add(self, seq: Sequence, n: int) -> None:
        self.seqs.append(seq)
        self.num_new_tokens.append(n)
        self.total_tokens += n


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int) -> None:
        if max_num_batched_tokens < max_num_seqs:
            raise ValueError(f"max_num_batched_tokens ({max_num_batched_tokens}) must be at least max_num_seqs "
                             f"({max_num_seqs}): every running sequence needs a token per step")
        self.block_manager = block_manager
        self.max_num_seqs, self.max_num_batched_tokens = max_num_seqs, max_num_batched_tokens
        self.waiting: dict[Priority, deque[Sequence]] = {p: deque() for p in Priority}
        self.running: list[Sequence] = []
        self.num_waiting = 0
        self.num_preemptions = 0  # since start, for metrics and tests

    def add(self, seq: Sequence) -> None:
        self.waiting[seq.priority].append(seq)
        self.num_waiting += 1

    def has_unfinished(self) -> bool:
        return bool(self.running) or self.num_waiting > 0

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        self._make_room_for_interactive(out)
        i = 0
        while i < len(self.running):
            seq = self.running[i]
            behind = len(self.running) - i - 1
            n = min(seq.num_tokens - seq.num_computed_tokens, self.max_num_batched_tokens - out.total_tokens - behind)
            while not self.block_manager.allocate(seq, n):
                victim = self.running[-1]
                self._preempt(victim, out)
                if victim is seq:
                    break
            else:
                out.add(seq, n)
                i += 1
        for priority in Priority:
            if not self._admit(self.waiting[priority], out):
                break
        return out

    def _admit(self, queue: deque[Sequence], out: SchedulerOutput) -> bool:
        """Move waiting sequences into the batch while seats, tokens and blocks last; False if one had to wait."""
        while queue:
            seq = queue[0]
            if seq.is_finished:  # aborted while waiting
                queue.popleft()
                continue
            budget = self.max_num_batched_tokens - out.total_tokens
            if len(self.running) >= self.max_num_seqs or budget <= 0:
                return False
            hits = self.block_manager.cached_prefix(seq)
            n = min(seq.num_tokens - len(hits) * self.block_manager.block_size, budget)
            if not self.block_manager.allocate(seq, n, hits):
                return False
            queue.popleft()
            self.num_waiting -= 1
            if not seq.num_preemptions:
                seq.num_cached_tokens = len(hits) * self.block_manager.block_size
            seq.status = SequenceStatus.RUNNING
            self._insert_running(seq)
            out.add(seq, n)
        return True

    def _insert_running(self, seq: Sequence) -> None:
        """Keep `running` ordered by priority, then admission."""
        at = len(self.running)
        while at and self.running[at - 1].priority > seq.priority:
            at -= 1
        self.running.insert(at, seq)

    def _make_room_for_interactive(self, out: SchedulerOutput) -> None:
        """Preempt batch work, newest first, when a waiting voice turn finds no seat or no blocks."""
        queue = self.waiting[Priority.INTERACTIVE]
        while queue and queue[0].is_finished:
            queue.popleft()
        if not queue:
            return
        seq = queue[0]
        hits = self.block_manager.cached_prefix(seq)
        first_chunk = min(seq.num_tokens - len(hits) * self.block_manager.block_size, self.max_num_batched_tokens)
        while self.running and self.running[-1].priority is Priority.BATCH and (
                len(self.running) >= self.max_num_seqs
                or self.block_manager.blocks_needed(seq, first_chunk, len(hits)) > self.block_manager.num_free_blocks):
            self._preempt(self.running[-1], out)

    def _preempt(self, seq: Sequence, out: SchedulerOutput) -> None:
        self.running.remove(seq)
        self.block_manager.free_blocks(seq)
        seq.num_computed_tokens = 0
        seq.num_preemptions += 1
        seq.status = SequenceStatus.WAITING
        self.waiting[seq.priority].appendleft(seq)
        self.num_waiting += 1
        out.num_preempted += 1
        self.num_preemptions += 1

    def finish(self, seq: Sequence, reason: str) -> None:
        """End seq now (done, stopped or aborted) and return its blocks in this same call."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
            self.block_manager.free_blocks(seq)
        elif seq.status is SequenceStatus.WAITING:
            self.num_waiting -= 1  # stays in its deque, skipped when reached
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
