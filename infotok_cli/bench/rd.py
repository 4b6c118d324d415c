"""Rate-distortion: every method of `infotok eval` on the samples and the dev set, and ST-LPIPS's speed."""

from __future__ import annotations

import statistics
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from ..coding.tokenizer import Tokenizer
from ..eval.clips import fit_frame, looped_frames, prepare
from ..eval.evaluate import METHODS, EvalReport, evaluate, plot_rd
from ..eval.perceptual import STLPIPS, ReferenceScorer, frames_distance, load_stlpips
from ..eval.tables import fmt, markdown_table
from .common import Plan, log

# What the sender runs per window before coding, by placement (the Rate-distortion section's passes).
SENDER_PASSES = {
    "predicted": "the encoder alone, the router head placing the tokens",
    "probe-gain": "the encoder and the two probe decodes, and the full-rate decode unless the weights carry "
                  "e_ref_probe",
    "drop-gain": "the encoder, the full-rate decode and the two probe decodes",
    "error": "the encoder and the full-rate decode",
}



def per_video_table(report: EvalReport, rate: float) -> str:
    """PSNR of each method per video at one rate (fixed: keep 1)."""
    methods = [m for m in METHODS if any(r.method == m for r in report.rows)]
    lines = ["| video | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for video in report.settings["videos"]:
        cells = []
        for m in methods:
            r = next((r for r in report.rows if r.video == video and r.method == m
                      and r.rate == (1.0 if m == "fixed" else rate)), None)
            cells.append(fmt(r.psnr, 2) if r else "-")
        lines.append(f"| {video} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lpips_speed(model: STLPIPS, clip: Path, runs: int) -> tuple[float, float]:
    """Milliseconds per 256x256 frame pair of ST-LPIPS on 8 real frames of `clip` against a noisy copy,
    batched as `infotok eval` does: (reference and reconstruction both through the trunk, reconstruction
    only with the reference's features cached). Medians of `runs` runs after a warm-up."""
    frames = np.stack([fit_frame(f, (256, 256)) for f in islice(looped_frames(clip, 8), 8)])
    noisy = np.clip(frames + np.random.default_rng(0).normal(0, 10, frames.shape), 0, 255).astype(np.uint8)
    frames_distance(model, frames, noisy)  # warm-up
    both, cached = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        frames_distance(model, frames, noisy)
        both.append(time.perf_counter() - t0)
        scorer = ReferenceScorer(model)
        scorer.score(0, frames, noisy)  # fills the cache
        t0 = time.perf_counter()
        scorer.score(0, frames, noisy)
        cached.append(time.perf_counter() - t0)
    return 1000 * statistics.median(both) / len(frames), 1000 * statistics.median(cached) / len(frames)


def matched_table(report: EvalReport) -> str:
    lines = ["| rate | keep: ELBO | keep: search | tokens saved by ELBO | PSNR: ELBO | PSNR: search | "
             "passes/window: ELBO | passes/window: search | encode s: ELBO | encode s: search |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for m in report.matched():
        lines.append(
            f"| {m['rate']:g} | {fmt(m['elbo_keep_rate'])} | {fmt(m['search_keep_rate'])} | "
            f"{fmt(100 * m['token_saving'] if m['token_saving'] is not None else None, 1)}% | "
            f"{fmt(m['elbo_psnr'], 2)} | {fmt(m['search_psnr'], 2)} | {fmt(m['elbo_passes_per_window'], 1)} | "
            f"{fmt(m['search_passes_per_window'], 1)} | {fmt(m['elbo_encode_seconds'], 2)} | "
            f"{fmt(m['search_encode_seconds'], 2)} |")
    return "\n".join(lines)



def rd_section(tok: Tokenizer, clips: list[Path], notes: list[str], samples: list[Path], content: Path, tmp: Path,
               plot_dir: Path, plan: Plan, lpips: str, lpips_native: bool, device: torch.device) -> list[str]:
    """The markdown of the rate-distortion section; its plots are written to `plot_dir`."""
    perceptual = None if lpips == "none" else load_stlpips(lpips, device)
    md = ["## Rate-distortion", "",
           "Every method of `infotok eval` (see `infotok eval --help`): `elbo` = the router (top-k by "
           f"the model's default placement, `{tok.placement}`, the same rate in every window), "
           "`elbo-error` = the same with the paper's "
           "placement (top-k by full-rate error), `elbo-global` = the global strategy "
           "(realised rate reported), `random` / `raster` = the same token count per window placed "
           "uniformly at random / as raster prefixes, `search` = ElasticTok-style binary search for the "
           "smallest raster prefix per window whose MSE reaches the router's, `fixed` = all tokens, "
           "`x264` / `x265` = PyAV's libx264 / libx265 (preset medium, lowest CRF whose raw stream fits "
           "in the router's .itok size). PSNR = 20 log10(255/sqrt(MSE over the whole video)) and SSIM = "
           "mean per-frame SSIM, both averaged over videos; ST-LPIPS = mean per-frame shift-tolerant "
           "LPIPS (infotok_cli/eval/perceptual.py, frames in [-1, 1] at the table's resolution; lower is "
           "better), averaged over videos; bits/pixel from the real file sizes; "
           "passes = sender-side network passes per window (`elbo-error`: the encoder and the full-rate "
           f"decode; the other token methods: {SENDER_PASSES[tok.placement]}).", ""]
    if notes:
        md += ["Notes: " + "; ".join(notes) + ".", ""]
    if perceptual is not None:
        torch_threads = torch.get_num_threads()
        ms_both, ms_cached = lpips_speed(perceptual, content, plan.runs)
        md += [f"ST-LPIPS ({lpips}) on {device.type} with {torch_threads} threads: "
               f"{ms_both:.0f} ms per 256x256 frame pair, {ms_cached:.0f} ms with the reference's "
               f"features cached (as in `infotok eval`, which computes them once per video); medians "
               f"of {plan.runs} run(s) of 8 frames."
               + ("" if lpips_native else " Not measured at native resolution (`--lpips-native`)."),
               ""]
    groups: list[tuple[str, str, list[Path], list[float], list[str] | None]] = []
    crops = [prepare(c, tmp / f"{c.stem}-256x256.mp4", (256, 256), plan.rd_frames) for c in clips]
    natives = [prepare(c, tmp / c.name, None, plan.rd_frames) for c in clips]
    if samples:
        sample_clips = [prepare(c, tmp / f"sample-{c.name}", None, plan.rd_frames) for c in samples]
        groups.append(("Sample videos (samples/*.mp4)", "rd-samples.png", sample_clips, plan.rates, None))
    if crops:
        groups.append(("Dev set at 256x256 (short side scaled to 256, centre crop)", "rd.png", crops,
                       plan.rates, None))
        groups.append(("Dev set at native resolution", "rd-native.png", natives, plan.native_rates,
                       plan.native_methods))
    for title, png, paths, rates, methods in groups:
        log(f"rd: {title} ({len(paths)} clips)")
        g0 = time.perf_counter()
        native = png == "rd-native.png"
        report = evaluate(paths, tok, rates, methods,
                          progress=lambda d, n, label: log(f"  {d}/{n} {label}"),
                          lpips=None if native and not lpips_native else perceptual)
        plot_rd(report, plot_dir / png, title=f"{title}: mean over {len(paths)} clips", overwrite=True)
        sizes = sorted({f"{r.width}x{r.height}" for r in report.rows})
        md += [f"### {title}", "",
               f"{len(paths)} clips ({', '.join(report.settings['videos'])}), first {plan.rd_frames} "
               f"frames, sizes {', '.join(sizes)}; {time.perf_counter() - g0:.0f} s.", "",
               markdown_table(report), "", f"![{title}]({png})", "",
               f"PSNR per video at rate {0.5 if 0.5 in rates else rates[0]:g} (fixed: rate 1):", "",
               per_video_table(report, 0.5 if 0.5 in rates else rates[0]), ""]
        skipped = {(s["method"], s["video"]): s["reason"] for s in report.settings["skipped"]}
        if skipped:
            md += ["Skipped: " + "; ".join(f"{m} on {v} ({why})" for (m, v), why in skipped.items())
                   + ".", ""]
        if report.matched():
            md += ["ELBO router vs binary search at matched quality (search threshold = the MSE the "
                   "router reached on each video at that rate):", "", matched_table(report), ""]

    return md
