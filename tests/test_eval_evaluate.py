"""`infotok eval` and infotok_cli/eval/evaluate.py on a tiny random model and a tiny clip.

The model is untrained, so nothing here judges quality; the tests check that every method spends
exactly the budget it is given, that the search stays in its bounds, and that the reports carry every
field.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from infotok_cli.cli.app import app
from infotok_cli.coding.rate import tokens_for_rate
from infotok_cli.coding.router import random_mask, raster_prefix_mask
from infotok_cli.coding.tokenizer import Tokenizer
from infotok_cli.constants import MIN_RATE
from infotok_cli.eval.baselines import available_codecs, codec_at_size, search_floor, search_keep
from infotok_cli.eval.evaluate import (
    CSV_COLUMNS,
    EvalError,
    EvalReport,
    EvalRow,
    evaluate,
    measure,
    parse_rates,
    plot_rd,
    resolve_methods,
)
from infotok_cli.eval.perceptual import ReferenceScorer, frames_distance, load_stlpips, vgg_weights_path
from infotok_cli.eval.tables import markdown_table
from infotok_cli.io.video import iter_frames, probe_video

RATES = [0.25, 0.5]
WINDOW, OVERLAP = 9, 3  # 21 frames -> windows starting at 0, 6, 12


def probe_bound(capacity: int) -> int:
    return math.ceil(math.log2(capacity)) + 2


@pytest.fixture(scope="module")
def report(tokenizer: Tokenizer, moving_video: Path) -> EvalReport:
    return evaluate([moving_video], tokenizer, RATES, None, window=WINDOW, overlap=OVERLAP, seed=0)


# ----------------------------------------------------------------------------- budgets


def test_every_method_and_rate_is_reported(report: EvalReport) -> None:
    got = {(r.method, r.rate) for r in report.rows}
    skipped = {(s["method"], s["rate"]) for s in report.settings["skipped"]}
    for method in ("elbo", "elbo-error", "elbo-global", "random", "raster", "search", *available_codecs()):
        for rate in RATES:
            assert ((method, rate) in got) != ((method, rate) in skipped)
    assert ("fixed", 1.0) in got
    assert len(report.rows) == len(got)
    # the 48x32 clip is narrower than one x265 CTU: skipped with a reason, not run
    assert {m for m, _ in skipped} <= {"x265"}


@pytest.mark.parametrize("method", ["elbo", "elbo-error", "random", "raster"])
def test_same_token_count_per_window(report: EvalReport, method: str) -> None:
    for row in (r for r in report.rows if r.method == method):
        assert len(row.window_tokens) == row.windows == 3
        assert row.window_tokens == [tokens_for_rate(row.rate, c) for c in row.window_capacity]
        assert row.tokens_kept == sum(row.window_tokens)
        assert row.keep_rate == pytest.approx(row.tokens_kept / row.tokens_max)
        assert row.bpp16 == pytest.approx(row.keep_rate + 1 / 16)


def test_placements_report_their_network_passes(report: EvalReport) -> None:
    """elbo (drop gain) = encode + full-rate decode + two probe decodes; elbo-error = the first two."""
    passes = {r.method: r.passes_per_window for r in report.rows if r.method in ("elbo", "elbo-error")}
    assert passes == {"elbo": 4.0, "elbo-error": 2.0}


def test_fixed_keeps_everything_and_global_reports_its_realised_rate(report: EvalReport) -> None:
    fixed = next(r for r in report.rows if r.method == "fixed")
    assert fixed.window_tokens == fixed.window_capacity and fixed.keep_rate == 1.0
    for row in (r for r in report.rows if r.method == "elbo-global"):
        assert row.keep_rate == pytest.approx(sum(row.window_tokens) / sum(row.window_capacity))
        assert all(MIN_RATE - 1e-9 <= k / c <= 1 for k, c in zip(row.window_tokens, row.window_capacity,
                                                                  strict=True))


def test_baseline_masks_place_exactly_k() -> None:
    gen = torch.Generator().manual_seed(0)
    for shape in [(3, 4, 6), (1, 2, 2), (5, 3, 7)]:
        n = int(np.prod(shape))
        for k in {0, 1, n // 3, n - 1, n}:
            assert int(random_mask(shape, k, generator=gen).sum()) == k
            m = raster_prefix_mask(shape, k)
            assert int(m.sum()) == k
            per_frame = m.reshape(shape[0], -1)
            for f in per_frame:  # a prefix in every latent frame
                c = int(f.sum())
                assert bool(f[:c].all()) and not bool(f[c:].any())


# ----------------------------------------------------------------------------- the search


@pytest.mark.parametrize("capacity", [1, 2, 16, 17, 100, 576, 9216])
def test_search_finds_the_smallest_count_within_its_bounds(capacity: int) -> None:
    lo = search_floor(capacity)
    for target in sorted({lo, lo + 1, capacity // 2, capacity - 1, capacity}):
        target = min(max(target, lo), capacity)
        calls: list[int] = []

        def mse_at(k: int, target: int = target, calls: list[int] = calls) -> float:
            calls.append(k)
            return 10.0 if k < target else 1.0  # monotone: reaches the threshold at `target`

        k, probes = search_keep(capacity, mse_at, threshold=1.0)
        assert k == target
        assert probes == len(calls) <= probe_bound(capacity)
        assert all(lo <= c <= capacity for c in calls)
        assert MIN_RATE <= k / capacity <= 1


def test_search_unreachable_threshold_keeps_everything() -> None:
    k, probes = search_keep(1000, lambda k: 5.0, threshold=1.0)
    assert k == 1000 and probes <= probe_bound(1000)
    k, probes = search_keep(1000, lambda k: 0.0, threshold=1.0)
    assert k == search_floor(1000) == 63 and probes <= probe_bound(1000)


def test_search_rows_stay_within_bounds(report: EvalReport) -> None:
    elbo = {r.rate: r for r in report.rows if r.method == "elbo"}
    for row in (r for r in report.rows if r.method == "search"):
        assert row.threshold_mse == elbo[row.rate].mse  # calibrated on the router's quality
        assert len(row.window_probes) == len(row.window_tokens) == row.windows
        for k, cap, probes in zip(row.window_tokens, row.window_capacity, row.window_probes, strict=True):
            assert 1 <= probes <= probe_bound(cap)
            assert MIN_RATE <= k / cap <= 1
        assert row.passes_per_window == pytest.approx(1 + np.mean(row.window_probes))


# ----------------------------------------------------------------------------- codecs


@pytest.mark.skipif("x264" not in available_codecs(), reason="PyAV has no libx264")
def test_codec_crf_search_respects_the_size(moving_video: Path) -> None:
    info = probe_video(moving_video)
    crf, data, seconds = codec_at_size(moving_video, info, "x264", 10**9)
    assert crf == 0 and seconds > 0  # any size allowed: best quality
    crf, data, _ = codec_at_size(moving_video, info, "x264", 1)
    assert crf == 51  # nothing fits: the smallest file
    target = (len(codec_at_size(moving_video, info, "x264", 10**9)[1]) + len(data)) // 2
    crf, mid, _ = codec_at_size(moving_video, info, "x264", target)
    assert 0 < crf < 51 and len(mid) <= target


@pytest.mark.skipif("x265" not in available_codecs(), reason="PyAV has no libx265")
def test_x265_runs_on_frames_of_one_ctu(tokenizer: Tokenizer, make_video) -> None:
    video = make_video(64, 64, 9)
    rep = evaluate([video], tokenizer, [0.5], ["x265"], window=WINDOW, overlap=OVERLAP)
    assert [r.method for r in rep.rows] == ["elbo", "x265"] and not rep.settings["skipped"]
    assert rep.rows[1].file_bytes <= rep.rows[0].file_bytes or rep.rows[1].crf == 51


def test_codec_rows_match_the_router_file_size_when_possible(report: EvalReport) -> None:
    elbo = {r.rate: r for r in report.rows if r.method == "elbo"}
    for row in (r for r in report.rows if r.method in ("x264", "x265")):
        assert 0 <= row.crf <= 51
        assert row.file_bytes <= elbo[row.rate].file_bytes or row.crf == 51
        assert row.bits_per_pixel == pytest.approx(8 * row.file_bytes / (row.frames * row.width * row.height))
        assert row.keep_rate is None and row.bpp16 is None


# ----------------------------------------------------------------------------- reports


def test_report_dict_csv_and_plot(report: EvalReport, tmp_path: Path) -> None:
    d = report.to_dict()
    json.dumps(d, allow_nan=False)  # strict JSON
    assert set(d) == {"settings", "rows", "averages", "matched_quality"}
    assert [m["rate"] for m in d["matched_quality"]] == RATES
    lines = report.to_csv(tmp_path / "r.csv").splitlines()
    assert lines[0].split(",") == CSV_COLUMNS
    assert len(lines) == 1 + len(report.rows) + len(report.averages())
    assert (tmp_path / "r.csv").read_text().splitlines() == lines
    png = plot_rd(report, tmp_path / "rd.png")
    with Image.open(png) as im:
        im.load()
        assert im.format == "PNG" and im.size[0] > 400 and im.size[1] > 200


def test_option_parsing() -> None:
    assert parse_rates("0.25, 1/2,1,0.5") == [0.25, 0.5, 1.0]
    for bad in ("", "0.01", "1.5", "abc"):
        with pytest.raises(EvalError):
            parse_rates(bad)
    with pytest.raises(EvalError, match="unknown method"):
        resolve_methods(["elbo", "magic"])
    assert resolve_methods(["x264", "elbo"], codecs=False) == ["elbo"]


def test_cli_json_plot_and_csv(tiny_weights: Path, moving_video: Path, tmp_path: Path) -> None:
    """The real entry point in a subprocess: stdout is exactly one JSON object with every field."""
    plot, table = tmp_path / "rd.png", tmp_path / "rd.csv"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "infotok_cli", "eval", str(moving_video), "--rates", "0.25,0.5", "--json",
         "--model", str(tiny_weights), "--device", "cpu", "--window", str(WINDOW), "--overlap", str(OVERLAP),
         "--plot", str(plot), "--csv", str(table), "--quiet"],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    s = out["settings"]
    assert s["rates"] == RATES and s["window"] == WINDOW and s["videos"] == [moving_video.name]
    assert set(s["methods"]) == {"elbo", "elbo-error", "elbo-global", "random", "raster", "search", "fixed",
                                 *available_codecs()}
    row_fields = {f.name for f in fields(EvalRow)}
    assert out["rows"] and all(set(r) == row_fields for r in out["rows"])
    assert {r["method"] for r in out["rows"]} | {k["method"] for k in s["skipped"]} == set(s["methods"])
    for a in out["averages"]:
        assert {"method", "rate", "videos", "psnr", "ssim", "lpips", "bits_per_pixel", "keep_rate", "bpp16",
                "passes_per_window", "encode_seconds", "decode_seconds"} <= set(a)
        assert a["psnr"] is None or math.isfinite(a["psnr"])
    assert [m["rate"] for m in out["matched_quality"]] == RATES
    with Image.open(plot) as im:
        im.load()
        assert im.format == "PNG"
    assert table.read_text().splitlines()[0].split(",") == CSV_COLUMNS


def test_cli_errors_have_exit_codes(tiny_weights: Path, moving_video: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["eval", str(moving_video), "--model", str(tiny_weights), "--device", "cpu", "--quiet"]
    r = runner.invoke(app, [*base, "--rates", "0.01"])
    assert r.exit_code == 2 and "outside" in r.output
    r = runner.invoke(app, [*base, "--methods", "elbo,nope"])
    assert r.exit_code == 2 and "unknown method" in r.output
    r = runner.invoke(app, ["eval", str(tmp_path / "missing.mp4"), "--model", str(tiny_weights)])
    assert r.exit_code == 3
    existing = tmp_path / "exists.png"
    existing.write_bytes(b"x")
    r = runner.invoke(app, [*base, "--plot", str(existing)])
    assert r.exit_code == 5 and existing.read_bytes() == b"x"


# ----------------------------------------------------------------------------- perceptual quality (ST-LPIPS)


def test_every_row_has_st_lpips_beside_psnr_and_ssim(report: EvalReport) -> None:
    assert "ST-LPIPS" in report.settings["lpips"] and "alex" in report.settings["lpips"]
    assert report.settings["lpips_skipped"] == []
    for r in report.rows:
        assert r.lpips is not None and 0 < r.lpips < 2, (r.method, r.rate)
    assert all(a["lpips"] is not None for a in report.averages())
    head = markdown_table(report).splitlines()[0]
    assert "| SSIM | ST-LPIPS |" in head and CSV_COLUMNS.index("lpips") == CSV_COLUMNS.index("ssim") + 1


def test_measure_scores_the_decoded_stream(moving_video: Path) -> None:
    """measure()'s ST-LPIPS is the mean per-frame distance of the frames it is given: 0 for the source
    itself, frames_distance's mean for a distorted copy (through the scorer's cached source features)."""
    info = probe_video(moving_video)
    model = load_stlpips()
    scorer = ReferenceScorer(model)
    same = measure(moving_video, info, iter_frames(moving_video, info), scorer)
    assert same.lpips == 0.0 and same.psnr == math.inf
    src = np.stack(list(iter_frames(moving_video, info)))
    noisy = np.clip(src + np.random.default_rng(1).normal(0, 12, src.shape), 0, 255).astype(np.uint8)
    q = measure(moving_video, info, iter(noisy), scorer)
    assert q.lpips == pytest.approx(float(frames_distance(model, src, noisy).mean()), rel=1e-5)
    assert q.lpips > 0.01 and measure(moving_video, info, iter(noisy)).lpips is None


def test_st_lpips_off_and_on_frames_too_small(tokenizer: Tokenizer, make_video) -> None:
    small = make_video(16, 16, 5)  # under the 21-pixel minimum of the ST-LPIPS AlexNet
    rep = evaluate([small], tokenizer, [0.5], ["elbo"], window=WINDOW, overlap=OVERLAP)
    assert rep.rows[0].lpips is None and rep.settings["lpips_skipped"] == [small.name]
    assert rep.rows[0].ssim is not None and math.isfinite(rep.rows[0].psnr)
    off = evaluate([small], tokenizer, [0.5], ["elbo"], window=WINDOW, overlap=OVERLAP, lpips=None)
    assert off.settings["lpips"] is None and off.rows[0].lpips is None
    assert "| - |" in markdown_table(off)
    with pytest.raises(EvalError, match="unknown ST-LPIPS network"):
        evaluate([small], tokenizer, [0.5], ["elbo"], lpips="squeeze")


def _table_cell(output: str, row: str, column: str) -> str:
    lines = [line for line in output.splitlines() if "┃" in line or line.startswith("│")]
    head = [c.strip() for c in next(line for line in lines if column in line).split("┃")]
    cells = [c.strip() for c in next(line for line in lines if line.startswith(f"│ {row} ")).split("│")]
    return cells[head.index(column)]


def test_cli_reports_st_lpips_and_its_option(tiny_weights: Path, moving_video: Path) -> None:
    runner = CliRunner()
    base = ["eval", str(moving_video), "--model", str(tiny_weights), "--device", "cpu", "--quiet", "--rates",
            "0.5", "--methods", "elbo", "--window", str(WINDOW), "--overlap", str(OVERLAP)]
    r = runner.invoke(app, base)
    assert r.exit_code == 0, r.output
    assert 0 < float(_table_cell(r.output, "elbo", "ST-LPIPS")) < 2
    assert float(_table_cell(r.output, "elbo", "SSIM")) < 1
    r = runner.invoke(app, [*base, "--lpips", "none"])
    assert r.exit_code == 0 and _table_cell(r.output, "elbo", "ST-LPIPS") == "-"
    r = runner.invoke(app, [*base, "--lpips", "squeeze"])
    assert r.exit_code == 2 and "unknown network" in r.output
    if vgg_weights_path() is None:  # VGG is not shipped: a model problem with the way to fix it
        r = runner.invoke(app, [*base, "--lpips", "vgg"])
        assert r.exit_code == 6 and "pip install --no-deps stlpips-pytorch" in r.output
