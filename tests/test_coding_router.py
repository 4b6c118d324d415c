"""The ELBO router against direct computations: per-position error, drop gain, top-k placement, keep
rates."""

from __future__ import annotations

import pytest
import torch

from infotok_cli.coding.rate import tokens_for_rate, video_rates, window_rate
from infotok_cli.coding.router import (
    PROBE_SEED,
    drop_gain,
    position_error,
    probe_errors,
    probe_half,
    random_mask,
    raster_prefix_mask,
    top_k_mask,
)
from infotok_cli.constants import MIN_RATE


def position_error_loop(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The definition, spelled out: latent frame 0 is frame 0 alone, latent frame t >= 1 is frames
    4t-3 .. 4t; each position is an 8x8 pixel block; the error is |x - y| averaged over channels, frames
    and pixels."""
    b, _, n, h, w = x.shape
    t_lat = 1 + (n - 1) // 4
    out = torch.zeros(b, t_lat, h // 8, w // 8, dtype=torch.float64)
    diff = (x.double() - y.double()).abs()
    for bi in range(b):
        for t in range(t_lat):
            frames = [0] if t == 0 else list(range(4 * t - 3, 4 * t + 1))
            for i in range(h // 8):
                for j in range(w // 8):
                    block = diff[bi, :, frames, 8 * i:8 * i + 8, 8 * j:8 * j + 8]
                    out[bi, t, i, j] = block.mean()
    return out


@pytest.mark.parametrize("frames", [1, 5, 9])
def test_position_error_matches_direct_loop(frames: int) -> None:
    g = torch.Generator().manual_seed(frames)
    x = torch.rand(2, 3, frames, 16, 24, generator=g) * 2 - 1
    y = torch.rand(2, 3, frames, 16, 24, generator=g) * 2 - 1
    got = position_error(x, y)
    assert got.shape == (2, 1 + (frames - 1) // 4, 2, 3)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), position_error_loop(x, y), rtol=1e-5, atol=1e-6)



@pytest.mark.parametrize("stride", [2, 4])
def test_position_error_of_strided_frames_averages_the_frames_given(stride: int) -> None:
    """With every s-th frame only, each position averages the frames of its latent group that are there."""
    g = torch.Generator().manual_seed(stride)
    x = torch.rand(1, 3, 13, 16, 16, generator=g) * 2 - 1
    y = torch.rand(1, 3, 13, 16, 16, generator=g) * 2 - 1
    got = position_error(x[:, :, ::stride], y[:, :, ::stride], stride)
    diff = (x - y).abs().mean(dim=1)  # [1, 13, 16, 16]
    groups = [[0]] + [[f for f in range(4 * t - 3, 4 * t + 1) if f % stride == 0] for t in range(1, 4)]
    want = torch.stack([diff[:, g].mean(dim=1) for g in groups], dim=1)
    want = torch.nn.functional.avg_pool2d(want, 8)
    assert got.shape == (1, 4, 2, 2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_position_error_localises_a_difference() -> None:
    """Changing one pixel of frame 6 only raises latent frame 2 (frames 5-8) at its 8x8 block."""
    x = torch.zeros(1, 3, 9, 16, 16)
    y = x.clone()
    y[0, :, 6, 10, 3] = 1.0
    err = position_error(x, y)[0]
    nonzero = err.nonzero().tolist()
    assert nonzero == [[2, 1, 0]]
    assert err[2, 1, 0].item() == pytest.approx(1.0 / (4 * 64))


def test_probe_half_is_half_and_fixed() -> None:
    a = probe_half((3, 4, 5))
    assert a.dtype == torch.bool and a.shape == (3, 4, 5) and int(a.sum()) == 30
    assert torch.equal(a, probe_half((3, 4, 5)))  # the codec's probe: the same every call
    assert torch.equal(a, probe_half((3, 4, 5), torch.Generator().manual_seed(PROBE_SEED)))
    assert not torch.equal(a, probe_half((3, 4, 5), torch.Generator().manual_seed(PROBE_SEED + 1)))


def test_drop_gain_against_a_decoder_that_halves_sent_blocks_and_loses_dropped_ones() -> None:
    """A 'decoder' that reproduces sent positions at half their value and zeroes dropped ones: each
    position's error is then its block's mean |x| when dropped and half that when sent, whatever the
    other positions do; each is measured in the probe decode that drops / sends it (two decodes in all)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 9, 16, 24, generator=g) * 2 - 1
    calls: list[torch.Tensor] = []

    def decode(keep: torch.Tensor) -> torch.Tensor:
        calls.append(keep.clone())
        pixels = keep.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)  # [B,t,H,W]
        frames = torch.cat([pixels[:, :1], pixels[:, 1:].repeat_interleave(4, dim=1)], dim=1)  # [B,T,H,W]
        return torch.where(frames[:, None], x / 2, torch.zeros_like(x))

    half = probe_half((3, 2, 3))
    dropped, sent = probe_errors(x, decode, half)
    block = position_error(x, torch.zeros_like(x))
    torch.testing.assert_close(dropped, block)
    torch.testing.assert_close(sent, block / 2)
    assert len(calls) == 2
    assert torch.equal(calls[0], half.expand(2, -1, -1, -1)) and torch.equal(calls[1], ~calls[0])
    torch.testing.assert_close(drop_gain(x, decode, half), block / 2)  # probe-gain: dropped - sent
    full_error = torch.full((2, 3, 2, 3), 0.01)
    torch.testing.assert_close(drop_gain(x, decode, half, full_error), block - 0.01)  # drop-gain
    assert len(calls) == 6


@pytest.mark.parametrize("k", [0, 1, 7, 23, 24, 30])
def test_top_k_mask_keeps_exactly_k_largest(k: int) -> None:
    g = torch.Generator().manual_seed(k)
    error = torch.rand(2, 3, 4, generator=g)
    mask = top_k_mask(error, k)
    assert mask.dtype == torch.bool and mask.shape == error.shape
    assert int(mask.sum()) == min(k, error.numel())
    if 0 < k < error.numel():
        assert error[mask].min() > error[~mask].max()


def test_top_k_mask_breaks_ties_in_raster_order() -> None:
    error = torch.zeros(2, 2, 3)  # all equal: the first k positions in (t, h, w) raster order win
    mask = top_k_mask(error, 5)
    assert mask.reshape(-1).tolist() == [True] * 5 + [False] * 7
    # Mixed: three clear winners (0.9, 0.8, 0.5), then four tied 0.3s compete for the last two slots.
    error = torch.tensor([0.1, 0.5, 0.3, 0.9, 0.3, 0.3, 0.8, 0.3, 0.0]).reshape(1, 3, 3)
    kept = top_k_mask(error, 5).reshape(-1).nonzero().flatten().tolist()
    assert kept == [1, 2, 3, 4, 6]  # the first two 0.3s in raster order win (2 and 4, not 5 and 7)


def test_tokens_for_rate_bounds() -> None:
    assert tokens_for_rate(0.5, 100) == 50
    assert tokens_for_rate(0.3, 10) == 3
    assert tokens_for_rate(1e-6, 100) == 1  # never an empty window
    assert tokens_for_rate(1.0, 7) == 7
    assert tokens_for_rate(2.0, 7) == 7


def test_window_rate_per_strategy_and_clipping() -> None:
    assert window_rate("window", 0.3, 5.0, 0.1) == 0.3  # ignores the error
    assert window_rate("global", 0.5, 0.2, 0.4) == pytest.approx(0.25)
    assert window_rate("video", 0.5, 0.3, 0.2) == pytest.approx(0.75)
    assert window_rate("global", 0.5, 10.0, 0.1) == 1.0  # clipped above
    assert window_rate("global", 0.5, 1e-4, 0.1) == MIN_RATE  # clipped below
    assert window_rate("global", 0.5, 0.3, 0.0) == 0.5  # no reference: fall back to beta
    with pytest.raises(ValueError):
        window_rate("adaptive", 0.5, 0.1, 0.1)
    for beta in (0.0, 0.05, 1.01):
        with pytest.raises(ValueError):
            window_rate("window", beta, 0.1, 0.1)


@pytest.mark.parametrize(("beta", "errors"), [
    (0.5, [0.1, 0.2, 0.3, 0.4]),
    (0.25, [0.01, 0.01, 5.0]),  # one window saturates at 1, the rest share what is left
    (0.9, [1.0, 0.001, 1.0, 1.0]),  # one window stays at the floor of 1/16
    (0.0625, [0.3, 0.1]),
])
def test_video_rates_hit_the_target(beta: float, errors: list[float]) -> None:
    capacities = [120] * (len(errors) - 1) + [96]  # a short last window
    rates = video_rates(beta, errors, capacities)
    assert all(MIN_RATE <= r <= 1 for r in rates)
    kept = sum(r * c for r, c in zip(rates, capacities, strict=True))
    assert kept == pytest.approx(beta * sum(capacities), rel=1e-6)
    # Unclipped windows get rates proportional to their error.
    free = [(r, e) for r, e in zip(rates, errors, strict=True) if MIN_RATE < r < 1]
    for r, e in free:
        assert r / e == pytest.approx(free[0][0] / free[0][1], rel=1e-6)


def test_random_mask_exactly_k_and_reproducible() -> None:
    for k in (0, 1, 17, 60):
        mask = random_mask((3, 4, 5), k, torch.Generator().manual_seed(3))
        assert mask.shape == (3, 4, 5) and int(mask.sum()) == k
    a = random_mask((3, 4, 5), 20, torch.Generator().manual_seed(7))
    b = random_mask((3, 4, 5), 20, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


@pytest.mark.parametrize("k", [0, 1, 5, 13, 36])
def test_raster_prefix_mask_exactly_k_spread_over_frames(k: int) -> None:
    t, h, w = 3, 3, 4
    mask = raster_prefix_mask((t, h, w), k)
    assert int(mask.sum()) == k
    per_frame = mask.reshape(t, -1).sum(dim=1).tolist()
    assert max(per_frame) - min(per_frame) <= 1
    for i, n in enumerate(per_frame):  # each latent frame keeps a raster prefix
        assert mask[i].reshape(-1).tolist() == [True] * n + [False] * (h * w - n)
