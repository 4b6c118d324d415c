"""Spatial tiling (coding/tiling.py): the tile plan, tiled against whole-frame passes for every placement,
the tiles a file records, infotok-m at 1280x720 and InfoTok-Flex beyond its rotary table."""

from __future__ import annotations

import dataclasses
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synth_frame
from test_coding_tokenizer import flex_fixture_model, with_head

from infotok_cli.coding.compress import compress_video
from infotok_cli.coding.decompress import decompress_video
from infotok_cli.coding.geometry import padded_size
from infotok_cli.coding.metrics import psnr_video
from infotok_cli.coding.tiling import MAX_TILE, TileSpec, plan_tiles, split
from infotok_cli.coding.tokenizer import Tokenizer
from infotok_cli.errors import CodecError
from infotok_cli.format.reader import ItokReader
from infotok_cli.io.video import iter_frames

WHOLE = MAX_TILE  # a tile no test frame exceeds


def clip(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([synth_frame("moving", k, h, w, rng) for k in range(n)])


def seam_mad(frames: np.ndarray, columns: list[int]) -> tuple[float, float]:
    """(mean |difference| between neighbouring columns across the given borders, across all others)."""
    d = np.abs(np.diff(frames.astype(np.float32), axis=2)).mean(axis=(0, 1, 3))  # d[x-1]: columns x-1 | x
    at = [x - 1 for x in columns]
    return float(d[at].mean()), float(np.delete(d, at).mean())


@contextmanager
def counting(tok: Tokenizer):
    """Count the tokenizer's stage entries (one per tile and pass when tiled)."""
    counts: Counter[str] = Counter()

    @contextmanager
    def stage(name: str):
        counts[name] += 1
        yield

    tok.tracer = stage
    try:
        yield counts
    finally:
        tok.tracer = None


def test_split_and_plan_cover_the_frame_once() -> None:
    assert split(1088, 768, 64) == [(0, 512), (512, 1088)]
    assert split(1920, 768, 64) == [(0, 640), (640, 1280), (1280, 1920)]
    spec = TileSpec(768, 128, 64)
    assert plan_tiles(720, 768, spec) is None  # fits: coded whole
    tiles = plan_tiles(1088, 1920, spec)
    assert tiles is not None and len(tiles) == 6
    cover = np.zeros((1088, 1920), dtype=int)
    for tile in tiles:
        top, bottom, left, right = tile.core
        assert top % 64 == 0 and left % 64 == 0 and bottom - top <= 768 and right - left <= 768
        cover[top:bottom, left:right] += 1
        assert tile.crop == (max(0, top - 128), min(1088, bottom + 128), max(0, left - 128), min(1920, right + 128))
    assert (cover == 1).all()
    with pytest.raises(CodecError, match="multiples of 64"):
        TileSpec(700, 128, 64)
    with pytest.raises(CodecError, match="largest input"):
        TileSpec(512, 192, 8, limit=768)


@pytest.mark.parametrize("placement", ["error", "probe-gain", "drop-gain", "predicted"])
def test_tiled_analysis_and_decode_match_the_whole_frame(tokenizer: Tokenizer, placement: str) -> None:
    """A halo of 128 pixels covers the tiny model's receptive field: the same tokens, scores, errors and
    frames as one whole-frame pass, up to floating-point noise, for every placement."""
    loaded = with_head(tokenizer.loaded) if placement == "predicted" else tokenizer.loaded
    tok = Tokenizer(loaded, "cpu", placement=placement, precision="fp32")
    frames = clip(9, 196, 330)  # padded to 200x336: 2 x 3 tiles of 128-pixel cores
    hw = padded_size(196, 330)
    tok.tile_spec = tok.tiles(WHOLE, 0)
    whole = tok.analyse(frames, 0, hw, measure=True)
    tok.tile_spec = tok.tiles(128, 128)
    assert len(tok.tile_plan(*hw)) == 6
    with counting(tok) as counts:
        tiled = tok.analyse(frames, 0, hw, measure=True)
    assert counts["encoder"] == 6 and counts["full-rate decode"] == 6
    assert (tiled.indices == whole.indices).float().mean() >= 0.999
    torch.testing.assert_close(tiled.error, whole.error, rtol=1e-3, atol=1e-5)
    if whole.score is not None:
        torch.testing.assert_close(tiled.score, whole.score, rtol=1e-3, atol=1e-4)
    if whole.summary is not None:
        torch.testing.assert_close(tiled.summary, whole.summary, rtol=1e-4, atol=1e-5)
    assert tiled.full_psnr == pytest.approx(whole.full_psnr, abs=0.01)
    keep = tok.choose(whole, whole.indices.numel() // 2)
    decoded = tok.reconstruct_frames(whole.indices, keep, 9, 196, 330)
    tok.tile_spec = tok.tiles(WHOLE, 0)
    reference = tok.reconstruct_frames(whole.indices, keep, 9, 196, 330)
    assert np.abs(decoded.astype(int) - reference.astype(int)).max() <= 1


def test_a_tiled_file_records_its_tiles_and_decodes_in_them(tmp_path: Path, tokenizer: Tokenizer,
                                                             make_video) -> None:
    src = make_video(330, 196, 9)
    tok = Tokenizer(tokenizer.loaded, "cpu", precision="fp32")
    tok.tile_spec = tok.tiles(128, 128)
    itok = tmp_path / "tiled.itok"
    compress_video(src, itok, tok, window=9, overlap=0)
    with ItokReader(itok) as reader:
        assert reader.header.extra["tiles"] == {"size": 128, "halo": 128}
    receiver = Tokenizer(tokenizer.loaded, "cpu", precision="fp32")  # its own default would code whole
    assert receiver.tile_plan(200, 336) is None
    with counting(receiver) as counts:
        decompress_video(itok, tmp_path / "tiled.mkv", receiver, lossless=True)
    assert counts["decoder"] == 6
    whole = tmp_path / "whole.itok"
    compress_video(src, whole, receiver, window=9, overlap=0)
    with ItokReader(whole) as reader:
        assert "tiles" not in reader.header.extra
    decompress_video(whole, tmp_path / "whole.mkv", receiver, lossless=True)
    a, b = (np.stack(list(iter_frames(tmp_path / name))) for name in ("tiled.mkv", "whole.mkv"))
    assert abs(psnr_video(a, b)) > 40


def test_infotok_m_in_tiles_at_720p_matches_the_whole_frame() -> None:
    """The shipped model at 1280x720 (two 640-pixel tiles with the default 128-pixel halo) against one
    whole-frame pass: tokens agree on at least 99% of positions, PSNR within 0.05 dB at keep 0.5, and the
    tile border is no seam: the columns across it differ, relative to the other columns, no more than in
    the whole-frame reconstruction (the clip's stripes make some columns differ more than others anyway).
    One frame keeps the test short; the tiny model's tests above cover longer windows."""
    tok = Tokenizer("infotok-m", "cpu", precision="fp32")
    frames = clip(1, 720, 1280)
    hw = (720, 1280)
    tiles = tok.tile_plan(*hw)
    assert tiles is not None and [t.core for t in tiles] == [(0, 720, 0, 640), (0, 720, 640, 1280)]
    tiled = tok.analyse(frames, 0, hw)
    keep = tok.choose(tiled, tiled.indices.numel() // 2)
    decoded = tok.reconstruct_frames(tiled.indices, keep, 1, 720, 1280)
    tok.tile_spec = tok.tiles(WHOLE, 0)
    whole = tok.analyse(frames, 0, hw)
    whole_keep = tok.choose(whole, whole.indices.numel() // 2)
    reference = tok.reconstruct_frames(whole.indices, whole_keep, 1, 720, 1280)
    same = (tiled.indices == whole.indices) & (keep == whole_keep)
    assert same.float().mean() >= 0.99
    assert psnr_video(decoded, frames) == pytest.approx(psnr_video(reference, frames), abs=0.05)
    across, elsewhere = seam_mad(decoded, [640])
    whole_across, whole_elsewhere = seam_mad(reference, [640])
    assert across / elsewhere <= whole_across / whole_elsewhere + 0.01


def test_infotok_flex_codes_frames_beyond_its_rotary_table_in_tiles() -> None:
    """The fixture's InfoTok-Flex refuses a latent grid wider than 96 positions; in tiles whose crops fit
    the table it codes a 1040-pixel-wide clip, and frames that fit are still coded whole."""
    tok = Tokenizer(flex_fixture_model(), "cpu", precision="fp32")
    assert tok.tile_spec == TileSpec(512, 128, 8, 768)
    assert tok.tile_plan(768, 768) is None and tok.tile_plan(64, 776) is not None
    frames = clip(5, 64, 1040)
    with pytest.raises(ValueError, match="rotary table"):
        with torch.no_grad():
            tok.model.encode(torch.zeros(1, 3, 5, 64, 1040))
    a = tok.analyse(frames, 0, (64, 1040))
    assert a.indices.shape == (2, 8, 130) and a.error.shape == (2, 8, 130)
    keep = tok.choose(a, tok.token_count(0.5, a.indices.numel()))
    decoded = tok.reconstruct_frames(a.indices, keep, 5, 64, 1040)
    assert decoded.shape == (5, 64, 1040, 3) and psnr_video(decoded, frames) > 5


def test_recorded_tiles_are_checked(tokenizer: Tokenizer) -> None:
    header = dataclasses.make_dataclass("H", ["extra"])
    assert tokenizer.recorded_tiles(header({})) == tokenizer.tile_spec
    assert tokenizer.recorded_tiles(header({"tiles": {"size": 128, "halo": 64}})) == TileSpec(128, 64, 64)
    for bad in ({"size": "128", "halo": 64}, {"size": 100, "halo": 64}, {"size": 1 << 20, "halo": 0}):
        with pytest.raises(CodecError):
            tokenizer.recorded_tiles(header({"tiles": bad}))
