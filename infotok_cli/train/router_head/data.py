"""Training data for the router head: the head's inputs and the probe-gain targets of random windows.

For random 256x256 windows (17 frames by default; random scale of the short side, random crop, random
horizontal flip) of the training clips (the train side of train.held_back_split: the held-back
validation clips, which include the dev set's four, are excluded), runs the frozen tokenizer and writes
one .npz per window to --out:

  z, zrms, codes, pix  float16  the head's inputs (model/router_head.py extract_features)
  dropped  float32 [t,h,w]  each position's error in the probe decode that drops its token
  sent     float32 [t,h,w]  ... and in the one that sends it (a random probe half per window)
  full     float32 [t,h,w]  the full-rate error (every token sent)
  half     bool    [t,h,w]  the probe half used
  meta     json             clip, start, crop, flip, precision, e_ref / e_ref_probe

The score the head learns is dropped - sent x e_ref / e_ref_probe (Tokenizer.analyse, probe-gain). The
model runs in float32 unless --bf16. Windows are written atomically, so training can read the folder
while it fills.

    python -m infotok_cli.train.router_head data --out router-data --seed 0 --minutes 20
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from itertools import islice
from pathlib import Path

import av
import numpy as np
import torch

from ...coding.router import position_error, probe_errors, probe_half
from ...io.video import iter_frames, probe_video
from ...model.router_head import extract_features
from ...model.store import load_model
from ..data import find_videos, held_back_split
from . import PROG


def scaled_crop(frames: list[np.ndarray], short: int, size: int, rng: random.Random, flip: bool
                ) -> tuple[np.ndarray, dict]:
    fh, fw = frames[0].shape[:2]
    s = short / min(fh, fw)
    nw, nh = max(size, round(fw * s)), max(size, round(fh * s))
    y0, x0 = rng.randint(0, nh - size), rng.randint(0, nw - size)
    out = []
    for f in frames:
        if (nw, nh) != (fw, fh):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            f = vf.reformat(width=nw, height=nh, format="rgb24",
                            interpolation="AREA" if s < 1 else "BICUBIC").to_ndarray()
        f = f[y0:y0 + size, x0:x0 + size]
        out.append(f[:, ::-1] if flip else f)
    return np.ascontiguousarray(np.stack(out)), {"scaled": [nw, nh], "crop": [int(x0), int(y0)]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=f"{PROG} data", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="infotok-m")
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=15)
    ap.add_argument("--max-windows", type=int, default=100000)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, val = held_back_split(find_videos([args.data]))
    print(f"train clips {len(train)}, excluded (val) {[v.name for v in val]}", file=sys.stderr)
    loaded = load_model(args.model)
    model = loaded.model.for_inference_(torch.bfloat16 if args.bf16 else torch.float32)
    scale_probe = loaded.e_ref / loaded.e_ref_probe
    infos = {p: probe_video(p) for p in train}
    usable = [p for p in train if infos[p].num_frames >= args.frames and min(infos[p].width, infos[p].height) >= 1]
    rng = random.Random(args.seed)
    t_end = time.time() + 60 * args.minutes
    n = 0
    # go through clips in shuffled rounds so every clip contributes
    order: list[Path] = []
    while time.time() < t_end and n < args.max_windows:
        if not order:
            order = usable[:]
            rng.shuffle(order)
        clip = order.pop()
        info = infos[clip]
        start = rng.randint(0, info.num_frames - args.frames)
        frames = list(islice(iter_frames(clip, info), start, start + args.frames))
        if len(frames) < args.frames:
            continue
        native_short = min(frames[0].shape[:2])
        short = rng.randint(args.size, max(args.size, native_short))
        flip = rng.random() < 0.5
        video, crop = scaled_crop(frames, short, args.size, rng, flip)
        t0 = time.perf_counter()
        x = torch.from_numpy(video).permute(3, 0, 1, 2)[None].float().div(127.5).sub(1)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else torch.autocast("cpu", enabled=False)
        with torch.no_grad(), ctx:
            feats, codes, _ = extract_features(model, x)
            full = position_error(x, model.decode(codes))[0]
            half = probe_half(tuple(codes.shape[1:-1]), torch.Generator().manual_seed(rng.randrange(1 << 30)))
            dropped, sent = probe_errors(x, lambda keep, codes=codes: model.decode(codes, keep), half)
        dt = time.perf_counter() - t0
        meta = {"clip": clip.name, "start": start, "short": short, "flip": flip, **crop,
                "precision": "bf16" if args.bf16 else "float32", "probe_scale": scale_probe,
                "e_ref": loaded.e_ref, "e_ref_probe": loaded.e_ref_probe, "seconds": round(dt, 2)}
        name = out / f"w{args.seed:02d}_{n:05d}.npz"
        tmp = name.with_suffix(".tmp.npz")
        np.savez(tmp, **{k: v[0].float().numpy().astype(np.float16) for k, v in feats.items()},
                 dropped=dropped[0].numpy(), sent=sent[0].numpy(), full=full.numpy(), half=half.numpy(),
                 meta=np.array(json.dumps(meta)))
        tmp.rename(name)
        n += 1
        print(f"{n} {clip.name} start {start} short {short} {dt:.1f}s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
