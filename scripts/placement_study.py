"""Which positions should keep their tokens? Placement rules compared on the dev set, same weights.

Each dev clip (scripts/dev_quality.py's set: 256x256 centre crop, first 33 frames, one window) is encoded
once; every rule then keeps the same k = round(rate x N) positions' worth of tokens, and the PSNR of the
decoded window is measured (20 log10(255 / sqrt(MSE over the video)), averaged over clips). Rules:

* error: top-k of the full-rate error (the paper's router; `--placement error`);
* random: uniformly random positions (seeded);
* dropped: top-k of the error when dropped, from two probe decodes that each send one half of the
  tokens (router.probe_half and its complement);
* drop-gain: dropped minus the full-rate error (router.drop_gain; the default placement);
* drop-gain-half-error: dropped minus half the full-rate error;
* drop-gain-2-pairs: drop gain averaged over two pairs of probe halves (four probe decodes);
* checkerboard: drop gain with a spatio-temporal checkerboard instead of a random half;
* k-probes (rates below 0.5): drop gain from two probes that each send a disjoint random k tokens;
* deviation: how far dropping a position moves the decoded pixels from the full-rate decode (mean
  |x_probe - x_full| over the position's pixels, same two probe halves as drop-gain);
* latent-deviation: the same in latent space, on the decompressor's output (mean |y_probe - y_full|
  over the latent dimensions), so its probes skip the pixel decoder. The seconds a probe pair takes
  to decompress and to decode in full are printed per clip;
* probe-gain: each position's error in the probe that drops it minus its error in the probe that
  sends it x e_ref / e_ref_probe (the default placement: no full-rate decode); probe-gain-unscaled
  without the factor;
* drop-gain-frames-2, drop-gain-frames-4: drop gain from probe decodes of every 2nd / 4th frame
  only (the full-rate error likewise), which cuts the probes' pixel decoding to 1/2 / 1/4.

    python scripts/placement_study.py --model FILE_OR_NAME [--rates 0.5,0.25]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from infotok_cli.coding.geometry import to_frames
from infotok_cli.coding.metrics import psnr_video
from infotok_cli.coding.rate import tokens_for_rate
from infotok_cli.coding.router import position_error, probe_half, random_mask, top_k_mask
from infotok_cli.coding.tokenizer import Tokenizer
from infotok_cli.eval.clips import prepare
from infotok_cli.io.video import iter_frames
from infotok_cli.model.store import load_model
from infotok_cli.train.data import dev_clips

ROOT = Path(__file__).resolve().parent.parent


def study(tok: Tokenizer, frames: np.ndarray, rates: list[float]) -> dict[float, dict[str, float]]:
    n_frames, height, width, _ = frames.shape
    a = tok.analyse(frames, 0, (height, width))
    x = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    full = a.error
    shape, n = tuple(full.shape), full.numel()

    def error_when(keep: torch.Tensor) -> torch.Tensor:
        return position_error(x, tok.reconstruct(a.indices, keep).float())[0]

    def when_dropped(half: torch.Tensor, at_half: torch.Tensor, at_rest: torch.Tensor) -> torch.Tensor:
        """Each position's value from the probe that drops it (`half` sends it, so `~half` drops it)."""
        return torch.where(half, at_rest, at_half)

    def dropped_error(half: torch.Tensor) -> torch.Tensor:
        return when_dropped(half, error_when(half), error_when(~half))

    keep_all = torch.ones(shape, dtype=torch.bool)
    x_full = tok.reconstruct(a.indices, keep_all).float()
    codes = tok.model.quantizer.indices_to_codes(a.indices[None])

    def latents(keep: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), tok.autocast():
            return tok.model.decompress(codes, keep[None]).float()[0]

    # The drop-gain probe pair, decoded once for the rules that share it.
    half = probe_half(shape)
    y_full = latents(keep_all)
    t0 = time.perf_counter()
    y_half, y_rest = latents(half), latents(~half)
    t1 = time.perf_counter()
    x_half, x_rest = tok.reconstruct(a.indices, half).float(), tok.reconstruct(a.indices, ~half).float()
    t2 = time.perf_counter()
    print(f"probe pair: decompress {t1 - t0:.3f} s, full decode {t2 - t1:.3f} s", file=sys.stderr)
    error_half, error_rest = position_error(x, x_half)[0], position_error(x, x_rest)[0]
    dropped = when_dropped(half, error_half, error_rest)
    sent = when_dropped(~half, error_half, error_rest)  # from the probe that sends each position
    deviation = when_dropped(half, position_error(x_full, x_half)[0], position_error(x_full, x_rest)[0])
    latent_deviation = when_dropped(half, (y_half - y_full).abs().mean(-1), (y_rest - y_full).abs().mean(-1))

    def strided_drop_gain(stride: int) -> torch.Tensor:
        xs = x[:, :, ::stride]
        with torch.no_grad(), tok.autocast():
            at_half, at_rest = (position_error(xs, tok.model.decode(codes, keep[None], stride).float(), stride)[0]
                                for keep in (half, ~half))
        return when_dropped(half, at_half, at_rest) - position_error(xs, x_full[:, :, ::stride], stride)[0]

    def psnr(keep: torch.Tensor) -> float:
        return psnr_video(to_frames(tok.reconstruct(a.indices, keep), n_frames, height, width), frames)

    second = dropped_error(probe_half(shape, torch.Generator().manual_seed(1)))
    t, i, j = torch.meshgrid(*(torch.arange(d) for d in shape), indexing="ij")
    checker = dropped_error((t + i + j) % 2 == 0)
    scores = {"error": full, "dropped": dropped, "drop-gain": dropped - full,
              "probe-gain": dropped - sent * tok.probe_scale,
              "probe-gain-unscaled": dropped - sent,
              "drop-gain-half-error": dropped - full / 2, "drop-gain-2-pairs": (dropped + second) / 2 - full,
              "checkerboard": checker - full, "deviation": deviation, "latent-deviation": latent_deviation,
              "drop-gain-frames-2": strided_drop_gain(2), "drop-gain-frames-4": strided_drop_gain(4)}
    out: dict[float, dict[str, float]] = {}
    for rate in rates:
        k = tokens_for_rate(rate, n)
        row = {name: psnr(top_k_mask(score, k)) for name, score in scores.items()}
        row["random"] = psnr(random_mask(shape, k, torch.Generator().manual_seed(0)))
        if 2 * k <= n:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(2))
            groups = [torch.zeros(n, dtype=torch.bool) for _ in range(2)]
            groups[0][perm[:k]], groups[1][perm[k:2 * k]] = True, True
            errors = [error_when(g.view(shape)) for g in groups]
            count = sum((~g.view(shape)).float() for g in groups)
            when_dropped = sum(torch.where(g.view(shape), 0.0, e) for g, e in zip(groups, errors)) / count
            row["k-probes"] = psnr(top_k_mask(when_dropped - full, k))
        out[rate] = row
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="Shipped model name or .safetensors path.")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "train"),
                    help="Training corpus folder (its held-back clips join the dev set).")
    ap.add_argument("--rates", default="0.5,0.25")
    args = ap.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    tok = Tokenizer(load_model(args.model, "cpu"), "cpu")
    results: dict[float, list[dict[str, float]]] = {r: [] for r in rates}
    with tempfile.TemporaryDirectory(prefix="infotok-placement-") as tmpdir:
        for clip in dev_clips(Path(args.data)):
            src = prepare(clip, Path(tmpdir) / f"{clip.stem}.mp4", (256, 256), 33)
            frames = np.stack(list(iter_frames(src)))
            for rate, row in study(tok, frames, rates).items():
                results[rate].append(row)
                print(f"{clip.name} keep {rate:g}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()),
                      file=sys.stderr)
    print("| placement | " + " | ".join(f"keep {r:g} (dB)" for r in rates) + " |")
    print("|---|" + "---|" * len(rates))
    names = list(dict.fromkeys(k for rows in results.values() for row in rows for k in row))
    for name in names:
        cells = [f"{np.mean([row[name] for row in results[r]]):.2f}" if all(name in row for row in results[r])
                 else "-" for r in rates]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
