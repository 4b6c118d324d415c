"""The Flex objective and the measurements training makes: one step's masked decode (router pass without
gradients, the kept tokens decoded with them), the loss terms, validation PSNR and the reference errors
(e_ref, e_ref_probe) the shipped weights record."""

from __future__ import annotations

import math
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..coding.precision import Precision
from ..coding.rate import tokens_for_rate
from ..coding.router import drop_gain, position_error, probe_errors, probe_half, top_k_mask
from ..eval.codebook import token_entropy
from ..model.infotok import InfoTok


class FlexObjective(nn.Module):
    """Wraps the model so that DDP sees one forward: router pass without gradients, masked decode."""

    def __init__(self, model: InfoTok, range_weight: float = 0.0, usage_weight: float = 0.0,
                 placement: str = "error"):
        super().__init__()
        self.model = model
        self.range_weight, self.usage_weight = range_weight, usage_weight
        self.placement = placement

    def forward(self, x: torch.Tensor, rates: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (reconstruction, weighted FSQ penalties)."""
        pre = self.model.pre_codes(x)
        codes, _ = self.model.quantizer(pre)
        penalty = self.range_weight * self.model.quantizer.range_penalty(pre)
        if self.usage_weight:
            penalty = penalty + self.usage_weight * self.model.quantizer.usage_penalty(pre)
        if not self.model.adaptive:  # base stage: full rate, no router pass
            return self.model.decode(codes), penalty
        if any(r < 1 for r in rates):
            # A fresh probe half each step, so the decompressor does not learn one fixed pattern.
            probe = torch.Generator().manual_seed(int(torch.randint(2**31, ()))) if self.placement != "error" \
                else None
            with torch.no_grad():
                score = router_score(self.model, x, codes.detach(), self.placement, probe)
            keep = torch.stack([top_k_mask(e, tokens_for_rate(r, e.numel())) for e, r in zip(score, rates)])
        else:
            # All clips at full rate: an all-True mask still puts `dropped_token` in the graph (with a zero
            # gradient). Without it DDP fails on the next step, as one parameter got no gradient.
            keep = torch.ones(codes.shape[:-1], dtype=torch.bool, device=codes.device)
        return self.model.decode(codes, keep), penalty


def router_score(model: InfoTok, x: torch.Tensor, codes: torch.Tensor, placement: str,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """The router's placement score [B,t,h,w] of a batch (top-k of it is kept): the full-rate error, or
    the drop gain against it or against the probes (router.drop_gain; probe half from `generator`, or the
    fixed one the codec uses)."""
    full_error = None if placement == "probe-gain" else position_error(x, model.decode(codes))
    if placement == "error":
        return full_error
    half = probe_half(tuple(codes.shape[1:-1]), generator)
    return drop_gain(x, lambda keep: model.decode(codes, keep), half, full_error)


def as_frames(clips: torch.Tensor) -> torch.Tensor:
    """Clips [B,3,T,H,W] -> their frames [B*T,3,H,W] (what the image losses take)."""
    return clips.permute(0, 2, 1, 3, 4).flatten(0, 1)


def lpips_term(lpips: nn.Module, y: torch.Tensor, x: torch.Tensor, frames: int, rng: random.Random
               ) -> torch.Tensor:
    """Mean ST-LPIPS between y and x ([B,3,T,H,W] in [-1, 1]) over `frames` frames drawn per step, the
    same for every clip. Frames are a sample because the trunk runs at full resolution."""
    picked = sorted(rng.sample(range(x.shape[2]), min(frames, x.shape[2])))
    return lpips(as_frames(y[:, :, picked]), as_frames(x[:, :, picked])).mean()


def pixel_loss(y: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """The reconstruction term: mean absolute error, or root mean squared error over the whole batch."""
    if kind == "rmse":
        # The epsilon keeps the gradient finite at zero error.
        return ((y - x).square().mean() + 1e-8).sqrt()
    return (y - x).abs().mean()


def psnr_pm1(y: torch.Tensor, x: torch.Tensor) -> float:
    """PSNR of images in [-1, 1] (peak-to-peak 2)."""
    mse = F.mse_loss(y.float().clamp(-1, 1), x.float()).item()
    return 10 * math.log10(4 / max(mse, 1e-12))


@torch.no_grad()
def validate(model: InfoTok, clips: list[torch.Tensor], rates: tuple[float, ...], precision: Precision,
             placement: str = "error") -> dict[str, float]:
    """PSNR per keep rate (over all validation windows' pixels), with the codec's placement of the kept
    tokens (fixed probe half), and codebook use at full rate. Clips move to the model's device."""
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, float] = {}
    indices = []
    for rate in rates:
        if rate < 1 and not model.adaptive:
            continue
        sq_err, count = 0.0, 0
        for x in clips:
            x = x.to(device)
            with precision.autocast():
                codes, idx = model.encode(x)
                keep = None
                if rate < 1:
                    score = router_score(model, x, codes, placement)[0]
                    keep = top_k_mask(score, tokens_for_rate(rate, score.numel()))[None]
                y = model.decode(codes, keep)
            sq_err += F.mse_loss(y.float().clamp(-1, 1), x, reduction="sum").item()
            count += x.numel()
            if rate == 1:
                indices.append(idx.flatten().cpu())
        out[f"psnr@{rate:g}"] = 10 * math.log10(4 / max(sq_err / count, 1e-12))
    if indices:
        use = token_entropy(torch.cat(indices), model.cfg.levels)
        out["digit_bits"] = round(use["bits_per_token"], 3)
        out["min_digit_fraction"] = round(min(use["digit_fraction"]), 3)
    return out


@torch.no_grad()
def reference_errors(model: nn.Module, clips: list[torch.Tensor], precision: Precision) -> tuple[float, float]:
    """(e_ref, e_ref_probe): the mean per-position error (in [0, 2] pixel units) over the given windows
    of the full-rate decode, and of the drop-gain probes where each position's token is sent
    (router.probe_errors, the codec's fixed half). The codec estimates a window's full-rate error from
    its probes as probe error x e_ref / e_ref_probe, which spares the full-rate decode. Any model family
    (see window_reference_errors)."""
    model.eval()
    device = next(model.parameters()).device
    errors = [window_reference_errors(model, x.to(device), precision) for x in clips]
    return float(np.mean([e[0] for e in errors])), float(np.mean([e[1] for e in errors]))


@torch.no_grad()
def window_reference_errors(model: nn.Module, x: torch.Tensor, precision: Precision) -> tuple[float, float]:
    """One window's (mean full-rate error, mean probe error where sent); x: [1,3,T,H,W] on the model's
    device. Works for every model family: the latent grid comes from the token indices [B,t,h,w], since
    the codes' layout differs (infotok-m [B,t,h,w,C], InfoTok-Flex [B,C,t,h,w]) and only the model's own
    decode reads them."""
    with precision.autocast():
        codes, indices = model.encode(x)
        full = position_error(x, model.decode(codes)).mean().item()
        half = probe_half(tuple(indices.shape[1:]))
        probe = probe_errors(x, lambda keep: model.decode(codes, keep), half)[1].mean().item()
    return full, probe
