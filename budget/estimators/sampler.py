"""The sampler's peak: the step's float32 logits and the vocab-sized buffers the sampler makes from them."""
from __future__ import annotations

from budget.units import human

FILTER_ROWS = 16  # rows top-k/top-p/min-p filter at a time (engines/llm/sampler.py): the sort's buffers are this wide


def sampler_bytes(seqs: int, vocab: int) -> tuple[int, str]:
    """Logits (4 B) + the larger of two phases: the CDF phase holds log-probs, the temperature-scaled copy and the CDF
    (12 B a row's entry); the filter phase holds the first two and, for FILTER_ROWS rows, the sort's values, int64
    order, probabilities, cumulative mass and masks (21 B measured on the CPU, 24 B planned)."""
    row, rows = seqs * vocab, min(seqs, FILTER_ROWS) * vocab
    total = 4 * row + max(12 * row, 8 * row + 24 * rows)
    return total, (f"sampler: 4·S·vocab fp32 logits + max(12·S·vocab CDF phase, 8·S·vocab + "
                   f"24·{min(seqs, FILTER_ROWS)}·vocab filter phase) = {human(total)}")
