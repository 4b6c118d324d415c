"""ST-LPIPS (infotok_cli/eval/perceptual.py): weights, reference values, behaviour on real frames, chunking."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from infotok_cli.eval import perceptual
from infotok_cli.eval.perceptual import (
    ALEX_WEIGHTS,
    STLPIPS,
    PerceptualError,
    ReferenceScorer,
    frames_distance,
    load_stlpips,
    read_state,
    to_input,
)
from infotok_cli.io.video import iter_frames, probe_video

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@pytest.fixture(scope="module")
def alex() -> STLPIPS:
    return load_stlpips("alex")


@pytest.fixture(scope="module")
def real_frames() -> np.ndarray:
    """Six real 256x256 frames of a shipped sample video, decoded by PyAV; cropped to 128x128 to keep
    the tests quick (the metric runs at any size from its minimum up)."""
    src = SAMPLES / "busy.mp4"
    info = probe_video(src)
    frames = np.stack([f for _, f in zip(range(6), iter_frames(src, info))])
    return np.ascontiguousarray(frames[:, 64:192, 64:192])


def analytic_pair(kind: str, h: int = 48, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Two uint8 frames [1,H,W,3] built from closed-form patterns (no random generator, so the reference
    values below do not depend on a library version): a colour pattern and one distortion of it."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([128 + 100 * np.sin(x / 5 + y / 9), 128 + 90 * np.cos(y / 4 - x / 13),
                    64 + 150 * ((x // 8 + y // 8) % 2)], axis=-1)
    if kind == "shift":  # one pixel to the right (the shift the metric is built to tolerate)
        other = np.concatenate([img[:, :1], img[:, :-1]], axis=1)
    elif kind == "ripple":  # a fine, strong interference pattern on top
        other = img + 40 * np.sin(x * 1.3)[..., None] * np.cos(y * 0.7)[..., None]
    elif kind == "blur":  # a 3x3 box blur (edges replicated)
        p = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
        other = sum(p[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9
    else:
        raise ValueError(kind)
    to8 = lambda a: np.clip(np.rint(a), 0, 255).astype(np.uint8)[None]  # noqa: E731
    return to8(img), to8(other)


# The official implementation's numbers for these pairs: stlpips-pytorch 0.0.2,
# LPIPS(net="alex", variant="shift_tolerant"), run in a scratch environment (its torchvision import
# stubbed out; the shift-tolerant AlexNet path never uses torchvision), with inputs from to_input.
REFERENCE = {"shift": 0.00603266, "ripple": 0.14587519, "blur": 0.11822803}


# ----------------------------------------------------------------------------- weights


def test_shipped_weights_load_with_every_key(alex: STLPIPS) -> None:
    state = read_state(ALEX_WEIGHTS, perceptual.ALEX_SHA256)
    assert set(state) == set(alex.state_dict())  # no missing, no unexpected key
    for k, v in alex.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert sum(p.numel() for p in alex.parameters()) == 2_470_848  # AlexNet's five convolutions and the five heads
    assert not any(p.requires_grad for p in alex.parameters()) and not alex.training


def test_damaged_or_foreign_weights_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "stlpips-alex.safetensors"
    data = bytearray(ALEX_WEIGHTS.read_bytes())
    data[-5] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(PerceptualError, match="SHA-256 mismatch"):
        read_state(bad, perceptual.ALEX_SHA256)
    bad.write_bytes(b"not a weight file at all")
    with pytest.raises(PerceptualError, match="not a readable weight file"):
        load_stlpips("alex", path=bad)
    with pytest.raises(PerceptualError, match="not found"):
        load_stlpips("alex", path=tmp_path / "missing.safetensors")
    # the AlexNet tensors are not VGG weights: refused by name, not loaded partially
    alt = tmp_path / "alex.safetensors"
    shutil.copy(ALEX_WEIGHTS, alt)
    with pytest.raises(PerceptualError, match="not vgg ST-LPIPS weights"):
        load_stlpips("vgg", path=alt)
    with pytest.raises(PerceptualError, match="unknown ST-LPIPS network"):
        STLPIPS("squeeze")


def test_pickled_code_is_never_run(tmp_path: Path) -> None:
    """A .pth that would run code when unpickled is refused by weights_only loading."""

    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    pth = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, pth)
    with pytest.raises(PerceptualError, match="not a readable weight file"):
        read_state(pth)
    assert not (tmp_path / "pwned").exists()


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("kind", sorted(REFERENCE))
def test_matches_the_official_implementation(alex: STLPIPS, kind: str) -> None:
    a, b = analytic_pair(kind)
    got = float(frames_distance(alex, a, b)[0])
    assert got == pytest.approx(REFERENCE[kind], rel=1e-4, abs=1e-6)


def test_identical_frames_score_zero(alex: STLPIPS, real_frames: np.ndarray) -> None:
    assert np.all(frames_distance(alex, real_frames, real_frames.copy()) == 0)


def test_symmetric_and_positive(alex: STLPIPS, real_frames: np.ndarray) -> None:
    a, b = real_frames[:3], real_frames[3:]
    ab, ba = frames_distance(alex, a, b), frames_distance(alex, b, a)
    assert np.all(ab > 0)
    np.testing.assert_allclose(ab, ba, rtol=1e-5)


def _noisy(frames: np.ndarray, sigma: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(frames + rng.normal(0, sigma, frames.shape), 0, 255).astype(np.uint8)


def _blurred(frames: np.ndarray, sigma: float) -> np.ndarray:
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).double()
    r = int(3 * sigma) + 1
    g = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float64) ** 2 / (2 * sigma**2))
    g = (g / g.sum()).repeat(3, 1, 1, 1)  # [3,1,1,K]: one horizontal kernel per channel
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), g, groups=3)
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), g.transpose(2, 3), groups=3)
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("distort,strengths", [(_noisy, (2, 6, 15, 40)), (_blurred, (0.6, 1.2, 2.5, 5.0))],
                         ids=["noise", "blur"])
def test_rises_with_distortion_strength(alex: STLPIPS, real_frames: np.ndarray, distort, strengths) -> None:
    frames = real_frames[:3]
    scores = [frames_distance(alex, frames, distort(frames, s)) for s in strengths]
    for weaker, stronger in zip(scores, scores[1:]):
        assert np.all(stronger > weaker)  # on every frame, not just on average
    assert float(scores[0].mean()) < 0.1 and float(scores[-1].mean()) > 0.2


def test_shift_tolerant(alex: STLPIPS, real_frames: np.ndarray) -> None:
    """A one-pixel shift of a real frame (a large change in PSNR) scores far below noise of sigma 15."""
    shifted = np.ascontiguousarray(np.roll(real_frames, 1, axis=2))
    shift = frames_distance(alex, real_frames[:, :, 8:-8], shifted[:, :, 8:-8])
    noise = frames_distance(alex, real_frames, _noisy(real_frames, 15))
    assert float(shift.mean()) < 0.25 * float(noise.mean())


# ----------------------------------------------------------------------------- batching and inputs


def test_chunking_and_reference_cache_do_not_change_scores(alex: STLPIPS, real_frames: np.ndarray) -> None:
    dec = _noisy(real_frames, 10)
    whole = frames_distance(alex, real_frames, dec)
    one_at_a_time = frames_distance(alex, real_frames, dec, chunk_pixels=1)
    np.testing.assert_allclose(one_at_a_time, whole, rtol=1e-5, atol=1e-7)
    scorer = ReferenceScorer(alex, chunk_pixels=2 * 128 * 128)
    first = np.concatenate([scorer.score(0, real_frames[:4], dec[:4]), scorer.score(4, real_frames[4:], dec[4:])])
    assert scorer._used > 0  # the reference's features were kept ...
    again = scorer.score(0, real_frames[:4], dec[:4])  # ... and reused for the next reconstruction
    np.testing.assert_allclose(first, whole, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(again, whole[:4], rtol=1e-5, atol=1e-7)
    uncached = ReferenceScorer(alex, cache_bytes=0)
    np.testing.assert_allclose(uncached.score(0, real_frames, dec), whole, rtol=1e-5, atol=1e-7)
    assert uncached._used == 0


def test_input_range_and_shape_checks(alex: STLPIPS) -> None:
    x = to_input(np.array([[[[0, 255, 128]]]], dtype=np.uint8))
    assert x.shape == (1, 3, 1, 1) and x.dtype == torch.float32
    assert x.flatten().tolist() == pytest.approx([-1.0, 1.0, 128 / 127.5 - 1], abs=1e-6)
    small = np.zeros((1, alex.min_size - 1, 64, 3), np.uint8)
    with pytest.raises(PerceptualError, match="at least"):
        frames_distance(alex, small, small)
    ok = np.zeros((1, alex.min_size, alex.min_size, 3), np.uint8)
    assert frames_distance(alex, ok, ok).tolist() == [0.0]
    with pytest.raises(PerceptualError, match="videos"):
        frames_distance(alex, ok, np.zeros((2, alex.min_size, alex.min_size, 3), np.uint8))


def test_differentiable_for_training(alex: STLPIPS, real_frames: np.ndarray) -> None:
    x = to_input(real_frames[:2])
    y = to_input(_noisy(real_frames[:2], 20)).requires_grad_(True)
    alex(x, y).sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_vgg_needs_the_wheel_or_says_how_to_get_it() -> None:
    if perceptual.vgg_weights_path() is None:
        with pytest.raises(PerceptualError, match="pip install --no-deps stlpips-pytorch"):
            load_stlpips("vgg")
    else:
        model = load_stlpips("vgg")
        ok = np.full((1, 32, 32, 3), 100, np.uint8)
        assert frames_distance(model, ok, ok).tolist() == [0.0]
