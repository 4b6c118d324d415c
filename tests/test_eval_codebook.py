"""Codebook-use statistics against hand-computed entropies."""

from __future__ import annotations

import math

import numpy as np
import torch

from infotok_cli.eval.codebook import token_entropy

LEVELS = (8, 8, 8, 5, 5, 5)
BASIS = np.cumprod([1, *LEVELS[:-1]])


def tokens_from_digits(digits: np.ndarray) -> np.ndarray:
    return (digits * BASIS).sum(-1)


def test_uniform_digits_reach_log2_levels() -> None:
    # every combination of the first digit's 8 levels, others fixed: H = 3 bits on digit 0, 0 elsewhere
    digits = np.zeros((8, 6), dtype=np.int64)
    digits[:, 0] = np.arange(8)
    use = token_entropy(tokens_from_digits(digits), LEVELS)
    assert use["digit_bits"][0] == 3.0 and use["digit_bits"][1:] == [0.0] * 5
    assert use["digit_fraction"][0] == 1.0 and use["bits_per_token"] == 3.0
    assert use["distinct_codes"] == 8 and use["joint_bits"] == 3.0
    assert use["max_bits"] == round(math.log2(64000), 4)


def test_skewed_digit_and_dropped_positions() -> None:
    # digit 3 (5 levels) takes level 4 three times out of four: H = 0.8113 bits
    digits = np.zeros((4, 6), dtype=np.int64)
    digits[:3, 3] = 4
    tokens = torch.from_numpy(np.concatenate([tokens_from_digits(digits), [-1, -1]]))  # -1 = dropped
    use = token_entropy(tokens, LEVELS)
    assert use["tokens"] == 4
    assert abs(use["digit_bits"][3] - 0.8113) < 1e-4
    assert abs(use["digit_fraction"][3] - 0.8113 / math.log2(5)) < 1e-4


def test_random_tokens_use_almost_every_bit() -> None:
    rng = np.random.default_rng(0)
    use = token_entropy(rng.integers(0, 64000, size=200_000), LEVELS)
    assert min(use["digit_fraction"]) > 0.99 and use["bits_per_token"] > 15.9
