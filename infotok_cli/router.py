"""The ELBO router: how many tokens a window gets, and which positions keep theirs.

The per-position reconstruction error of the full-rate tokens is the information proxy: content the
base tokenizer reconstructs badly carries more information and keeps its tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .model import SPATIAL_STRIDE, TEMPORAL_STRIDE, latent_frames

STRATEGIES = ("window", "global", "video")
MIN_RATE = 1 / 16


def position_error(x: torch.Tensor, x_full: torch.Tensor) -> torch.Tensor:
    """Per-latent-position error e[b, t, i, j]: mean over channels of |x - x_full|, averaged over the
    pixels the position covers (frame 0 alone for latent frame 0, then groups of 4 frames; 8x8 blocks).

    x, x_full: [B,3,T,H,W] with T = 1 + 4k and H, W multiples of 8. Computed in float32 so that the
    ranking does not depend on the autocast precision of the model.
    """
    b, _, n, h, w = x.shape
    t = latent_frames(n)
    error = torch.empty(b, t, h // SPATIAL_STRIDE, w // SPATIAL_STRIDE, dtype=torch.float32, device=x.device)
    # One latent frame at a time, so only a few frames' worth of float32 differences exist at once.
    for i in range(t):
        first, last = (0, 1) if i == 0 else (1 + TEMPORAL_STRIDE * (i - 1), 1 + TEMPORAL_STRIDE * i)
        diff = (x[:, :, first:last].float() - x_full[:, :, first:last].float()).abs_().mean(dim=(1, 2))
        error[:, i] = F.avg_pool2d(diff[:, None], SPATIAL_STRIDE)[:, 0]
    return error


def tokens_for_rate(rate: float, capacity: int) -> int:
    """k = round(rate x N), at least 1 so a window is never empty."""
    return max(1, min(capacity, int(round(rate * capacity))))


def top_k_mask(error: torch.Tensor, k: int) -> torch.Tensor:
    """Keep exactly the k positions with the largest error; ties go to the earlier raster position.

    error: [t,h,w] (one window). Returns a bool mask of the same shape with exactly k True.
    """
    flat = error.reshape(-1).float()
    k = max(0, min(int(k), flat.numel()))
    # A stable descending sort keeps equal errors in raster order: deterministic tie-breaking.
    order = torch.sort(flat, descending=True, stable=True).indices[:k]
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=error.device)
    mask[order] = True
    return mask.view(error.shape)


def random_mask(shape: tuple[int, ...], k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniformly random placement of exactly k kept positions (the data-agnostic baseline)."""
    n = math.prod(shape)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator)[:k]] = True
    return mask.view(shape)


def raster_prefix_mask(shape: tuple[int, int, int], k: int) -> torch.Tensor:
    """Keep the first positions of each latent frame in raster order, k in total, spread as evenly as
    possible over the latent frames (the heuristic baseline)."""
    t, h, w = shape
    base, extra = divmod(k, t)
    mask = torch.zeros(t, h * w, dtype=torch.bool)
    for i in range(t):
        mask[i, : base + (1 if i < extra else 0)] = True
    return mask.view(t, h, w)


def window_rate(strategy: str, beta: float, window_error: float, reference_error: float) -> float:
    """Keep rate of one window.

    window: every window keeps beta.
    global / video: rate = clip(beta x e_w / e_ref, 1/16, 1), where e_ref is the model's mean error over its
    training data (global) or this video's own mean window error (video, so that the video averages beta).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if not MIN_RATE <= beta <= 1:
        raise ValueError(f"beta must be between 1/16 and 1, got {beta}")
    if strategy == "window" or reference_error <= 0:
        return beta
    return float(min(1.0, max(MIN_RATE, beta * window_error / reference_error)))


def video_rates(beta: float, window_errors: list[float], capacities: list[int]) -> list[float]:
    """Rates for the `video` strategy: proportional to each window's error and scaled so that the kept
    tokens of the whole video come to round(beta x total capacity) despite clipping to [1/16, 1]."""
    total = sum(capacities)
    target = beta * total
    errs = [max(e, 1e-12) for e in window_errors]
    lo, hi = 0.0, 1e6  # bisection on the scale s in rate_w = clip(s x e_w, 1/16, 1)
    for _ in range(100):
        mid = (lo + hi) / 2
        kept = sum(min(1.0, max(MIN_RATE, mid * e)) * c for e, c in zip(errs, capacities))
        if kept < target:
            lo = mid
        else:
            hi = mid
    return [min(1.0, max(MIN_RATE, hi * e)) for e in errs]
