"""Wolpaw information transfer rate: bits per selection and bits per minute.

Shared by offline evaluation (fixed repetitions and dynamic stopping) and the live status lines,
so both report the same quantity. Wolpaw et al. (2000): with ``N`` equiprobable candidates and
accuracy ``P`` (errors spread evenly over the ``N - 1`` others),
``B = log2 N + P log2 P + (1 - P) log2((1 - P) / (N - 1))`` bits per selection. Below chance the
formula rises again (anti-information), which no decoder transmits: it is 0 there.
"""

from __future__ import annotations

import math


def wolpaw_bits(n_candidates: int, accuracy: float) -> float:
    """Bits per selection among ``n_candidates`` at top-1 ``accuracy`` (0 at or below chance)."""
    n, p = int(n_candidates), float(accuracy)
    if n < 2 or not math.isfinite(p) or p <= 1.0 / n:
        return 0.0
    p = min(p, 1.0)
    bits = math.log2(n) + p * math.log2(p)
    if p < 1.0:
        bits += (1 - p) * math.log2((1 - p) / (n - 1))
    return max(bits, 0.0)


def bits_per_minute(n_candidates: int, accuracy: float, seconds_per_selection: float) -> float:
    """Wolpaw bits per minute when one selection takes ``seconds_per_selection`` (e.g. the
    presentations it needs times the stimulus onset asynchrony); 0 for a non-positive time."""
    if not seconds_per_selection > 0:
        return 0.0
    return wolpaw_bits(n_candidates, accuracy) * 60.0 / seconds_per_selection
