"""Fixed-size KV blocks, ref-counted and shared between sequences by chained hashes of their full blocks.

Every block is in exactly one of three places: `free` (holds nothing reusable), `cached` (no owner,
but its tokens are still findable by hash; reused least-recently-freed first), or in use (ref > 0).
All moves are O(1): a deque, an insertion-ordered dict and counters; nothing scans a list.
"""
from __future__ import annotations

from collections import OrderedDict, deque

from engines.llm.sequence import Sequence

ROOT_HASH = 0x9E3779B97F4A7C15


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        self.num_blocks, self.block_size = num_blocks, block_size
        self.prefix_caching = enable_prefix_caching
        self.ref_counts = [0] * num_blocks
        self.block_hash: list[int | None] = [None] * num_blocks
        self.block_tokens: list[tuple[int, ...] | None] = [None] * num_blocks  # for the collision check
        self.hash_to_block: dict[int, int] = {}
        self.free: deque[int] = deque(range(num_blocks))
        self.cached: OrderedDict[int, None] = OrderedDict()
        self.num_used = 0

    @property
    def num_free_blocks(self) -> int:
        """Blocks an allocation can take: truly free ones, then cached ones (evicting their contents)."""
        return len(self.free) + len(self.cached)

    def blocks_needed(self, seq: Sequence, num_new_tokens: int, num_hit_blocks: int = 0) -> int:
        total = seq.num_computed_tokens + num_hit_blocks * self.block_size + num_new_tokens
        return -(-total // self.block_size) - len(seq.block_table) - num_hit_blocks

    def _hash_full_blocks(self, seq: Sequence, upto: int) -> None:
        """Extend seq.block_hashes to its first `upto` full blocks."""
        bs, hashes = self.block_size, seq.block_hashes
        while len(hashes) < upto:
            i = len(hashes)
            hashes.append(hash((hashes[-1] if hashes else ROOT_HASH, *seq.token_ids[i * bs:(i + 1) * bs])))

    def cached_prefix(self, seq: Sequence) -> list[int]:
        """Blocks already holding this sequence's leading full blocks; at least one token is left to compute."""
        if not self.prefix_caching:
            return []
        limit = (seq.num_tokens - 1) // self.block_size
        self._hash_full_blocks(seq, limit)
        hits: list[int] = []
        bs = self.block_size
        for i in range(limit):
            block = self.hash_to_block.get(seq.block_hashes[i])
            if block is None or self.block_tokens[block] != tuple(seq.token_ids[i * bs:(i + 1) * bs]):
                break
            hits.append(block)
        return hits

    def allocate(self, seq: Sequence, num_new_tokens: int, hits: list[int] = ()) -> bool:
        """Give seq the prefix-cache hits and enough new blocks for num_new_tokens more; False changes nothing."""
        need = self.blocks_needed(seq, num_new_tokens, len(hits))
        if need <= 0 and not hits:
            return True  # the common decode step: the tail block still has room
        revived = sum(1 for b in hits if self.ref_counts[b] == 0)
        if need + revived > len(self.free) + len(self.cached):
            return False
        for block in hits:
            if self.ref_counts[block] == 0:
                del self.cached[block]
                self.num_used += 1
            self.ref_counts[block] += 1
        seq.block_table.extend(hits)
        seq.num_computed_tokens += len(hits) * self.block_size
        seq.num_committed_blocks += len(hits)
        for _ in range(need):
            seq.block_table.append(self._take())
        return True

    def _take(self) -> int:
        if self.free:
            block = self.free.popleft()
        else:
            block, _ = self.cached.popitem(last=False)
            self._forget(block)
        self.ref_counts[block] = 1
        self.num_used += 1
        return block

    def _forget(self, block: int) -> None:
        digest = self.block_hash[block]
        if digest is not None and self.hash_to_block.get(digest) == block:
            del self.hash_to_block[digest]
        self.block_hash[block] = self.block_tokens[block] = None

    def commit(self, seq: Sequence) -> None:
        """Make seq's newly computed full blocks findable by later requests."""
        full = seq.num_computed_tokens // self.block_size
        if full <= seq.num_committed_blocks or not self.prefix_caching:
            return
        self._hash_full_blocks(seq, full)
        bs = self.block_size
        for i in range(seq.num_committed_blocks, full):
            block, digest = seq.block_table[i], seq.block_hashes[i]
            if digest not in self.hash_to_block:  # else another block holds the same tokens; this one stays private
                self.hash_to_block[digest] = block
                self.block_hash[block] = digest
                self.block_tokens[block] = tuple(seq.token_ids[i * bs:(i + 1) * bs])
        seq.num_committed_blocks = full

    def free_blocks(self, seq: Sequence) -> None:
        """Drop seq's references; tail blocks go first so they are the first evicted."""
        for block in reversed(seq.block_table):
            self.ref_counts[block] -= 1
            if self.ref_counts[block] == 0:
                self.num_used -= 1
                if self.block_hash[block] is None:
                    self.free.append(block)
                else:
                    self.cached[block] = None
        seq.block_table.clear()
        seq.num_committed_blocks = 0

    def check(self) -> None:
        """Assert the accounting is whole: every block is free, cached or in use, exactly once."""
        assert len(self.free) + len(self.cached) + self.num_used == self.num_blocks
        assert self.num_used == sum(1 for r in self.ref_counts if r > 0)
        assert all(self.ref_counts[b] == 0 for b in self.free) and all(self.ref_counts[b] == 0 for b in self.cached)
        assert all(self.block_hash[b] is not None for b in self.cached)
        assert all(self.block_hash[b] == h for h, b in self.hash_to_block.items())
