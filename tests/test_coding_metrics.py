"""PSNR and SSIM (infotok_cli/coding/metrics.py) against hand-computed values and scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from infotok_cli.coding.metrics import mse_sum, psnr_from_mse, psnr_video, ssim_frames


def skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """The reference the project pins: scikit-image's Gaussian SSIM on 8-bit RGB."""
    return float(structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                       data_range=255, channel_axis=-1))


def structured(h: int, w: int, k: int = 0) -> np.ndarray:
    """Gradients, a sine grating and a bright square: edges, flat areas and texture in one frame."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([255 * x / (w - 1), 128 + 100 * np.sin((x + y + 3 * k) / 4.0), 255 * y / (h - 1)], axis=-1)
    img[h // 4: h // 2, w // 3: w // 3 + 12] = (250, 20, 200)
    return img.clip(0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- PSNR


def test_psnr_hand_computed_constant_error() -> None:
    a = np.zeros((2, 8, 8, 3), np.uint8)
    b = np.full_like(a, 10)  # MSE = 100 everywhere
    assert psnr_video(a, b) == pytest.approx(20 * math.log10(255 / 10), abs=1e-12)  # 28.1308 dB
    assert psnr_video(a, b) == pytest.approx(28.130803608679106, abs=1e-9)


def test_psnr_hand_computed_single_pixel() -> None:
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[1, 2, 3, 0] = 255  # one of 96 values off by 255: MSE = 255^2 / 96, PSNR = 10 log10(96)
    assert psnr_video(a, b) == pytest.approx(10 * math.log10(96), abs=1e-12)
    assert psnr_video(b, a) == psnr_video(a, b)


def test_psnr_is_over_the_whole_video_not_a_mean_of_frames() -> None:
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[0] = 10  # frame 0 MSE 100, frame 1 identical: whole-video MSE 50
    assert psnr_video(a, b) == pytest.approx(20 * math.log10(255 / math.sqrt(50)), abs=1e-12)


def test_streaming_mse_sum_matches_whole_video() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (7, 12, 10, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (7, 12, 10, 3), dtype=np.uint8)
    parts = [mse_sum(a[i:i + 3], b[i:i + 3]) for i in range(0, 7, 3)]
    total = sum(s for s, _ in parts) / sum(n for _, n in parts)
    assert total == pytest.approx(np.mean((a.astype(float) - b.astype(float)) ** 2), rel=1e-12)
    assert psnr_from_mse(total) == pytest.approx(psnr_video(a, b), abs=1e-12)


def test_identical_videos_give_infinite_psnr_and_ssim_one() -> None:
    a = np.random.default_rng(1).integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)
    assert psnr_video(a, a.copy()) == math.inf
    assert psnr_from_mse(0.0) == math.inf
    np.testing.assert_allclose(ssim_frames(a, a.copy()), 1.0, atol=1e-12)


# ----------------------------------------------------------------------------- SSIM vs scikit-image


@pytest.mark.parametrize("shape", [(32, 32), (24, 40), (45, 31)])
def test_ssim_matches_skimage_on_random_images(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    a = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    noisy = (a.astype(np.int16) + rng.integers(-40, 41, a.shape)).clip(0, 255).astype(np.uint8)
    unrelated = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    for b in (noisy, unrelated):
        ours = ssim_frames(a[None], b[None])[0]
        assert ours == pytest.approx(skimage_ssim(a, b), abs=1e-4)


@pytest.mark.parametrize("distort", ["noise", "blur", "shift", "contrast", "constant"])
def test_ssim_matches_skimage_on_structured_images(distort: str) -> None:
    a = structured(48, 64)
    rng = np.random.default_rng(3)
    f = a.astype(np.float64)
    if distort == "noise":
        b = f + rng.normal(0, 12, f.shape)
    elif distort == "blur":
        b = (f + np.roll(f, 1, 0) + np.roll(f, 1, 1) + np.roll(f, (1, 1), (0, 1))) / 4
    elif distort == "shift":
        b = np.roll(f, 2, axis=1)
    elif distort == "contrast":
        b = 0.6 * f + 50
    else:
        b = np.full_like(f, 128.0)  # flat image: exercises the C1/C2 stabilisers
    b = b.clip(0, 255).astype(np.uint8)
    assert ssim_frames(a[None], b[None])[0] == pytest.approx(skimage_ssim(a, b), abs=1e-4)


def test_ssim_frames_is_per_frame() -> None:
    """Each frame is scored on its own (over more frames than one internal batch of 16)."""
    rng = np.random.default_rng(4)
    a = np.stack([structured(24, 32, k) for k in range(18)])
    b = (a.astype(np.int16) + rng.integers(-30, 31, a.shape) * (np.arange(18)[:, None, None, None] % 3)
         ).clip(0, 255).astype(np.uint8)
    ours = ssim_frames(a, b)
    assert ours.shape == (18,)
    ref = [skimage_ssim(a[i], b[i]) for i in range(18)]
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    assert ours[0] == pytest.approx(1.0)  # frame 0 is undistorted (factor 0)
