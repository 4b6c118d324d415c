"""The model's building blocks: FSQ quantisation, its codebook-use penalties, and the token geometry."""

from __future__ import annotations

import math

import pytest
import torch

from infotok_cli.model import FSQ, InfoTok, ModelConfig, grow
from infotok_cli.model import layers as model_module

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



@pytest.mark.parametrize("stride", [2, 4])
def test_decode_with_a_frame_stride_gives_those_frames_of_the_full_decode(stride: int) -> None:
    torch.manual_seed(0)
    model = InfoTok(TINY).eval()
    for p in model.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    x = torch.rand(1, 3, 13, 16, 24) * 2 - 1
    with torch.no_grad():
        codes, _ = model.encode(x)
        keep = torch.rand(codes.shape[:-1]) < 0.5
        full, strided = model.decode(codes, keep), model.decode(codes, keep, stride)
    assert strided.shape == (1, 3, 1 + 12 // stride, 16, 24)
    torch.testing.assert_close(strided, full[:, :, ::stride], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        model.decode(codes, keep, 3)


def test_inference_preparation_does_not_change_bf16_results() -> None:
    """for_inference_ stores weights in the autocast dtype (what autocast casts them to anyway) and the
    2-D convolutions channels-last: under autocast the results match the unprepared model's up to the
    rounding of a different kernel order."""
    torch.manual_seed(0)
    model = InfoTok(TINY).eval()
    for p in model.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    prepared = InfoTok(TINY)
    prepared.load_state_dict(model.state_dict())
    prepared.for_inference_(torch.bfloat16)
    assert not prepared.training
    assert prepared.decoder.head.weight.dtype == torch.bfloat16
    assert prepared.decoder.head.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = model.pre_codes(x).float(), prepared.pre_codes(x).float()
        assert (a - b).abs().max().item() < 0.05 * a.abs().max().item()
        codes, _ = model.encode(x)
        ya, yb = model.decode(codes).float(), prepared.decode(codes).float()
    assert (ya - yb).abs().mean().item() < 0.01


def test_attention_mask_is_none_only_when_it_hides_nothing() -> None:
    both_ways = InfoTok(ModelConfig.from_dict({**TINY.to_dict(), "causal_attention": False})).compressor
    causal = InfoTok(ModelConfig.from_dict({**TINY.to_dict(), "causal_attention": True})).compressor
    win = both_ways.win
    assert both_ways.attention_mask(3, win, win, win, win, 1, "cpu") is None
    padded = both_ways.attention_mask(3, win - 1, win, win, win, 1, "cpu")  # a padded row of keys
    assert padded is not None and not bool(padded.all())
    assert causal.attention_mask(3, win, win, win, win, 1, "cpu") is not None
    # attending both ways, only keys are hidden: one row per window, broadcast over the queries
    assert padded.shape == (1, 1, 1, 3 * win * win)
    assert causal.attention_mask(3, win, win, win, win, 1, "cpu").shape == (1, 1, 3 * win * win, 3 * win * win)


@pytest.mark.parametrize("causal", [True, False])
def test_transformer_in_pieces_matches_one_piece(causal: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # Large windows run attention a few spatial windows at a time and the MLP a few latent frames at a
    # time (bounded memory); the result must not depend on it. A padded grid checks the mask's pieces.
    torch.manual_seed(0)
    cfg = ModelConfig.from_dict({**TINY.to_dict(), "causal_attention": causal})
    transformer = InfoTok(cfg).compressor.eval()
    for p in transformer.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    win = cfg.attn_window
    x = torch.randn(2, 3, 2 * win - 3, 3 * win, cfg.width)
    with torch.no_grad():
        whole = transformer(x)
        monkeypatch.setattr(model_module, "TOKENS_PER_PIECE", 1)  # every window and frame a piece
        pieces = transformer(x)
    assert torch.allclose(whole, pieces, atol=1e-5), (whole - pieces).abs().max()


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
