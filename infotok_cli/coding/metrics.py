"""Quality metrics: PSNR over a whole video and per-frame SSIM, plus the SSIM training loss.

SSIM follows Wang et al. 2004 with the parameters scikit-image uses for its Gaussian variant
(`structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=255, channel_axis=-1)`): an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
computed per RGB channel and averaged, borders excluded ("valid" region). The tests check it against
scikit-image.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def mse_sum(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """Sum of squared differences and element count, for streaming PSNR over a long video."""
    d = a.astype(np.float64) - b.astype(np.float64)
    return float(np.sum(d * d)), d.size


def psnr_from_mse(mse: float, peak: float = 255.0) -> float:
    """20 log10(peak / sqrt(MSE)); identical inputs give +inf."""
    if mse <= 0:
        return math.inf
    return 20 * math.log10(peak / math.sqrt(mse))


def psnr_video(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two uint8 videos [T,H,W,3] with the MSE taken over the whole video (TokenBench style)."""
    s, n = mse_sum(a, b)
    return psnr_from_mse(s / n)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float, win: int = 11) -> torch.Tensor:
    """SSIM map of images [N,C,H,W] (valid region only, per channel)."""
    c = x.shape[1]
    g = _gaussian_window(win).to(x.dtype).to(x.device)
    kh = g.view(1, 1, win, 1).repeat(c, 1, 1, 1)
    kw = g.view(1, 1, 1, win).repeat(c, 1, 1, 1)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(z, kh, groups=c), kw, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def ssim_frames(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame SSIM of two uint8 videos [T,H,W,3] (8-bit range); frames smaller than 11 pixels use a
    window as large as the frame allows (odd)."""
    xa = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).double()
    xb = torch.from_numpy(np.ascontiguousarray(b)).permute(0, 3, 1, 2).double()
    win = min(11, xa.shape[2], xa.shape[3])
    win -= 1 - win % 2
    out = []
    for i in range(0, xa.shape[0], 16):  # chunks bound the memory on long, large videos
        out.append(ssim_map(xa[i : i + 16], xb[i : i + 16], 255.0, win).mean(dim=(1, 2, 3)))
    return torch.cat(out).numpy()


def ssim_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 - SSIM for training on frames [N,3,H,W] in [-1, 1] (computed in float32)."""
    return 1 - ssim_map(x.float(), y.float(), data_range=2.0).mean()
