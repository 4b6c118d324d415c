"""Finite scalar quantisation (FSQ): the InfoTok model's quantiser."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class FSQ(nn.Module):
    """Finite scalar quantisation: each of len(levels) dims is bounded and rounded to one of
    L_i values; the token index is the mixed-radix number of the digits."""

    def __init__(self, levels: tuple[int, ...]):
        super().__init__()
        lv = torch.tensor(levels, dtype=torch.float32)
        self.register_buffer("levels", lv, persistent=False)
        basis = torch.tensor([math.prod(levels[:i]) for i in range(len(levels))], dtype=torch.int64)
        self.register_buffer("basis", basis, persistent=False)
        self.codebook_size = int(math.prod(levels))

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        half = (self.levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        return torch.tanh(z + self._shift()) * half - offset

    def range_penalty(self, z: torch.Tensor) -> torch.Tensor:
        """Keeps the values entering FSQ centred and out of tanh's flat tails, where the straight-through
        gradient vanishes and a digit can freeze at one level (a dead digit wastes its bits): the squared
        per-dim mean of the tanh argument plus the squared excess of its magnitude beyond 2."""
        u = z.float() + self._shift()
        mean = u.reshape(-1, u.shape[-1]).mean(0)
        return mean.pow(2).mean() + F.relu(u.abs() - 2).pow(2).mean()

    def usage_penalty(self, z: torch.Tensor, temperature: float = 0.25) -> torch.Tensor:
        """1 - (entropy of each digit's level distribution over the batch) / log L, averaged over digits:
        0 when every level of every digit is used equally often. Levels are soft-assigned
        (softmax of -squared distance / temperature) so the gradient reaches values that round to an
        over-used level; the digit entropy the codebook targets are stated in is this, measured hard."""
        bounded = self.bound(z.float()).reshape(-1, z.shape[-1])
        total = bounded.new_zeros(())
        for i, n in enumerate(self.levels.long().tolist()):
            centres = torch.arange(n, device=z.device, dtype=bounded.dtype) - n // 2
            weights = torch.softmax(-(bounded[:, i, None] - centres).pow(2) / temperature, dim=-1)
            marginal = weights.mean(0)
            entropy = -(marginal * marginal.clamp_min(1e-12).log()).sum()
            total = total + 1 - entropy / math.log(n)
        return total / len(self.levels)

    def _shift(self) -> torch.Tensor:
        half = (self.levels - 1) * (1 + 1e-3) / 2
        return torch.atanh(torch.where(self.levels % 2 == 0, 0.5, 0.0) / half)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [..., d] -> (codes in [-1, 1] with straight-through gradient, indices [...])."""
        bounded = self.bound(z.float())
        rounded = bounded + (bounded.round() - bounded).detach()
        half_width = (self.levels // 2)
        digits = (rounded.detach().round() + half_width).long()
        indices = (digits * self.basis).sum(-1)
        return rounded / half_width, indices

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        digits = (indices.long()[..., None] // self.basis) % self.levels.long()
        half_width = self.levels // 2
        return (digits.float() - half_width) / half_width
