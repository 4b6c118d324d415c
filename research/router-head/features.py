"""Features the router head sees: everything is available after the encoder, before any decode.

extract_features(model, x) runs InfoTok.pre_codes step by step (same arithmetic, so the codes are
exactly model.encode(x)'s) and returns
  z      [B,192,t,h,w]  the latent after the compressor and code_norm (what enters to_code)
  zrms   [B,1,t,h,w]    log RMS of the latent before code_norm (the scale code_norm divides out)
  codes  [B,6,t,h,w]    the FSQ codes in [-1, 1]
  pix    [B,4,t,h,w]    pixel statistics per latent position (pixel_stats)
and the codes [B,t,h,w,6] (as model.encode returns them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from infotok_cli.model import SPATIAL_STRIDE, TEMPORAL_STRIDE, InfoTok

EPS = 1e-3


def group_mean(m: torch.Tensor) -> torch.Tensor:
    """[B,T,H,W] per-frame map -> [B,t,h,w]: mean over the frames of each latent frame (frame 0 alone,
    then groups of 4) and over each 8x8 block (as router.position_error groups pixels)."""
    b, n, hh, ww = m.shape
    first = m[:, :1]
    rest = m[:, 1:].reshape(b, (n - 1) // TEMPORAL_STRIDE, TEMPORAL_STRIDE, hh, ww).mean(2)
    return F.avg_pool2d(torch.cat([first, rest], 1), SPATIAL_STRIDE)


def pixel_stats(x: torch.Tensor) -> torch.Tensor:
    """x [B,3,T,H,W] in [-1, 1] -> [B,4,t,h,w] (float32): log block standard deviation, log mean
    absolute spatial gradient, log mean absolute difference to the previous frame (0 for frame 0) and
    mean intensity, each averaged over the pixels a latent position covers."""
    x = x.float()
    g = x.mean(1)  # grey [B,T,H,W]
    mean = group_mean(g)
    sq = group_mean(g * g)
    std = (sq - mean * mean).clamp_min(0).sqrt()
    dx = (g[..., :, 1:] - g[..., :, :-1]).abs()
    dy = (g[..., 1:, :] - g[..., :-1, :]).abs()
    grad = F.pad(dx, (0, 1)) + F.pad(dy, (0, 0, 0, 1))
    dt = torch.cat([torch.zeros_like(g[:, :1]), (g[:, 1:] - g[:, :-1]).abs()], 1)
    return torch.stack([(std + EPS).log(), (group_mean(grad) + EPS).log(), (group_mean(dt) + EPS).log(), mean], 1)


def extract_features(model: InfoTok, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """See the module docstring. Runs under the caller's autocast (as Tokenizer.encode_window does)."""
    assert model.cfg.layout == "residual", "the router head needs the residual layout (code_norm)"
    z = model.encoder(x).permute(0, 2, 3, 4, 1)  # [B,t,h,w,D]
    if model.adaptive:
        z = z + model.compressor_out(model.compressor(model.compressor_in(z)))
    zrms = z.float().pow(2).mean(-1, keepdim=True).add(1e-6).log().mul(0.5)
    z = model.code_norm(z)
    codes, _ = model.quantizer(model.to_code(z))
    feats = {
        "z": z.float().permute(0, 4, 1, 2, 3),
        "zrms": zrms.permute(0, 4, 1, 2, 3),
        "codes": codes.float().permute(0, 4, 1, 2, 3),
        "pix": pixel_stats(x),
    }
    return feats, codes
