"""The ELBO router: how many tokens a window gets, and which positions keep theirs.

How many: the per-position reconstruction error of the full-rate tokens is the information proxy
(content the base tokenizer reconstructs badly carries more information), so a window's mean error sets
its keep rate under the `global` and `video` strategies.

Which (`PLACEMENTS`): by default the positions whose tokens the decompressor can least do without. Two
probe decodes, one sending a fixed pseudo-random half of the tokens and the other the complement, give
every position's error when its token is dropped and when it is sent (`probe_errors`). `probe-gain`
(the default) ranks by the dropped error minus the sent one rescaled to a full-rate error estimate
(x e_ref / e_ref_probe), which needs no full-rate decode; `drop-gain` by the dropped error minus the
measured full-rate error (`drop_gain`). Ranking by the full-rate error alone
(`error`, the paper's router, fewest passes) keeps positions the decompressor fills well from their
neighbours.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .model import SPATIAL_STRIDE, TEMPORAL_STRIDE

STRATEGIES = ("window", "global", "video")
PLACEMENTS = ("probe-gain", "drop-gain", "error")
DEFAULT_PLACEMENT = "probe-gain"
MIN_RATE = 1 / 16
PROBE_SEED = 0  # the probe halves are fixed, so compressing the same video twice gives the same file


def position_error(x: torch.Tensor, x_full: torch.Tensor, frame_stride: int = 1) -> torch.Tensor:
    """Per-latent-position error e[b, t, i, j]: mean over channels of |x - x_full|, averaged over the
    pixels the position covers (frame 0 alone for latent frame 0, then groups of 4 frames; 8x8 blocks).

    x, x_full: [B,3,T,H,W] with T = 1 + 4k and H, W multiples of 8; or, with frame_stride s (2 or 4),
    only frames 0, s, 2s, ... of such a window (each position then averages the frames of its group
    that are there). Computed in float32 so that the ranking does not depend on the autocast precision
    of the model.
    """
    b, _, n, h, w = x.shape
    # latent frame of each frame given: frame f belongs to latent frame ceil(f / 4)
    latent = [(k * frame_stride + TEMPORAL_STRIDE - 1) // TEMPORAL_STRIDE for k in range(n)]
    t = latent[-1] + 1
    error = torch.empty(b, t, h // SPATIAL_STRIDE, w // SPATIAL_STRIDE, dtype=torch.float32, device=x.device)
    # One latent frame at a time, so only a few frames' worth of float32 differences exist at once.
    for i in range(t):
        first, last = latent.index(i), n - latent[::-1].index(i)
        diff = (x[:, :, first:last].float() - x_full[:, :, first:last].float()).abs_().mean(dim=(1, 2))
        error[:, i] = F.avg_pool2d(diff[:, None], SPATIAL_STRIDE)[:, 0]
    return error


def probe_half(shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
    """A pseudo-random half of the positions (the first probe decode sends these, the second the rest);
    fixed by PROBE_SEED unless a generator is given (training draws a new one each step)."""
    if generator is None:
        generator = torch.Generator().manual_seed(PROBE_SEED)
    return random_mask(shape, math.prod(shape) // 2, generator)


def probe_errors(x: torch.Tensor, decode: Callable[[torch.Tensor], torch.Tensor], half: torch.Tensor,
                 frame_stride: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(dropped, sent): every position's error [B,t,h,w] in the probe decode that drops its token and in
    the one that sends it.

    x: [B,3,T,H,W]; decode(keep) decodes the window's tokens with keep mask [B,t,h,w]; half: bool [t,h,w]
    or [B,t,h,w] (see probe_half). Two decodes, run one after the other so that only one reconstruction
    exists at a time. With frame_stride s, x and the decodes hold frames 0, s, 2s, ... only (see
    position_error).
    """
    half = half.to(x.device).expand(x.shape[0], *half.shape[-3:])
    at_half = position_error(x, decode(half), frame_stride)
    at_rest = position_error(x, decode(~half), frame_stride)
    return torch.where(half, at_rest, at_half), torch.where(half, at_half, at_rest)


def drop_gain(x: torch.Tensor, decode: Callable[[torch.Tensor], torch.Tensor], half: torch.Tensor,
              full_error: torch.Tensor | None = None, frame_stride: int = 1) -> torch.Tensor:
    """What sending each token saves: its position's error when the token is dropped (while the other
    probe half is sent) minus its full-rate error (`drop-gain`), or minus its error when it is sent in
    the other probe (`probe-gain`, full_error None: no full-rate decode needed). Two decodes
    (probe_errors); full_error: [B,t,h,w]."""
    dropped, sent = probe_errors(x, decode, half, frame_stride)
    return dropped - (sent if full_error is None else full_error.to(dropped.device))


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


@dataclass
class QualitySearch:
    """Outcome of `tokens_for_quality` for one window."""

    k: int  # tokens kept
    psnr: float  # PSNR of the window's reconstruction with those k tokens
    probes: int  # decodes made by the search (the full-rate decode is not one of them)
    reached: bool  # psnr >= target


def tokens_for_quality(capacity: int, psnr_at: Callable[[int], float], target: float, full_psnr: float, *,
                       k_start: int | None = None, k_cap: int | None = None, tolerance: float = 0.25,
                       max_probes: int = 8) -> QualitySearch:
    """Smallest token count k whose reconstruction reaches `target` dB, with as few decodes as possible.

    `psnr_at(k)` decodes the window from its k top-error tokens (one network pass); `full_psnr` is the
    PSNR at k = capacity, which the router's full-rate pass already measured. The search works on the
    rate-PSNR curve: a secant step from the warm start `k_start` (e.g. the previous window's count)
    towards the known full-rate point, then false position (Illinois) inside the bracket of the
    highest count that falls short and the lowest that reaches the target. It aims `tolerance / 2` dB
    above the target and stops as soon as a count reaches the target by at most `tolerance` dB, when
    the bracket is down to about 1/256 of the window, or after `max_probes` decodes; the answer is
    always a measured count that reaches the target (or the cap/capacity when none can).

    `k_cap` (e.g. from --max-bpp16) bounds k from above. Counts never go below ceil(N/16).
    """
    floor = max(1, math.ceil(capacity * MIN_RATE))
    cap = capacity if k_cap is None else max(floor, min(capacity, int(k_cap)))
    probes = 0
    known: dict[int, float] = {capacity: full_psnr}

    def measure(k: int) -> float:
        nonlocal probes
        if k not in known:
            probes += 1
            known[k] = float(psnr_at(k))
        return known[k]

    top = measure(cap)  # free when uncapped
    if not top >= target:  # also catches NaN
        return QualitySearch(cap, top, probes, False)
    if cap == floor:
        return QualitySearch(cap, top, probes, True)
    aim = target + tolerance / 2
    resolution = max(1, capacity // 256)
    hi, p_hi = cap, top  # lowest count known to reach the target
    lo, p_lo = floor - 1, -math.inf  # highest count known to fall short (floor - 1: none yet)
    side = 0  # Illinois: which end moved last, to halve a stale end's weight
    k = min(max(k_start if k_start is not None else cap // 2, floor), cap)
    while probes < max_probes:
        if k >= hi or k <= lo:
            k = (lo + hi) // 2 if lo >= floor else max(floor, hi // 2)
        if k >= hi or k <= lo or hi - lo <= resolution:
            break
        p = measure(k)
        if p >= target:
            hi, p_hi = k, p
            if p - target <= tolerance:
                break
            if side == 1:
                p_lo = (p_lo + aim) / 2 if math.isfinite(p_lo) else p_lo
            side = 1
        else:
            lo, p_lo = k, p
            if side == -1:
                p_hi = (p_hi + aim) / 2
            side = -1
        if hi - lo <= resolution:
            break
        if math.isfinite(p_lo) and p_hi > p_lo:  # false position inside the bracket
            k = round(lo + (aim - p_lo) * (hi - lo) / (p_hi - p_lo))
        else:  # only points above the target: secant through the two lowest known, extrapolated down
            k2 = min(c for c in known if c > hi) if any(c > hi for c in known) else None
            if k2 is not None and known[k2] > p_hi:
                slope = (known[k2] - p_hi) / (k2 - hi)
                k = round(hi - (p_hi - aim) / slope)
            else:
                k = hi // 2
        k = min(max(k, lo + 1, floor), hi - 1)
    return QualitySearch(hi, known[hi], probes, True)
