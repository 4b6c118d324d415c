"""The model's building blocks: FSQ quantisation, its codebook-use penalties, and the token geometry."""

from __future__ import annotations

import math

import pytest
import torch

from infotok_cli.model import FSQ, InfoTok, ModelConfig, grow

LEVELS = (8, 8, 8, 5, 5, 5)


def test_fsq_indices_round_trip_to_codes() -> None:
    fsq = FSQ(LEVELS)
    z = torch.randn(500, len(LEVELS)) * 3
    codes, indices = fsq(z)
    assert indices.min() >= 0 and indices.max() < fsq.codebook_size == math.prod(LEVELS)
    assert torch.allclose(fsq.indices_to_codes(indices), codes)
    assert codes.abs().max() <= 1


def test_fsq_usage_penalty_is_low_when_levels_spread_and_high_when_collapsed() -> None:
    fsq = FSQ(LEVELS)
    spread = torch.atanh(torch.linspace(-0.999, 0.999, 4096))[:, None].repeat(1, len(LEVELS))
    collapsed = torch.full((4096, len(LEVELS)), 5.0)  # every digit saturated at its top level
    low, high = fsq.usage_penalty(spread).item(), fsq.usage_penalty(collapsed).item()
    assert 0 <= low < 0.1 and high > 0.9, (low, high)


def test_fsq_usage_penalty_gradient_spreads_a_crowded_digit() -> None:
    fsq = FSQ(LEVELS)
    z = (torch.randn(2048, len(LEVELS)) * 0.05).requires_grad_(True)  # all near one level
    before = fsq.usage_penalty(z)
    opt = torch.optim.SGD([z], lr=5.0)
    for _ in range(100):
        opt.zero_grad()
        fsq.usage_penalty(z).backward()
        opt.step()
    assert fsq.usage_penalty(z).item() < before.item() - 0.1
    _, indices = fsq(z.detach())
    assert indices.unique().numel() > 1


def test_fsq_range_penalty_zero_inside_the_centred_range() -> None:
    fsq = FSQ(LEVELS)
    centred = torch.zeros(64, len(LEVELS)) - fsq._shift()  # tanh argument exactly 0
    assert fsq.range_penalty(centred).item() == pytest.approx(0, abs=1e-6)
    assert fsq.range_penalty(centred + 4).item() > 1


TINY = ModelConfig(channels_quarter=8, channels_eighth=8, latent_dim=16, width=16, heads=2, compressor_layers=1,
                   decompressor_layers=1)


def test_model_token_geometry() -> None:
    model = InfoTok(TINY).eval()
    x = torch.rand(1, 3, 9, 32, 48) * 2 - 1
    with torch.no_grad():
        codes, indices = model.encode(x)
        y = model.decode(codes)
    assert indices.shape == (1, 3, 4, 6)  # 1 + (9 - 1) / 4 latent frames, 32/8 x 48/8 positions
    assert y.shape == x.shape


def test_grow_adds_identity_blocks_and_rejects_other_changes() -> None:
    torch.manual_seed(0)
    model = InfoTok(TINY).eval()
    for p in model.parameters():  # as if trained: the zero-initialised branches are non-zero
        p.data.add_(torch.randn_like(p) * 0.05)
    wanted = ModelConfig.from_dict({**TINY.to_dict(), "decompressor_layers": 3, "decoder_blocks_quarter": 2,
                                    "decoder_blocks_eighth": TINY.blocks_eighth + 1})
    grown = grow(model, wanted).eval()
    assert len(grown.decompressor.blocks) == 3 and grown.cfg == wanted
    assert len(grown.decoder.quarter) == 2 and len(grown.decoder.eighth) == TINY.blocks_eighth + 1
    assert len(grown.encoder.quarter) == TINY.blocks_quarter  # the encoder keeps its depth
    x = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        codes, indices = model.encode(x)
        keep = torch.rand(indices.shape) < 0.5
        codes2, indices2 = grown.encode(x)
        assert torch.equal(indices, indices2)
        assert torch.allclose(grown.decode(codes2, keep), model.decode(codes, keep), atol=1e-6)
    for bad in ({"decompressor_layers": 0}, {"width": 32}, {"decoder_blocks_eighth": 0}):
        with pytest.raises(ValueError, match="only the depths"):
            grow(model, ModelConfig.from_dict({**TINY.to_dict(), **bad}))
    bidirectional = grow(model, ModelConfig.from_dict({**TINY.to_dict(), "causal_attention": False}))
    with pytest.raises(ValueError, match="only the depths"):  # and not back
        grow(bidirectional, TINY)


def test_causal_attention_hides_later_frames_and_bidirectional_does_not() -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    later_changed = x.clone()
    later_changed[:, :, 5:] = -later_changed[:, :, 5:]  # only the last latent frame differs
    for causal in (True, False):
        model = InfoTok(ModelConfig.from_dict({**TINY.to_dict(), "causal_attention": causal})).eval()
        for p in model.parameters():
            p.data.add_(torch.randn_like(p) * 0.05)
        with torch.no_grad():
            first, second = (model.pre_codes(v)[:, 0] for v in (x, later_changed))
        assert torch.allclose(first, second, atol=1e-6) == causal


@pytest.mark.parametrize("bad", [{"width": 10**9}, {"decoder_blocks_eighth": -1}, {"heads": 2.5},
                                 {"causal_attention": "no"}])
def test_config_from_dict_bounds_every_size(bad: dict) -> None:
    with pytest.raises(ValueError, match="model config"):
        ModelConfig.from_dict({**TINY.to_dict(), **bad})
