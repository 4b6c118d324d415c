"""The token-mask visualisation, on real files: videos written with VideoWriter, .itok files written by
compress_video (or, where the mask must be known, by ItokWriter directly), decoded by a tiny model."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from infotok_cli.coding.compress import compress_video
from infotok_cli.coding.geometry import padded_length, plan_windows
from infotok_cli.coding.tokenizer import Tokenizer
from infotok_cli.errors import CodecError, VideoError
from infotok_cli.format.header import Header
from infotok_cli.format.reader import ItokReader, read_header_and_index
from infotok_cli.io.files import itok_writer
from infotok_cli.io.video import iter_frames, probe_video
from infotok_cli.io.video_writer import VideoWriter
from infotok_cli.model import InfoTok, ModelConfig
from infotok_cli.model.store import load_model, save_weights
from infotok_cli.report import stats
from infotok_cli.report.visualize import (
    BAR_FILL,
    PANEL_NAMES,
    compose_frame,
    iter_frame_masks,
    layout_for,
    mask_to_pixels,
    visualize,
)

ROOT = Path(__file__).resolve().parent.parent
W, H, N = 64, 32, 9
FPS = Fraction(24)
WINDOW, OVERLAP = 5, 1  # two windows, frames 0-4 and 4-8: frame 4 is shared, so ownership matters


def scene(n: int = N, h: int = H, w: int = W) -> list[np.ndarray]:
    """Left half: a fixed texture. Right half: a textured square moving right and down."""
    rng = np.random.default_rng(7)
    background = rng.integers(40, 200, (h, w, 3), dtype=np.uint8)
    sprite = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
    frames = []
    for k in range(n):
        f = background.copy()
        x, y = w // 2 + 2 + (2 * k) % (w // 2 - 12), (k * 3) % (h - 10)
        f[y : y + 10, x : x + 10] = sprite
        frames.append(f)
    return frames


def write_video(path: Path, frames: list[np.ndarray], fps: Fraction = FPS) -> Path:
    with VideoWriter(path, frames[0].shape[1], frames[0].shape[0], fps) as out:
        for f in frames:
            out.write(f)
    return path


@pytest.fixture(scope="module")
def viz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("viz")


@pytest.fixture(scope="module")
def viz_tok(viz_dir: Path) -> Tokenizer:
    """A tiny random model, saved and loaded the way shipped weights are."""
    torch.manual_seed(0)
    cfg = ModelConfig(name="viz-tiny", channels_quarter=8, channels_eighth=8, blocks_quarter=1,
                      blocks_eighth=1, latent_dim=16, width=16, heads=2, compressor_layers=1,
                      decompressor_layers=1, attn_window=4)
    path = viz_dir / "tiny.safetensors"
    save_weights(path, InfoTok(cfg), e_ref=0.05)
    return Tokenizer(load_model(path), "cpu")


@pytest.fixture(scope="module")
def viz_video(viz_dir: Path) -> Path:
    return write_video(viz_dir / "scene.mp4", scene())


@pytest.fixture(scope="module")
def viz_compressed(viz_dir: Path, viz_video: Path, viz_tok: Tokenizer) -> Path:
    out = viz_dir / "scene.itok"
    compress_video(viz_video, out, viz_tok, strategy="window", beta=0.5, window=WINDOW, overlap=OVERLAP)
    return out


def write_masked(path: Path, header: Header, masks: list[np.ndarray]) -> Path:
    """An .itok file with the given keep mask per window (and arbitrary tokens at the kept positions)."""
    rng = np.random.default_rng(1)
    with itok_writer(path, header, overwrite=True) as w:
        for (start, count), mask in zip(plan_windows(header.num_frames, header.window, header.overlap), masks,
                                        strict=True):
            tokens = rng.integers(0, 64000, int(mask.sum()), dtype=np.uint16)
            w.write_window(start, count, padded_length(count) - count, mask, tokens)
    return path


def right_half_masks(header: Header) -> list[np.ndarray]:
    """Right half kept everywhere, except in window 1 (frames 4-8), where latent frame 0 keeps nothing
    (it covers frame 4, which window 0 owns, so it must never show) and latent frame 1 (frames 5-8)
    keeps everything."""
    lh, lw = header.latent_hw
    masks = []
    for start, count in plan_windows(header.num_frames, header.window, header.overlap):
        m = np.zeros((1 + (padded_length(count) - 1) // 4, lh, lw), dtype=bool)
        m[:, :, lw // 2 :] = True
        if start > 0:
            m[0], m[1] = False, True
        masks.append(m)
    return masks


@pytest.fixture(scope="module")
def viz_masked(viz_dir: Path, viz_compressed: Path) -> Path:
    header = read_header_and_index(viz_compressed)[0]  # carries the model's weights_sha256
    return write_masked(viz_dir / "masked.itok", header, right_half_masks(header))


def panel(frame: np.ndarray, name: str, with_original: bool, h: int = H, w: int = W) -> np.ndarray:
    lay = layout_for(h, w, with_original)
    x, y = lay.x_of(name), lay.frame_y
    return frame[y : y + h, x : x + w]


def bar_fraction(frame: np.ndarray, with_original: bool, h: int = H, w: int = W) -> float:
    """Filled share of the bar, read back from the pixels of its centre column."""
    x0, y0, x1, y1 = layout_for(h, w, with_original).bar_box()
    column = frame[y0:y1, (x0 + x1) // 2].astype(int)
    filled = np.abs(column - np.array(BAR_FILL)).max(axis=1) < 40
    return filled.sum() / (y1 - y0)


# ----------------------------------------------------------------------------- pure functions


def test_mask_to_pixels_upscales_nearest_and_crops() -> None:
    mask = np.array([[True, False, True], [False, True, False]])
    px = mask_to_pixels(mask, 13, 21)  # latent grid covers 16x24: crop to the frame
    assert px.shape == (13, 21) and px.dtype == bool
    assert px[:8, :8].all() and not px[:8, 8:16].any() and px[:8, 16:].all()
    assert not px[8:, :8].any() and px[8:, 8:16].all() and not px[8:, 16:].any()
    with pytest.raises(ValueError):
        mask_to_pixels(mask, 17, 21)  # two latent rows cannot cover 17 pixel rows


def test_compose_frame_layout_and_content() -> None:
    recon = np.full((H, W, 3), 200, np.uint8)
    original = np.full((H, W, 3), 100, np.uint8)
    mask = np.zeros((H // 8, W // 8), bool)
    mask[:, W // 16 :] = True
    for with_original in (False, True):
        out = compose_frame(original if with_original else None, recon, mask, 0.5)
        lay = layout_for(H, W, with_original)
        assert out.shape == (lay.out_height, lay.out_width, 3) and out.dtype == np.uint8
        assert [p[0] for p in lay.panels] == list(PANEL_NAMES[0 if with_original else 1 :])
        m = panel(out, "tokens kept", with_original)
        assert (m[:, W // 2 :] == 255).all() and (m[:, : W // 2] == 0).all()
        rec = panel(out, "reconstruction + mask", with_original)
        assert (rec[:, W // 2 :] == 200).all()  # kept: untouched
        dropped = rec[:, : W // 2].astype(int)
        assert (dropped[..., 0] < 90).all() and (dropped[..., 2] > dropped[..., 0]).all()  # dimmed, blue
        assert abs(bar_fraction(out, with_original) - 0.5) < 0.05
        if with_original:
            assert (panel(out, "original", True) == 100).all()
    # the pixel mask and the latent mask give the same picture; fractions are clipped to [0, 1]
    same = compose_frame(None, recon, mask_to_pixels(mask, H, W), 0.5)
    np.testing.assert_array_equal(same, compose_frame(None, recon, mask, 0.5))
    assert bar_fraction(compose_frame(None, recon, mask, 1.7), False) == pytest.approx(1.0, abs=0.02)
    assert bar_fraction(compose_frame(None, recon, mask, 0.0), False) == 0.0
    no_caption = compose_frame(None, recon, mask, 0.5, caption=False)
    assert no_caption.shape[0] < out.shape[0] and no_caption.shape[1] == lay.out_width - W - lay.margin
    with pytest.raises(ValueError):
        compose_frame(original[:, :10], recon, mask, 0.5)


def test_odd_and_large_sizes_compose() -> None:
    for h, w in ((17, 33), (720, 1280)):
        mask = np.ones((-(-h // 8), -(-w // 8)), bool)
        out = compose_frame(None, np.zeros((h, w, 3), np.uint8), mask, 0.25)
        lay = layout_for(h, w, False)
        assert out.shape == (lay.out_height, lay.out_width, 3)
        assert (panel(out, "tokens kept", False, h, w) == 255).all()
        assert abs(bar_fraction(out, False, h, w) - 0.25) < 0.05


def test_frame_masks_follow_the_inspect_owner_rule(viz_compressed: Path, viz_masked: Path) -> None:
    for path in (viz_compressed, viz_masked):
        rows = stats.inspect_file(path).frames
        with ItokReader(path) as reader:
            fractions = [f for _, f in iter_frame_masks(reader)]
        assert fractions == pytest.approx([r["keep_fraction"] for r in rows])
    assert fractions == pytest.approx([0.5] * 5 + [1.0] * 4)  # frame 4 is window 0's, not window 1's


# ----------------------------------------------------------------------------- whole files


def test_masked_file_shows_tokens_on_the_moving_half(viz_dir: Path, viz_masked: Path, viz_tok: Tokenizer,
                                                      viz_video: Path) -> None:
    out = viz_dir / "masked.mp4"
    result = visualize(viz_masked, out, viz_tok, overwrite=True)
    lay = layout_for(H, W, False)
    assert result["frames"] == N and result["panels"] == list(PANEL_NAMES[1:])
    assert (result["width"], result["height"]) == (lay.out_width, lay.out_height)
    src, info = probe_video(viz_video), probe_video(out)
    assert (info.width, info.height, info.num_frames) == (lay.out_width, lay.out_height, N)
    assert info.fps == src.fps
    assert [p * info.time_base for p in info.pts] == [p * src.time_base for p in src.pts]
    for k, frame in enumerate(iter_frames(out)):
        m = panel(frame, "tokens kept", False).astype(int)
        if k < 5:
            assert (m[:, W // 2 + 1 :] > 200).all() and (m[:, : W // 2 - 1] < 55).all(), k
            assert abs(bar_fraction(frame, False) - 0.5) < 0.05, k
        else:
            assert (m > 200).all() and bar_fraction(frame, False) > 0.97


def test_source_panel_and_real_compressed_file(viz_dir: Path, viz_compressed: Path, viz_tok: Tokenizer,
                                               viz_video: Path) -> None:
    out = viz_dir / "with_source.mp4"
    done: list[int] = []
    result = visualize(viz_compressed, out, viz_tok, source=viz_video, progress=lambda d, t: done.append(d))
    lay = layout_for(H, W, True)
    assert result["panels"] == list(PANEL_NAMES) and done[-1] == N
    info = probe_video(out)
    assert (info.width, info.height, info.num_frames, info.fps) == (lay.out_width, lay.out_height, N, FPS)
    rows = stats.inspect_file(viz_compressed).frames
    for k, (frame, original) in enumerate(zip(iter_frames(out), iter_frames(viz_video), strict=True)):
        diff = np.abs(panel(frame, "original", True).astype(int) - original.astype(int)).mean()
        assert diff < 4, k
        assert abs(bar_fraction(frame, True) - rows[k]["keep_fraction"]) < 0.05, k


def test_mismatched_source_is_a_clear_error(viz_dir: Path, viz_masked: Path, viz_tok: Tokenizer) -> None:
    wrong_size = write_video(viz_dir / "wrong_size.mp4", scene(N, H, W - 16))
    wrong_count = write_video(viz_dir / "wrong_count.mp4", scene(N - 4))
    for source in (wrong_size, wrong_count):
        with pytest.raises(CodecError, match="does not match") as excinfo:
            visualize(viz_masked, viz_dir / "never.mp4", viz_tok, source=source)
        assert "\n" not in str(excinfo.value)
    assert not (viz_dir / "never.mp4").exists()


def test_existing_output_is_kept_without_overwrite(viz_dir: Path, viz_masked: Path,
                                                   viz_tok: Tokenizer) -> None:
    out = viz_dir / "exists.mp4"
    out.write_bytes(b"keep me")
    with pytest.raises(VideoError, match="exists"):
        visualize(viz_masked, out, viz_tok)
    assert out.read_bytes() == b"keep me"
    visualize(viz_masked, out, viz_tok, overwrite=True)
    assert probe_video(out).num_frames == N


def test_rotated_video_is_shown_upright(viz_dir: Path, viz_masked: Path, viz_tok: Tokenizer) -> None:
    header = dataclasses.replace(read_header_and_index(viz_masked)[0], rotation=90)
    rotated = write_masked(viz_dir / "rotated.itok", header, right_half_masks(header))
    out = viz_dir / "rotated.mp4"
    result = visualize(rotated, out, viz_tok)
    lay = layout_for(W, H, False)  # display orientation: 32 wide, 64 tall
    assert (result["width"], result["height"]) == (lay.out_width, lay.out_height)
    frame = next(iter_frames(out))
    m = panel(frame, "tokens kept", False, W, H).astype(int)
    # 90 degrees counter-clockwise: the coded right half (kept) is now the top half
    assert (m[: W // 2 - 1] > 200).all() and (m[W // 2 + 1 :] < 55).all()


def test_cli_visualize(viz_dir: Path, viz_masked: Path, viz_tok: Tokenizer, viz_video: Path) -> None:
    out = viz_dir / "cli.mp4"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def infotok(*args: object) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "infotok_cli", "visualize", str(viz_masked), "-o", str(out),
               "--model", str(viz_tok.loaded.path), "--device", "cpu", *map(str, args)]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)

    proc = infotok("--source", viz_video, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["frames"] == N and result["panels"] == list(PANEL_NAMES)
    info = probe_video(out)
    assert (info.num_frames, info.fps, info.width) == (N, FPS, layout_for(H, W, True).out_width)
    again = infotok("--quiet")
    assert again.returncode == 5 and "exists" in again.stderr  # output exists, no --force
    wrong = write_video(viz_dir / "cli_wrong.mp4", scene(N - 4))
    mismatch = infotok("--source", wrong, "--force")
    assert mismatch.returncode == 2 and "does not match" in mismatch.stderr
    assert mismatch.stderr.count("\n") == 1
