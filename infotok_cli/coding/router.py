"""The ELBO router's placement: which positions of a window keep their tokens (how many is `rate.py`).

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

import torch
import torch.nn.functional as F

from ..constants import DEFAULT_PLACEMENT, PLACEMENTS, SPATIAL_STRIDE, TEMPORAL_STRIDE

__all__ = ["DEFAULT_PLACEMENT", "PLACEMENTS", "PROBE_SEED", "drop_gain", "position_error", "probe_errors", "probe_half",
           "random_mask", "raster_prefix_mask", "top_k_mask"]

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
