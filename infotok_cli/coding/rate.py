"""Rate control: how many tokens each window keeps.

Budget (`--beta`, `--strategy`): the per-position reconstruction error of the full-rate tokens is the
information proxy (content the base tokenizer reconstructs badly carries more information), so a
window's mean error sets its keep rate under the `global` and `video` strategies; `window` keeps beta
everywhere. Quality (`--target-psnr`): each window keeps the fewest tokens whose reconstruction reaches
the target (`tokens_for_quality`), optionally capped (`--max-bpp16`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..constants import MIN_RATE, STRATEGIES
from ..errors import OptionError
from ..model.family import tokens_for_rate

__all__ = ["MIN_RATE", "QualitySearch", "check_budget", "check_quality_options", "rates_for", "tokens_for_quality",
           "tokens_for_rate", "video_rates", "window_rate"]


def check_budget(strategy: str, beta: float) -> None:
    """The token-budget options (`--strategy`, `--beta`) are valid, or CodecError."""
    if strategy not in STRATEGIES:
        raise OptionError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if not 1 / 16 <= beta <= 1:
        raise OptionError(f"--beta must be between 1/16 (0.0625) and 1, got {beta}")



def check_quality_options(target_psnr: float | None, max_bpp16: float | None) -> None:
    if target_psnr is not None and not (math.isfinite(target_psnr) and 1 <= target_psnr <= 99):
        raise OptionError(f"--target-psnr must be between 1 and 99 dB, got {target_psnr}")
    if max_bpp16 is not None:
        if target_psnr is None:
            raise OptionError("--max-bpp16 caps the rate of --target-psnr; give --target-psnr too")
        if not (math.isfinite(max_bpp16) and MIN_RATE + 1 / 16 <= max_bpp16 <= 1 + 1 / 16):
            raise OptionError(f"--max-bpp16 must be between 0.125 and 1.0625 (keep 1/16..1), got {max_bpp16}")



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


def tokens_for_quality(capacity: int, psnr_at: Callable[[int], float], target: float,
                       full_psnr: float | None = None, *, estimate: Callable[[int], float] | None = None,
                       k_start: int | None = None, k_cap: int | None = None, tolerance: float = 0.25,
                       max_probes: int = 8) -> QualitySearch:
    """Smallest token count k whose reconstruction reaches `target` dB, with as few decodes as possible.

    `psnr_at(k)` decodes the window from its k top-scoring tokens (one network pass). `full_psnr` is the
    PSNR at k = capacity where a full-rate pass already measured it; without it that count is decoded
    only if the search needs it. The search works on the rate-PSNR curve. With `estimate(k)`, a
    predicted PSNR non-decreasing in k (the router head's rate curve), it first decodes the smallest
    count the estimate expects to reach the target, and until the target is bracketed each next count
    is where the estimate, shifted by the last decode's miss, reaches it. Without it, a secant step
    from the warm start `k_start` (e.g. the previous window's count) towards the full-rate point. Once
    bracketed (the highest count that falls short, the lowest that reaches), false position (Illinois).
    It aims `tolerance / 2` dB above the target and stops as soon as a count reaches the target by at
    most `tolerance` dB, when the bracket is down to about 1/256 of the window, or after `max_probes`
    decodes; the answer is always a measured count that reaches the target (or the cap/capacity when
    none can).

    `k_cap` (e.g. from --max-bpp16) bounds k from above. Counts never go below ceil(N/16).
    """
    floor = max(1, math.ceil(capacity * MIN_RATE))
    cap = capacity if k_cap is None else max(floor, min(capacity, int(k_cap)))
    probes = 0
    known: dict[int, float] = {} if full_psnr is None else {capacity: full_psnr}

    def measure(k: int) -> float:
        nonlocal probes
        if k not in known:
            probes += 1
            known[k] = float(psnr_at(k))
        return known[k]

    aim = target + tolerance / 2
    resolution = max(1, capacity // 256)
    if estimate is None or cap in known:
        top = measure(cap)  # free when uncapped and full_psnr is given
        if not top >= target:  # also catches NaN
            return QualitySearch(cap, top, probes, False)
        if cap == floor:
            return QualitySearch(cap, top, probes, True)
        hi, p_hi = cap, top  # lowest count known to reach the target
    else:
        hi, p_hi = cap + 1, math.inf  # none known yet
    lo, p_lo = floor - 1, -math.inf  # highest count known to fall short (floor - 1: none yet)
    side = 0  # Illinois: which end moved last, to halve a stale end's weight
    if estimate is not None:
        k = first_reaching(estimate, aim, floor, min(hi - 1, cap))
    else:
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
            if k == cap:  # even the cap falls short (also catches NaN)
                return QualitySearch(cap, p, probes, False)
            lo, p_lo = k, p
            if side == -1 and hi <= cap:
                p_hi = (p_hi + aim) / 2
            side = -1
        if hi - lo <= resolution:
            break
        if estimate is not None and (hi > cap or not math.isfinite(p_lo)):  # one side still open
            miss = p - estimate(k)
            k = first_reaching(lambda c, miss=miss: estimate(c) + miss, aim, lo + 1, min(hi - 1, cap))
        elif math.isfinite(p_lo) and p_hi > p_lo:  # false position inside the bracket
            k = round(lo + (aim - p_lo) * (hi - lo) / (p_hi - p_lo))
        else:  # only points above the target: secant through the two lowest known, extrapolated down
            k2 = min(c for c in known if c > hi) if any(c > hi for c in known) else None
            if k2 is not None and known[k2] > p_hi:
                slope = (known[k2] - p_hi) / (k2 - hi)
                k = round(hi - (p_hi - aim) / slope)
            else:
                k = hi // 2
        k = min(max(k, lo + 1, floor), hi - 1)
    if hi > cap:  # no decode has reached the target yet: the cap decides
        top = measure(cap)
        return QualitySearch(cap, top, probes, top >= target)
    return QualitySearch(hi, known[hi], probes, True)


def first_reaching(f: Callable[[int], float], level: float, lo: int, hi: int) -> int:
    """Smallest k in [lo, hi] with f(k) >= level for a non-decreasing f (hi when none is)."""
    while lo < hi:
        mid = (lo + hi) // 2
        if f(mid) >= level:
            hi = mid
        else:
            lo = mid + 1
    return hi


def rates_for(strategy: str, beta: float, window_errors: Sequence[float], capacities: Sequence[int],
              reference_error: float) -> list[float]:
    """Keep rate of every window of a video from the windows' mean full-rate errors: `video_rates` for the
    `video` strategy, else `window_rate` per window."""
    if strategy == "video":
        return video_rates(beta, list(window_errors), list(capacities))
    return [window_rate(strategy, beta, e, reference_error) for e in window_errors]
