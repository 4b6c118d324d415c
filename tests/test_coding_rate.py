"""`--target-psnr`: the rate search on rate-PSNR curves, the honesty of the stored per-window PSNR (checked by
decoding the written file), the cap, the window-quality chunk as untrusted input, and the command line."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from infotok_cli.coding.compress import compress_video
from infotok_cli.coding.geometry import iter_windows, to_frames
from infotok_cli.coding.metrics import psnr_video
from infotok_cli.coding.rate import tokens_for_quality
from infotok_cli.coding.tokenizer import Tokenizer
from infotok_cli.errors import CodecError, ContainerError
from infotok_cli.format.chunks import WindowQuality, pack_quality, read_quality, unpack_quality
from infotok_cli.format.layout import CHUNK_QUALITY
from infotok_cli.format.reader import ItokReader
from infotok_cli.io.files import itok_writer
from infotok_cli.io.video import iter_frames, probe_video
from infotok_cli.model.router_head import HeadConfig, RouterHead

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
ENV.pop("INFOTOK_DEBUG", None)

CURVES = {  # rate-PSNR curves of the shapes real windows show (rising, saturating), over N = 4096 tokens
    "log": lambda k: 20 + 8 * math.log2(1 + 3 * k / 4096),
    "sqrt": lambda k: 18 + 12 * math.sqrt(k / 4096),
    "saturating": lambda k: 30 - 10 * math.exp(-6 * k / 4096),
    "wiggly": lambda k: 20 + 8 * math.log2(1 + 3 * k / 4096) + 0.1 * math.sin(k),
}


def smallest_reaching(curve, target: float, n: int = 4096) -> int | None:
    return next((k for k in range(n // 16, n + 1) if curve(k) >= target), None)


@pytest.mark.parametrize("name", sorted(CURVES))
@pytest.mark.parametrize("target", [21.0, 24.0, 26.0, 28.5])
@pytest.mark.parametrize("start", [None, 1000, 3500])
def test_search_lands_just_above_the_target_in_few_decodes(name: str, target: float, start: int | None) -> None:
    curve = CURVES[name]
    calls: list[int] = []

    def psnr_at(k: int) -> float:
        calls.append(k)
        return curve(k)

    r = tokens_for_quality(4096, psnr_at, target, curve(4096), k_start=start)
    best = smallest_reaching(curve, target)
    assert r.reached and r.psnr == curve(r.k) >= target
    assert r.k >= best and (r.k == 256 or r.psnr - target <= 0.5)  # floor 1/16 may land higher
    assert r.k <= best * 1.1 + 16  # close to the fewest tokens that reach the target
    assert r.probes == len(calls) == len(set(calls)) <= 8
    assert 4096 not in calls  # the full-rate PSNR is known, never decoded again


def test_search_probes_fewer_than_binary_search() -> None:
    probes = [tokens_for_quality(4096, CURVES[c], t, CURVES[c](4096), k_start=k0).probes
              for c in CURVES for t in (22.0, 25.0, 27.0) for k0 in (None, 800, 2000)]
    assert np.mean(probes) <= 5 < math.ceil(math.log2(4096 - 256))  # ElasticTok's search: 12 probes here


@pytest.mark.parametrize("name", sorted(CURVES))
@pytest.mark.parametrize("target", [21.0, 24.0, 26.0, 28.5])
@pytest.mark.parametrize("bias", [0.0, -1.5, 1.0])
def test_search_from_an_estimate_needs_no_full_rate_decode(name: str, target: float, bias: float) -> None:
    """A rate-curve estimate (off by `bias` dB) starts the search; the full rate is decoded only when the
    estimate points there."""
    curve = CURVES[name]
    calls: list[int] = []

    def psnr_at(k: int) -> float:
        calls.append(k)
        return curve(k)

    r = tokens_for_quality(4096, psnr_at, target, estimate=lambda k: curve(k) + bias)
    best = smallest_reaching(curve, target)
    assert r.reached and r.psnr == curve(r.k) >= target
    assert r.k >= best and (r.k == 256 or r.psnr - target <= 0.5)
    assert r.k <= best * 1.1 + 16
    assert r.probes == len(calls) == len(set(calls)) <= 8
    if bias == 0:
        assert r.probes == 1  # an exact estimate: one decode confirms it
    if bias >= 0:
        assert 4096 not in calls


def test_an_estimate_saves_decodes() -> None:
    """Off by up to 1 dB either way, the estimate still beats the full-rate decode plus the secant search."""
    guided, unguided = [], []
    for c in CURVES.values():
        for t in (22.0, 25.0, 27.0):
            unguided.append(1 + tokens_for_quality(4096, c, t, c(4096)).probes)  # the full-rate decode first
            guided += [tokens_for_quality(4096, c, t, estimate=lambda k, c=c, b=b: c(k) + b).probes
                       for b in (-1.0, 0.5, 1.0)]
    assert np.mean(guided) + 1 <= np.mean(unguided)


def test_unreachable_target_with_an_estimate_decodes_the_cap_once() -> None:
    curve = CURVES["sqrt"]
    r = tokens_for_quality(4096, curve, 40.0, estimate=curve)
    assert (r.k, r.psnr, r.probes, r.reached) == (4096, curve(4096), 1, False)
    r = tokens_for_quality(4096, curve, 25.0, estimate=lambda k: curve(k) + 10, k_cap=1024)
    assert r.k == 1024 and not r.reached and r.psnr == curve(1024)
    r = tokens_for_quality(4096, curve, 20.0, estimate=lambda k: float("nan"))  # a broken estimate
    assert r.reached and r.psnr >= 20.0


def test_unreachable_target_keeps_everything_without_a_decode() -> None:
    r = tokens_for_quality(4096, lambda k: pytest.fail("no decode needed"), 40.0, 31.0)
    assert (r.k, r.psnr, r.probes, r.reached) == (4096, 31.0, 0, False)
    nan = tokens_for_quality(4096, lambda k: pytest.fail("no decode needed"), 20.0, float("nan"))
    assert nan.k == 4096 and not nan.reached


def test_cap_bounds_the_count() -> None:
    curve = CURVES["log"]
    r = tokens_for_quality(4096, curve, 27.0, curve(4096), k_cap=1024)
    assert r.k == 1024 and not r.reached and r.probes == 1  # the cap itself falls short: one decode
    r = tokens_for_quality(4096, curve, 24.0, curve(4096), k_cap=1024)
    assert r.reached and r.k <= 1024 and r.psnr >= 24.0


def test_non_monotone_curve_still_returns_a_measured_point_that_reaches() -> None:
    curve = {k: v for k, v in zip(range(4097), 25 + 3 * np.sin(np.arange(4097) / 40.0))}
    r = tokens_for_quality(4096, lambda k: curve[k], 26.0, curve[4096] + 5)
    assert r.reached and r.psnr >= 26.0 and (r.k == 4096 or curve[r.k] == r.psnr)


# ----------------------------------------------------------------------------- through the codec


def measured_window_psnr(itok: Path, src: Path, tok: Tokenizer) -> list[float]:
    """PSNR of each window as a receiver decodes it from the file, against the source frames."""
    info = probe_video(src)
    out = []
    with ItokReader(itok) as r:
        h = r.header
        frames_by_start = dict(iter_windows(iter_frames(src, info), info.num_frames, h.window, h.overlap))
        for meta in r.windows:
            rec = r.read_window(meta.index)
            keep = torch.from_numpy(rec.keep_mask)
            idx = torch.zeros(keep.shape, dtype=torch.int64)
            idx[keep] = torch.from_numpy(rec.tokens.astype(np.int64))
            rec_frames = to_frames(tok.reconstruct(idx, keep), meta.frame_count, h.height, h.width)
            out.append(psnr_video(rec_frames, frames_by_start[meta.frame_start]))
    return out


@pytest.fixture(scope="module")
def ramp_video(make_shared_video) -> Path:
    """Later windows carry more noise: the windows need different keep rates for one quality."""
    return make_shared_video(48, 40, 33, "ramp.mp4", kind="ramp")


@pytest.fixture(scope="module")
def sensitive(tiny_weights: Path) -> Tokenizer:
    """The tiny model with a far-off 'dropped' embedding, so that dropping tokens costs PSNR (with the random
    one, every rate gives about the same PSNR and every search ends at 1/16)."""
    from infotok_cli.model.store import load_model

    tok = Tokenizer(load_model(tiny_weights, "cpu"), "cpu")
    with torch.no_grad():
        tok.model.dropped_token.fill_(3.0)
    return tok


def test_stored_psnr_is_what_a_decoder_gets(tmp_path: Path, sensitive: Tokenizer, ramp_video: Path) -> None:
    tokenizer = sensitive
    probe = compress_video(ramp_video, tmp_path / "probe.itok", tokenizer, window=9, overlap=1, target_psnr=99)
    full = probe.window_psnr  # 99 dB is out of reach: every window keeps everything
    assert probe.windows_short == probe.windows and probe.keep_rate == 1.0
    assert any("did not reach 99 dB" in n for n in probe.notices)
    target = float(np.floor(min(full) * 4) / 4 - 0.5)  # reachable by every window at full rate
    itok = tmp_path / "t.itok"
    res = compress_video(ramp_video, itok, tokenizer, window=9, overlap=1, target_psnr=target)
    assert res.windows_short == 0 and res.target_psnr == target
    assert any(1 / 16 < r < 1 for r in res.window_rates)  # the search had to find a rate in between
    assert all(p >= target for p in res.window_psnr)
    assert all(p <= 8 for p in res.search_probes)
    with ItokReader(itok) as r:
        r.verify()
        assert r.version[1] == 1
        q = read_quality(r)
        assert r.header.extra == {"rate_control": "target_psnr", "target_psnr": target,
                                  "precision": tokenizer.precision.name, "placement": tokenizer.placement}
    assert q.target_psnr == target and q.short() == 0
    measured = measured_window_psnr(itok, ramp_video, tokenizer)
    assert np.allclose(q.psnr, measured, atol=1e-3)  # f32 storage
    assert np.allclose(res.window_psnr, measured, atol=1e-9)


def test_rate_curve_starts_the_search_without_a_full_rate_decode(tmp_path: Path, sensitive: Tokenizer,
                                                                 ramp_video: Path) -> None:
    """Placement `predicted` with a head that carries a rate curve: each window's search starts where the
    curve expects the target, every decode is one of the search's, and the stored PSNR stays honest."""
    probe = compress_video(ramp_video, tmp_path / "probe.itok", sensitive, window=9, overlap=1, target_psnr=99)
    target = float(np.floor(min(probe.window_psnr) * 4) / 4 - 0.5)
    torch.manual_seed(0)
    head = RouterHead(HeadConfig(in_channels=sensitive.loaded.config.latent_dim + 11, width=8, dilations=(1,),
                                 curve_rates=(0.25, 0.5)))
    for p in head.parameters():
        p.data.normal_(0, 0.05)
    with torch.no_grad():  # a rough curve: the mean full-rate PSNR, 3 dB and 1 dB below it at keep 1/4, 1/2
        head.curve_bias.copy_(torch.tensor([float(np.mean(probe.window_psnr)), math.log(3.0), 0.0]))
    tok = Tokenizer(dataclasses.replace(sensitive.loaded, router_head=head.eval()), "cpu", placement="predicted")
    assert tok.predicts_quality
    stages: list[str] = []
    tok.tracer = lambda stage: stages.append(stage) or contextlib.nullcontext()
    itok = tmp_path / "guided.itok"
    res = compress_video(ramp_video, itok, tok, window=9, overlap=1, target_psnr=target)
    assert "full-rate decode" not in stages and stages.count("decoder") == sum(res.search_probes)
    assert res.windows_short == 0 and all(p >= target for p in res.window_psnr)
    assert np.allclose(res.window_psnr, measured_window_psnr(itok, ramp_video, tok), atol=1e-9)


def test_max_bpp16_caps_every_window(tmp_path: Path, tokenizer: Tokenizer, ramp_video: Path) -> None:
    res = compress_video(ramp_video, tmp_path / "c.itok", tokenizer, window=9, overlap=1, target_psnr=99,
                         max_bpp16=0.3125)  # keep at most 1/4
    assert all(r <= 0.25 + 1e-9 for r in res.window_rates) and res.windows_short == res.windows
    with ItokReader(tmp_path / "c.itok") as r:
        assert read_quality(r).max_bpp16 == 0.3125
    with pytest.raises(CodecError, match="--max-bpp16"):
        compress_video(ramp_video, tmp_path / "d.itok", tokenizer, max_bpp16=0.5)
    with pytest.raises(CodecError, match="--target-psnr"):
        compress_video(ramp_video, tmp_path / "d.itok", tokenizer, target_psnr=float("nan"))
    assert not (tmp_path / "d.itok").exists()


# ----------------------------------------------------------------------------- the chunk as untrusted input


def test_quality_chunk_round_trip_and_hostile_bodies() -> None:
    q = WindowQuality(26.0, 0.5, [26.5, 25.0, 100.0])
    assert unpack_quality(pack_quality(q), 3) == q and q.short() == 1
    body = pack_quality(q)
    bad = {
        "short": body[:5],
        "wrong count": pack_quality(WindowQuality(26.0, None, [26.5])),
        "trailing": body + b"\0",
        "nan target": struct.pack("<f", float("nan")) + body[4:],
        "negative target": struct.pack("<f", -1.0) + body[4:],
        "inf psnr": body[:12] + struct.pack("<f", float("inf")) + body[16:],
        "huge count": body[:8] + struct.pack("<I", 2**32 - 1) + body[12:],
    }
    for what, b in bad.items():
        with pytest.raises(ContainerError):
            unpack_quality(b, 3)
            pytest.fail(f"accepted: {what}")


def test_reader_rejects_a_lying_quality_chunk(tmp_path: Path, tokenizer: Tokenizer, moving_video: Path) -> None:
    good = tmp_path / "g.itok"
    compress_video(moving_video, good, tokenizer, window=17)
    with ItokReader(good) as r:
        windows = len(r.windows)
    assert windows == 2
    lying_count = struct.pack("<ffI", 26.0, 0.0, 5) + struct.pack("<2f", 30.0, 30.0)
    too_long = pack_quality(WindowQuality(26.0, None, [30.0] * 5))
    for body, match in ((lying_count, "lists 5 windows"), (too_long, "above the limit")):
        bad = tmp_path / "b.itok"
        with ItokReader(good) as r, itok_writer(bad, r.header, overwrite=True) as w:
            for rec in r.iter_windows():
                m = rec.meta
                w.write_window(m.frame_start, m.frame_count, m.padded_frames, rec.keep_mask, rec.tokens)
            w.write_chunk(CHUNK_QUALITY, body)
        with ItokReader(bad) as r:
            r.verify()  # a valid chunk as far as the container goes
            with pytest.raises(ContainerError, match=match):
                read_quality(r)


# ----------------------------------------------------------------------------- command line


def infotok(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infotok_cli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=300)


def test_command_line(tmp_path: Path, tiny_weights: Path, ramp_video: Path) -> None:
    out = tmp_path / "q.itok"
    proc = infotok("compress", ramp_video, out, "--model", tiny_weights, "--window", "9", "--overlap", "1",
                   "--target-psnr", "99", "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["windows_short"] == res["windows"] == len(res["window_psnr"]) == len(res["search_probes"])
    assert "did not reach 99 dB" in proc.stderr
    insp = json.loads(infotok("inspect", out, "--json").stdout)
    assert insp["summary"]["target_psnr"] == 99 and insp["summary"]["windows_short"] == res["windows"]
    assert [w["psnr"] for w in insp["windows"]] == pytest.approx(res["window_psnr"], abs=1e-3)
    text = infotok("inspect", out).stdout
    assert "target PSNR" in text and "PSNR" in text.split("windows")[-1]
    for args, fragment in ((["--max-bpp16", "0.5"], "--target-psnr"), (["--target-psnr", "0"], "target-psnr"),
                           (["--target-psnr", "26", "--max-bpp16", "2"], "max-bpp16")):
        proc = infotok("compress", ramp_video, tmp_path / "x.itok", "--model", tiny_weights, *args)
        assert proc.returncode == 2 and fragment in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.itok").exists()
