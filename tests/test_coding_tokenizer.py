"""compress_video / decompress_video on real generated videos with a tiny random model.

The model is untrained, so pictures are not checked; what is checked is that every frame, size,
frame rate and timestamp survives the round trip, that windows tile the video as planned, and that each
strategy keeps exactly the number of tokens it promises at exactly the positions the router picks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model
from safetensors.torch import load_file

from infotok_cli.coding.compress import compress_video
from infotok_cli.coding.decompress import decompress_video, iter_decoded
from infotok_cli.coding.geometry import check_window, iter_windows, plan_windows, to_frames, to_model_input
from infotok_cli.coding.rate import tokens_for_rate
from infotok_cli.coding.router import top_k_mask
from infotok_cli.coding.tokenizer import Tokenizer
from infotok_cli.constants import MIN_RATE
from infotok_cli.errors import CodecError, OptionError, WeightsError
from infotok_cli.format.reader import ItokReader, read_header_and_index
from infotok_cli.io.video import iter_frames, probe_video
from infotok_cli.model.flex import FlexConfig, FlexTokenizer, load_release_state_dict
from infotok_cli.model.router_head import HeadConfig, RouterHead, dithered_score
from infotok_cli.model.store import FLEX_ARCHITECTURE, LoadedModel, load_model, save_weights

# ----------------------------------------------------------------------------- window planning


@pytest.mark.parametrize(("window", "overlap"), [(1, 0), (5, 0), (5, 2), (9, 2), (17, 3), (33, 3), (33, 16)])
def test_plan_windows_tiles_every_frame(window: int, overlap: int) -> None:
    for n in range(1, 120):
        plan = plan_windows(n, window, overlap)
        assert plan[0][0] == 0
        assert plan[-1][0] + plan[-1][1] == n  # the last window ends at the last frame
        covered = np.zeros(n, dtype=int)
        for start, count in plan:
            assert 1 <= count <= window
            covered[start:start + count] += 1
        assert covered.min() >= 1  # every frame is coded
        for (s0, c0), (s1, c1) in zip(plan[:-1], plan[1:], strict=True):
            assert c0 == window  # only the last window may be short
            assert s1 == s0 + window - overlap  # consecutive windows share exactly `overlap` frames
            assert s1 + c1 > s0 + c0  # and every window brings new frames
        assert covered.max() <= (2 if overlap else 1)


def test_check_window_rejects_bad_geometry() -> None:
    for window, overlap in [(0, 0), (4, 0), (16, 3), (17, 9), (17, -1), (33, 17)]:
        with pytest.raises(CodecError):
            check_window(window, overlap)
    check_window(17, 8)  # half the window is the most


# ----------------------------------------------------------------------------- round trips

ROUND_TRIPS = [  # width, height, frames, fps, window
    (33, 17, 1, Fraction(30), 33),
    (50, 30, 2, Fraction(30000, 1001), 33),
    (32, 24, 5, Fraction(30), 33),
    (40, 24, 17, Fraction(30000, 1001), 9),
    (50, 30, 40, Fraction(30), 17),
    (32, 24, 100, Fraction(30), 33),
]


def assert_same_layout(src: Path, dst: Path) -> None:
    a, b = probe_video(src), probe_video(dst)
    assert (b.width, b.height, b.num_frames) == (a.width, a.height, a.num_frames)
    assert b.fps == a.fps
    assert [p * b.time_base for p in b.pts] == [p * a.time_base for p in a.pts]


@pytest.mark.parametrize(("width", "height", "frames", "fps", "window"), ROUND_TRIPS)
def test_round_trip_keeps_frames_size_and_timing(tmp_path: Path, make_video, tokenizer: Tokenizer, width: int,
                                                 height: int, frames: int, fps: Fraction, window: int) -> None:
    src = make_video(width, height, frames, fps=fps)
    itok, out = tmp_path / "v.itok", tmp_path / "out.mp4"
    calls: list[tuple[int, int]] = []
    result = compress_video(src, itok, tokenizer, beta=0.5, window=window, overlap=3 if window > 9 else 2,
                            progress=lambda done, total: calls.append((done, total)))
    assert result.frames == frames and (result.width, result.height) == (width, height)
    assert calls[-1] == (frames, frames)
    header, windows, size = read_header_and_index(itok)
    assert size == result.file_bytes and header.num_frames == frames
    assert result.windows == len(windows) == len(plan_windows(frames, header.window, header.overlap))
    assert result.tokens_kept == sum(w.kept for w in windows)
    assert header.padded_width % 8 == 0 and header.padded_height % 8 == 0
    dec = decompress_video(itok, out, tokenizer)
    assert dec.frames == frames
    assert_same_layout(src, out)


def test_round_trip_variable_frame_rate(tmp_path: Path, make_video, tokenizer: Tokenizer) -> None:
    pts = [0, 40, 70, 150, 160, 230, 300, 310, 400, 470, 480]  # irregular gaps, time base 1/1000
    src = make_video(40, 24, len(pts), pts=pts, time_base=Fraction(1, 1000), fps=Fraction(25))
    assert probe_video(src).is_variable_frame_rate
    itok, out = tmp_path / "vfr.itok", tmp_path / "vfr.mp4"
    compress_video(src, itok, tokenizer, window=5, overlap=1)
    decompress_video(itok, out, tokenizer)
    assert_same_layout(src, out)
    assert probe_video(out).is_variable_frame_rate


# ----------------------------------------------------------------------------- token counts per strategy


def analyse_all(tok: Tokenizer, path: Path, window: int, overlap: int) -> list:
    """The router's inputs computed directly: Tokenizer.analyse on each planned window."""
    info = probe_video(path)
    hw = (-(-info.height // 8) * 8, -(-info.width // 8) * 8)
    return [tok.analyse(frames, start, hw)
            for start, frames in iter_windows(iter_frames(path, info), info.num_frames, window, overlap)]


def kept_per_window(path: Path) -> list[int]:
    return [w.kept for w in read_header_and_index(path)[1]]


@pytest.fixture(scope="module")
def counts_video(make_shared_video) -> Path:
    """40x24, 30 frames: four windows of 9 frames with an overlap of 2, each noisier than the last."""
    return make_shared_video(40, 24, 30, "counts.mp4", kind="ramp")


WINDOW, OVERLAP = 9, 2


def test_window_strategy_keeps_round_beta_n(tmp_path: Path, tokenizer: Tokenizer, counts_video: Path) -> None:
    for beta in (0.0625, 0.3, 0.5, 1.0):
        out = tmp_path / f"w{beta}.itok"
        result = compress_video(counts_video, out, tokenizer, beta=beta, strategy="window", window=WINDOW,
                                overlap=OVERLAP)
        windows = read_header_and_index(out)[1]
        assert len(windows) == 4
        for w in windows:
            assert w.kept == max(1, round(beta * w.capacity))
        assert result.window_rates == [w.kept / w.capacity for w in windows]


@pytest.mark.parametrize("scale", ["spread", "floor", "ceiling"])
def test_global_strategy_follows_e_ref(tmp_path: Path, tokenizer: Tokenizer, counts_video: Path,
                                       scale: str) -> None:
    analyses = analyse_all(tokenizer, counts_video, WINDOW, OVERLAP)
    errors = [a.error.mean().item() for a in analyses]
    beta = 0.5
    e_ref = {"spread": float(np.mean(errors)) * 0.8, "floor": 1e3, "ceiling": 1e-6}[scale]
    tok = Tokenizer(dataclasses.replace(tokenizer.loaded, e_ref=e_ref), tokenizer.device)
    out = tmp_path / "g.itok"
    compress_video(counts_video, out, tok, beta=beta, strategy="global", window=WINDOW, overlap=OVERLAP)
    expected = []
    for a, e_w in zip(analyses, errors, strict=True):
        rate = min(1.0, max(MIN_RATE, beta * e_w / e_ref))
        expected.append(max(1, round(rate * a.error.numel())))
    assert kept_per_window(out) == expected
    if scale == "spread":  # the windows differ, and so do their budgets
        assert len(set(expected)) > 2
    if scale == "floor":
        assert expected == [max(1, round(a.error.numel() / 16)) for a in analyses]
    if scale == "ceiling":
        assert expected == [a.error.numel() for a in analyses]
    # The kept positions are the top-k of the drop gain, and the stored tokens are those positions' tokens.
    with ItokReader(out) as reader:
        for a, k, rec in zip(analyses, expected, reader.iter_windows(), strict=True):
            assert a.score is not None and a.score.shape == a.error.shape
            keep = top_k_mask(a.score, k).numpy()
            assert np.array_equal(rec.keep_mask, keep)
            assert np.array_equal(rec.tokens.astype(np.int64), a.indices.numpy()[keep])


def test_probe_error_estimate_skips_the_full_rate_decode(tmp_path: Path, tokenizer: Tokenizer,
                                                         counts_video: Path) -> None:
    """probe-gain with weights that record e_ref_probe: three passes per window, and a window error that
    is the probe error scaled by e_ref / e_ref_probe; the placement and the global strategy's rates
    follow that estimate. A PSNR target still runs the
    full-rate decode, and so does drop-gain (its gain is measured against it)."""
    assert tokenizer.loaded.e_ref_probe is None and tokenizer.router_passes == 4

    class Counting(Tokenizer):
        """Counts full-rate decodes through the tokenizer's tracing hook."""

        full_decodes = 0

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.tracer = self.count

        @staticmethod
        def count(stage: str) -> contextlib.AbstractContextManager:
            if stage == "full-rate decode":
                Counting.full_decodes += 1
            return contextlib.nullcontext()

    loaded = dataclasses.replace(tokenizer.loaded, e_ref=0.08, e_ref_probe=0.1)
    assert Tokenizer(loaded, tokenizer.device, placement="drop-gain").router_passes == 4
    tok = Counting(loaded, tokenizer.device)  # probe-gain, the default
    assert tok.skips_full_decode and tok.router_passes == 3
    analyses = analyse_all(tok, counts_video, WINDOW, OVERLAP)
    assert Counting.full_decodes == 0
    without = Tokenizer(tokenizer.loaded, tokenizer.device, placement="probe-gain")
    assert not without.skips_full_decode and without.router_passes == 4
    reference = analyse_all(without, counts_video, WINDOW, OVERLAP)
    for a, b in zip(analyses, reference, strict=True):
        assert torch.equal(a.indices, b.indices)
        x = to_model_input(np.stack(list(iter_frames(counts_video)))[a.start:a.start + a.count],
                           (24, 40), tok.device)
        codes = tok.model.quantizer.indices_to_codes(a.indices[None].to(tok.device))
        dropped, sent = tok.probe_scores(x, codes, tuple(a.indices.shape))
        torch.testing.assert_close(a.error, sent * 0.8)
        torch.testing.assert_close(a.score, dropped - sent * 0.8)
        torch.testing.assert_close(b.score, dropped - sent)  # no e_ref_probe: the factor is 1
    out = tmp_path / "g.itok"
    beta = 0.5
    compress_video(counts_video, out, tok, beta=beta, strategy="global", window=WINDOW, overlap=OVERLAP)
    assert Counting.full_decodes == 0
    assert kept_per_window(out) == [
        max(1, round(min(1.0, max(MIN_RATE, beta * a.error.mean().item() / 0.08)) * a.error.numel()))
        for a in analyses]
    measured = tok.analyse(np.stack(list(iter_frames(counts_video)))[:WINDOW], 0, (24, 40), measure=True)
    assert Counting.full_decodes == 1 and measured.full_psnr is not None
    torch.testing.assert_close(measured.error, reference[0].error)


def test_weights_record_e_ref_probe(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_weights(path, tiny_model(seed=0), e_ref=0.1, e_ref_probe=0.125)
    assert load_model(path).e_ref_probe == 0.125
    save_weights(path, tiny_model(seed=0), e_ref=0.1, e_ref_probe=float("nan"))
    with pytest.raises(WeightsError, match="e_ref_probe"):
        load_model(path)


def test_error_placement_keeps_the_top_error_positions(tmp_path: Path, tokenizer: Tokenizer,
                                                      counts_video: Path) -> None:
    tok = Tokenizer(tokenizer.loaded, tokenizer.device, placement="error")
    assert tok.router_passes == 2 and tokenizer.router_passes == 4  # weights without e_ref_probe
    analyses = analyse_all(tok, counts_video, WINDOW, OVERLAP)
    assert all(a.score is None for a in analyses)
    out, default = tmp_path / "e.itok", tmp_path / "d.itok"
    compress_video(counts_video, out, tok, beta=0.5, strategy="window", window=WINDOW, overlap=OVERLAP)
    compress_video(counts_video, default, tokenizer, beta=0.5, strategy="window", window=WINDOW, overlap=OVERLAP)
    with ItokReader(out) as reader, ItokReader(default) as other:
        masks = [(rec.keep_mask, rec2.keep_mask) for rec, rec2 in zip(reader.iter_windows(), other.iter_windows())]
    for a, (keep, _) in zip(analyses, masks, strict=True):
        assert np.array_equal(keep, top_k_mask(a.error, max(1, round(0.5 * a.error.numel()))).numpy())
    assert any(not np.array_equal(a, b) for a, b in masks)  # the two placements differ somewhere
    with pytest.raises(CodecError, match="placement"):
        Tokenizer(tokenizer.loaded, tokenizer.device, placement="best")


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.8])
def test_video_strategy_total_hits_beta(tmp_path: Path, tokenizer: Tokenizer, counts_video: Path,
                                        beta: float) -> None:
    out = tmp_path / "v.itok"
    result = compress_video(counts_video, out, tokenizer, beta=beta, strategy="video", window=WINDOW,
                            overlap=OVERLAP)
    windows = read_header_and_index(out)[1]
    total = sum(w.capacity for w in windows)
    assert abs(sum(w.kept for w in windows) - round(beta * total)) <= len(windows)
    assert result.tokens_kept == sum(w.kept for w in windows)


def test_compress_rejects_bad_options_before_writing(tmp_path: Path, tokenizer: Tokenizer,
                                                     counts_video: Path) -> None:
    out = tmp_path / "bad.itok"
    for kwargs in ({"beta": 0.01}, {"beta": 1.5}, {"strategy": "best"}, {"window": 10}, {"overlap": 20}):
        with pytest.raises(CodecError):
            compress_video(counts_video, out, tokenizer, **kwargs)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- decoding


def test_weight_hash_mismatch_is_refused(tmp_path: Path, tokenizer: Tokenizer, other_weights: Path,
                                         static_video: Path) -> None:
    itok, out = tmp_path / "s.itok", tmp_path / "s.mp4"
    compress_video(static_video, itok, tokenizer)
    other = Tokenizer(load_model(other_weights, "cpu"), "cpu")
    with pytest.raises(CodecError, match="--model"):
        decompress_video(itok, out, other)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.itok"]  # no temporary file left behind


def test_two_window_overlap_is_blended(tmp_path: Path, tokenizer: Tokenizer, moving_video: Path) -> None:
    itok = tmp_path / "m.itok"
    compress_video(moving_video, itok, tokenizer, beta=0.5, strategy="window", window=17, overlap=3)
    with ItokReader(itok) as reader:
        h = reader.header
        assert [(w.frame_start, w.frame_count) for w in reader.windows] == [(0, 17), (14, 7)]
        per_window = []
        for rec in reader.iter_windows():
            keep = torch.from_numpy(rec.keep_mask)
            indices = torch.zeros(keep.shape, dtype=torch.int64)
            indices[keep] = torch.from_numpy(rec.tokens.astype(np.int64))
            x = tokenizer.reconstruct(indices, keep)
            per_window.append(to_frames(x, rec.meta.frame_count, h.height, h.width).astype(np.float64))
        decoded = np.stack(list(iter_decoded(reader, tokenizer)))
    first, second = per_window
    assert decoded.shape == (21, 32, 48, 3)
    # Frames 14-16 are in both windows: the earlier window's weight falls 3/4, 1/2, 1/4 across them.
    expected = np.concatenate([first[:14], np.zeros((3, 32, 48, 3)), second[3:]])
    for i, w in enumerate((0.75, 0.5, 0.25)):
        expected[14 + i] = np.round(w * first[14 + i] + (1 - w) * second[i])
    assert np.abs(decoded.astype(np.float64) - expected).max() <= 1  # float32 vs float64 rounding
    assert np.array_equal(decoded[:14], first[:14]) and np.array_equal(decoded[17:], second[3:])
    mid = decoded[15].astype(np.float64)
    assert not np.array_equal(mid, first[15]) and not np.array_equal(mid, second[1])

    # Lossless output holds exactly the decoded frames.
    out = tmp_path / "m.mkv"
    decompress_video(itok, out, tokenizer, lossless=True)
    assert np.array_equal(np.stack(list(iter_frames(out))), decoded)


# ----------------------------------------------------------------------------- learned router head


def with_head(loaded, seed: int = 0):
    torch.manual_seed(seed)
    head = RouterHead(HeadConfig(in_channels=loaded.config.latent_dim + 11, width=8, dilations=(1, 2)))
    for p in head.parameters():
        p.data.normal_(0, 0.05)
    return dataclasses.replace(loaded, router_head=head.eval())


def test_predicted_placement_needs_a_head(tokenizer: Tokenizer) -> None:
    with pytest.raises(OptionError, match="no learned router head"):
        Tokenizer(tokenizer.loaded, tokenizer.device, placement="predicted")


def test_predicted_placement_places_without_any_decode(tmp_path: Path, tokenizer: Tokenizer,
                                                       counts_video: Path) -> None:
    """One network pass per window: the head's score picks the tokens (dithered below keep 0.5), its error
    estimate sets the global strategy's rates; the file decodes like any other and is the same every time."""
    tok = Tokenizer(with_head(tokenizer.loaded), tokenizer.device, placement="predicted")
    assert tok.router_passes == 1 and tok.skips_full_decode
    stages: list[str] = []
    tok.tracer = lambda stage: stages.append(stage) or contextlib.nullcontext()
    analyses = analyse_all(tok, counts_video, WINDOW, OVERLAP)
    assert stages and not {"full-rate decode", "probe decodes", "decoder"} & set(stages)
    reference = analyse_all(tokenizer, counts_video, WINDOW, OVERLAP)
    for a, b in zip(analyses, reference, strict=True):
        assert torch.equal(a.indices, b.indices) and a.dither
    for beta, name in ((0.5, "a"), (0.25, "b")):
        out = tmp_path / f"{name}.itok"
        result = compress_video(counts_video, out, tok, beta=beta, strategy="global", window=WINDOW,
                                overlap=OVERLAP)
        assert result.placement == "predicted" and read_header_and_index(out)[0].extra["placement"] == "predicted"
        rates = [min(1.0, max(MIN_RATE, beta * a.error.mean().item() / tok.loaded.e_ref)) for a in analyses]
        assert kept_per_window(out) == [max(1, round(r * a.error.numel())) for r, a in zip(rates, analyses)]
        with ItokReader(out) as reader:
            for a, rec in zip(analyses, reader.iter_windows(), strict=True):
                k = int(rec.keep_mask.sum())
                expected = top_k_mask(dithered_score(a.score, k / a.score.numel()), k).numpy()
                assert np.array_equal(rec.keep_mask, expected)
        again = tmp_path / f"{name}2.itok"
        compress_video(counts_video, again, tok, beta=beta, strategy="global", window=WINDOW, overlap=OVERLAP)
        assert out.read_bytes() == again.read_bytes()
        decompress_video(out, tmp_path / f"{name}.mp4", tokenizer)  # the model without the head decodes it


# ----------------------------------------------------------------------------- model-specific defaults


def flex_fixture_model() -> LoadedModel:
    fixture = Path(__file__).resolve().parent / "data" / "infotok-flex"
    cfg = FlexConfig.from_release(json.loads((fixture / "small-config.json").read_text()))
    model = FlexTokenizer(cfg).eval()
    load_release_state_dict(model, load_file(fixture / "small-weights.safetensors"))
    return LoadedModel(model=model, config=cfg, name="flex-small", sha256="0" * 64, e_ref=0.0,
                       path=fixture / "small-weights.safetensors", metadata={"architecture": FLEX_ARCHITECTURE})


def test_flex_defaults_to_the_papers_router_and_keeps_the_release_positions() -> None:
    """InfoTok-Flex: `error` placement and (uncalibrated) `window` strategy by default; with them a window
    keeps the positions the authors' code keeps (the fixture's keep masks, from their chunk_loss)."""
    fixture = Path(__file__).resolve().parent / "data" / "infotok-flex"
    tok = Tokenizer(flex_fixture_model(), "cpu", precision="fp32")
    assert tok.placement == "error" and tok.default_strategy == "window" and tok.router_passes == 2
    cases = load_file(fixture / "small-cases.safetensors")
    for case in ("square", "wide"):
        x = cases[f"{case}.input"][0]
        frames = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()
        a = tok.analyse(frames, 0, frames.shape[1:3])
        for rate in ("0.5", "0.25"):
            expected = cases[f"{case}.keep_{rate}"][0].bool()
            keep = tok.choose(a, tok.token_count(float(rate), a.error.numel()))
            assert int(keep.sum()) == int(expected.sum())
            assert (keep == expected).float().mean() >= 0.99
    calibrated = dataclasses.replace(flex_fixture_model(), e_ref=0.05)
    assert Tokenizer(calibrated, "cpu").default_strategy == "global"


def test_release_token_count_matches_the_release_arithmetic() -> None:
    for n in (64, 180, 320, 2048, 9216, 31680):
        for rate in (0.0625, 0.1, 0.25, 0.3, 0.33, 0.5, 0.7, 0.75, 0.9, 0.99):
            q = (1 - torch.tensor(rate, dtype=torch.float32)).clamp(0, 1)
            index = int((q * (n - 1)).long().clamp(0, n - 1))
            assert FlexTokenizer.keep_count(rate, n) == n - 1 - index
            assert abs(FlexTokenizer.keep_count(rate, n) - tokens_for_rate(rate, n)) <= 1
        assert FlexTokenizer.keep_count(1.0, n) == n
