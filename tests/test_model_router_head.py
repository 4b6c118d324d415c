"""The learned router head: its features, its storage inside model weights, its dithered score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL, tiny_model
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from infotok_cli.errors import WeightsError
from infotok_cli.model.router_head import (
    SUMMARY_FEATURES,
    HeadConfig,
    RateCurve,
    RouterHead,
    dither_amount,
    dithered_score,
    extract_features,
    load_head_file,
    pixel_stats,
    save_head_file,
)
from infotok_cli.model.store import add_router_head, load_model, save_weights, sha256_file


def random_head(seed: int = 0, **cfg) -> RouterHead:
    torch.manual_seed(seed)
    head = RouterHead(HeadConfig(**{"in_channels": TINY_LATENT + 11, **cfg}))
    for p in head.parameters():  # non-trivial outputs (the output layer would otherwise be near zero)
        p.data.normal_(0, 0.05)
    return head.eval()


TINY_LATENT = TINY_MODEL["latent_dim"]


@pytest.fixture(scope="module")
def plain_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("head") / "plain.safetensors"
    save_weights(path, tiny_model(seed=0), e_ref=0.1, e_ref_probe=0.12)
    return path


def test_features_reproduce_encode_exactly(plain_weights: Path) -> None:
    model = load_model(plain_weights).model
    x = torch.rand(1, 3, 9, 24, 40) * 2 - 1
    with torch.no_grad():
        features, codes, indices = extract_features(model, x)
        ref_codes, ref_indices = model.encode(x)
    assert torch.equal(codes, ref_codes) and torch.equal(indices, ref_indices)
    grid = tuple(indices.shape[1:])
    assert features["codes"].shape == (1, 6, *grid) and features["pix"].shape == (1, 4, *grid)
    assert features["zrms"].shape == (1, 1, *grid) and features["z"].shape[2:] == grid


def test_pixel_stats_see_motion_and_texture() -> None:
    still = torch.zeros(1, 3, 5, 16, 16)
    moving = still.clone()
    moving[:, :, 1:] = torch.rand(1, 3, 4, 16, 16)
    a, b = pixel_stats(still), pixel_stats(moving)
    assert a.shape == (1, 4, 2, 2, 2)
    assert (b[:, 2, 1] > a[:, 2, 1]).all()  # temporal change in latent frame 1
    assert (b[:, 0, 1] > a[:, 0, 1]).all() and (b[:, 1, 1] > a[:, 1, 1]).all()  # texture


@pytest.mark.parametrize("frames", [1, 5, 9])
def test_pixel_stats_match_their_definition(frames: int) -> None:
    """The vectorised statistics against a position-by-position reading of their docstring."""
    x = torch.rand(2, 3, frames, 16, 24, generator=torch.Generator().manual_seed(frames)) * 2 - 1
    got = pixel_stats(x)
    grey = x.mean(1)
    groups = [[0]] + [list(range(1 + 4 * g, 5 + 4 * g)) for g in range((frames - 1) // 4)]
    for b in range(2):
        for t, group in enumerate(groups):
            for i in range(2):
                for j in range(3):
                    block = grey[b, group, 8 * i:8 * i + 8, 8 * j:8 * j + 8]
                    dx = (grey[b, group, 8 * i:8 * i + 8, 8 * j + 1:8 * j + 9] - block[..., :8 - (j == 2)]).abs()
                    dy = (grey[b, group, 8 * i + 1:8 * i + 9, 8 * j:8 * j + 8] - block[:, :8 - (i == 1)]).abs()
                    change = (block - grey[b, [f - 1 for f in group], 8 * i:8 * i + 8, 8 * j:8 * j + 8]).abs()
                    gradient = (dx.sum() + dy.sum()) / block.numel()
                    want = [(block.std(unbiased=False) + 1e-3).log(), (gradient + 1e-3).log(),
                            ((change.mean() if t else 0) + torch.tensor(1e-3)).log(), block.mean()]
                    assert torch.allclose(got[b, :, t, i, j], torch.stack(want), atol=1e-5), (b, t, i, j)


def test_head_predicts_one_score_and_error_per_position() -> None:
    head = random_head(in_channels=11, width=8, dilations=(1, 2), features=("codes", "pix", "zrms"))
    feats = {"codes": torch.rand(1, 6, 3, 4, 5), "pix": torch.rand(1, 4, 3, 4, 5), "zrms": torch.rand(1, 1, 3, 4, 5)}
    score, error = head.predict(feats)
    assert score.shape == error.shape == (3, 4, 5) and score.dtype == torch.float32
    assert (error > 0).all() and torch.isfinite(score).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the output layer stays float32 under bf16
        bf_score, _ = head.predict(feats)
    assert bf_score.dtype == torch.float32 and bf_score.unique().numel() > 50
    assert head.flops_per_position() == 2 * sum(m.weight.numel() for m in head.modules()
                                                if isinstance(m, torch.nn.Conv3d))


def test_dither_follows_its_schedule_and_is_deterministic() -> None:
    schedule = ((0.25, 1.0), (0.5, 0.0))
    assert dither_amount(0.75, schedule) == dither_amount(0.5, schedule) == 0
    assert dither_amount(0.25, schedule) == dither_amount(0.1, schedule) == 1 and dither_amount(0.375, schedule) == 0.5
    assert dither_amount(0.1) > dither_amount(0.5) > dither_amount(0.9) > 0  # the default: more noise at low rates
    score = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(dithered_score(score, 0.5, schedule).argsort(), score.argsort())
    low = dithered_score(score, 0.25, schedule)
    assert not torch.equal(low.argsort(), score.argsort())
    assert torch.equal(low, dithered_score(score, 0.25, schedule))  # fixed seed: the same file every time


def test_head_rides_in_the_weights_and_keeps_the_token_identity(plain_weights: Path, tmp_path: Path) -> None:
    head = random_head()
    out = tmp_path / "with-head.safetensors"
    file_sha = add_router_head(plain_weights, head, out, {"recipe": "test"})
    plain, with_head = load_model(plain_weights), load_model(out)
    assert plain.router_head is None
    assert with_head.router_head is not None and file_sha == sha256_file(out) != sha256_file(plain_weights)
    assert with_head.sha256 == plain.sha256 == sha256_file(plain_weights)  # .itok files decode with either
    assert with_head.e_ref == plain.e_ref and with_head.e_ref_probe == plain.e_ref_probe
    for key, value in head.state_dict().items():
        assert torch.equal(with_head.router_head.state_dict()[key], value)
    # a second head replaces the first, and the identity still names the original file
    add_router_head(out, random_head(seed=1), out)
    assert load_model(out).sha256 == plain.sha256
    with safe_open(str(out), framework="pt") as f:
        assert sum(k.startswith("router_head.") for k in f.keys()) == len(head.state_dict())


def test_bad_head_or_identity_is_refused(plain_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.safetensors"
    add_router_head(plain_weights, random_head(), out)
    tensors = load_file(out)
    wrong_width = tmp_path / "wide.safetensors"
    add_router_head(plain_weights, random_head(in_channels=203), wrong_width)  # a head for another model
    with pytest.raises(WeightsError, match="router head"):
        load_model(wrong_width)
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    broken = tmp_path / "broken.safetensors"
    save_file({k: v for k, v in tensors.items() if k != "router_head.out.weight"}, broken, metadata=meta)
    with pytest.raises(WeightsError, match="router head"):
        load_model(broken)
    save_file(tensors, broken, metadata={**meta, "tokens_sha256": "../../etc"})
    with pytest.raises(WeightsError, match="tokens_sha256"):
        load_model(broken)
    save_file(tensors, broken, metadata={**meta, "router_head": json.dumps({"width": 0})})
    with pytest.raises(WeightsError, match="router head"):
        load_model(broken)


def test_head_file_round_trip(tmp_path: Path) -> None:
    head = random_head(width=16, dilations=(1, 2, 4, 8), recipe="rank")
    save_head_file(tmp_path / "h.safetensors", head, {"step": 7})
    loaded, summary = load_head_file(tmp_path / "h.safetensors")
    assert loaded.cfg == head.cfg and summary == {"step": 7}
    weights = tmp_path / "w.safetensors"
    save_weights(weights, tiny_model(seed=0), e_ref=0.1)
    with pytest.raises(ValueError, match="not a router head"):
        load_head_file(weights)


# ----------------------------------------------------------------------------- rate curve


def test_rate_curve_interpolates_and_never_falls_as_tokens_are_added() -> None:
    curve = RateCurve((0.25, 0.5, 0.75), 30.0, (6.0, 2.0, 2.5))  # a fitted drop that rises again: clipped
    assert curve.drops == (6.0, 2.5, 2.5)
    assert curve.psnr(1.0) == 30.0 and curve.psnr(0.25) == curve.psnr(0.0625) == 24.0
    assert curve.psnr(0.375) == pytest.approx(30 - (6.0 + 2.5) / 2)
    assert curve.psnr(0.875) == pytest.approx(30 - 2.5 / 2)
    rates = [i / 64 for i in range(4, 65)]
    assert all(curve.psnr(a) <= curve.psnr(b) for a, b in zip(rates, rates[1:]))


def test_head_with_a_rate_curve_rides_in_the_weights(plain_weights: Path, tmp_path: Path) -> None:
    head = random_head(curve_rates=(0.25, 0.5))
    n = len(SUMMARY_FEATURES)
    head.curve_weight.copy_(torch.tensor([[1.0] + [0.0] * (n - 1), [0.0] * n, [0.0] * n]))
    head.curve_bias.copy_(torch.tensor([30.0, 1.0, 0.0]))  # full 30 dB + summary[0]; drops e and 1 dB
    out = tmp_path / "curve.safetensors"
    add_router_head(plain_weights, head, out)
    loaded = load_model(out).router_head
    assert loaded.cfg.curve_rates == (0.25, 0.5)
    summary = torch.zeros(n)
    summary[0] = 2.0
    curve = loaded.rate_curve(summary)
    assert curve.full_psnr == pytest.approx(32.0) and curve.drops == pytest.approx((torch.e, 1.0))
    assert random_head().rate_curve(summary) is None  # a head without a curve (older weights)
    with pytest.raises(ValueError, match="unsupported router head config"):
        HeadConfig.from_json(json.dumps({"curve_rates": [0.5, 0.25]}))
    with pytest.raises(ValueError, match="unsupported router head config"):
        HeadConfig.from_json(json.dumps({"curve_rates": [0.5, 1.0]}))
