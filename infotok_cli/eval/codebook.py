"""Codebook use: the empirical entropy of FSQ tokens, per digit and per token.

A token is a mixed-radix number of FSQ digits (levels 8,8,8,5,5,5: digit i is (index // basis_i) % L_i).
A healthy tokenizer spreads each digit over its levels; a digit stuck at one level wastes the bits the
format pays for. `token_entropy` reports, for a set of token indices:
- per digit: the entropy H_i in bits and its fraction of log2(L_i);
- `bits_per_token`: the sum of the digit entropies (the most the tokens can carry if digits were
  independent; at most log2(64000) = 15.97 bits);
- `joint_bits`: the entropy of the whole token (order 0), and the number of distinct codes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..constants import FSQ_LEVELS


def _entropy_bits(counts: np.ndarray) -> float:
    counts = counts[counts > 0].astype(np.float64)
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def token_entropy(indices: np.ndarray | Any, levels: Sequence[int] = FSQ_LEVELS) -> dict:
    """Entropy statistics of token indices, a numpy array or a torch tensor on any device (any shape;
    negative values, i.e. dropped positions, are skipped). Works without importing torch."""
    if hasattr(indices, "detach"):  # a torch tensor, without importing torch to ask isinstance
        indices = indices.detach().cpu().numpy()
    flat = np.asarray(indices).reshape(-1)
    flat = flat[flat >= 0].astype(np.int64)
    levels = [int(v) for v in levels]
    digit_bits, digit_fraction = [], []
    basis = 1
    for level in levels:
        digits = (flat // basis) % level
        bits = _entropy_bits(np.bincount(digits, minlength=level))
        digit_bits.append(round(bits, 4))
        digit_fraction.append(round(bits / math.log2(level), 4))
        basis *= level
    _, counts = np.unique(flat, return_counts=True)
    return {
        "tokens": int(flat.size),
        "distinct_codes": int(counts.size),
        "digit_bits": digit_bits,
        "digit_fraction": digit_fraction,
        "bits_per_token": round(float(sum(digit_bits)), 4),
        "joint_bits": round(_entropy_bits(counts), 4),
        "max_bits": round(math.log2(math.prod(levels)), 4),
    }
