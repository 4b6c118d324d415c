"""Rate curves for the router head's rate estimate: PSNR against keep rate of random training windows.

For random windows of the training clips (the train side of train.held_back_split, as
`data`: the held-back clips, which include the dev set's, are excluded; random frame count
of --frames, random crop of --sizes at a random scale, random horizontal flip), runs compress's own
path with placement `predicted` (Tokenizer.analyse, Tokenizer.choose: the head's dithered top k) and
decodes each window at every keep rate of --rates and with all tokens. Appends one JSON line per window
to --out:

  summary  the head's window statistics (router_head.window_summary, SUMMARY_FEATURES order)
  full     PSNR with every token
  rates, counts, psnr   keep rate, token count and PSNR of each probe
  meta     clip, start, frames, size, crop, flip, precision, seconds

`curve-fit` fits the head's rate curve on these lines.

    python -m infotok_cli.train.router_head curves --out curves.jsonl --seed 0 --minutes 30
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from ...coding.tokenizer import Tokenizer
from ...io.video import iter_frames, probe_video
from ..data import find_videos, held_back_split
from . import PROG
from .data import scaled_crop

RATES = (0.0625, 0.09375, 0.125, 0.1875, 0.25, 0.3125, 0.375, 0.4375, 0.5, 0.625, 0.75, 0.875)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=f"{PROG} curves", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="infotok-m")
    ap.add_argument("--frames", default="17,33", help="window lengths to draw from (1 + 4k)")
    ap.add_argument("--sizes", default="256x256,256x384,384x256", help="crop sizes HxW to draw from")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lengths = [int(f) for f in args.frames.split(",")]
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    train, val = held_back_split(find_videos([args.data]))
    print(f"train clips {len(train)}, excluded (val) {[v.name for v in val]}", file=sys.stderr)
    tok = Tokenizer(args.model, placement="predicted")
    infos = {p: probe_video(p) for p in train}
    rng = random.Random(args.seed)
    t_end = time.time() + 60 * args.minutes
    n = 0
    order: list[Path] = []
    with open(args.out, "a") as out:
        while time.time() < t_end:
            if not order:
                order = [p for p in train if infos[p].num_frames >= min(lengths)]
                rng.shuffle(order)
            clip = order.pop()
            info = infos[clip]
            length = rng.choice([f for f in lengths if f <= info.num_frames])
            height, width = rng.choice(sizes)
            start = rng.randint(0, info.num_frames - length)
            frames = list(islice(iter_frames(clip, info), start, start + length))
            if len(frames) < length:
                continue
            short = rng.randint(max(height, width), max(height, width, min(frames[0].shape[:2])))
            flip = rng.random() < 0.5
            square, crop = scaled_crop(frames, short, max(height, width), rng, flip)
            video = np.ascontiguousarray(square[:, :height, :width])
            t0 = time.perf_counter()
            a = tok.analyse(video, 0, (height, width))
            capacity = a.indices.numel()
            full = tok.window_psnr(a, torch.ones_like(a.indices, dtype=torch.bool), video)
            counts = [tok.token_count(r, capacity) for r in RATES]
            psnr = [tok.window_psnr(a, tok.choose(a, k), video) for k in counts]
            line = {"summary": a.summary.tolist(), "full": full, "rates": list(RATES), "counts": counts,
                    "capacity": capacity, "psnr": psnr,
                    "meta": {"clip": clip.name, "start": start, "frames": length, "size": [height, width],
                             "short": short, "flip": flip, **crop, "precision": tok.precision.name,
                             "seconds": round(time.perf_counter() - t0, 2)}}
            out.write(json.dumps(line) + "\n")
            out.flush()
            n += 1
            print(f"{n} {clip.name} {length}x{height}x{width} full {full:.2f} "
                  f"{line['meta']['seconds']}s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
