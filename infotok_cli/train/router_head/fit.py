"""Train the router head on the windows of `data`, the tokenizer frozen.

Recipes (--recipe):
  mse   MSE between the head's score and the per-window standardised probe-gain score.
  rank  gain-weighted pairwise logistic loss (RankNet on random position pairs of a window, each pair
        weighted by the difference of their standardised targets: misordering two positions costs about
        the difference of their gains) + 0.1 x the MSE term.
Both add the MSE of the per-position log full-rate error and of the log window-mean full-rate error
(x --err-weight). Windows of a few training clips (by a hash of the clip name) are held out to pick the
checkpoint: the share of the achievable gain the predicted top k captures at keep 0.5 and 0.25
(1 = as good as the probe score itself, 0 = random placement).

    python -m infotok_cli.train.router_head fit --data router-data --recipe rank --minutes 20 --out head.safetensors

Put a trained head into a model's weights with `python -m infotok_cli.train.router_head attach HEAD
--weights infotok_cli/weights/infotok-m.safetensors` (store.add_router_head: the tokens' identity is kept).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...model.router_head import FEATURES, HeadConfig, RouterHead, load_head_file, save_head_file
from ...model.store import add_router_head
from . import PROG


def load_window(path: str, features: tuple[str, ...] = FEATURES) -> dict:
    d = np.load(path)
    meta = json.loads(str(d["meta"]))
    x = np.concatenate([d[n] for n in features], 0)  # float16 [C,t,h,w]
    gain = d["dropped"] - d["sent"] * meta["probe_scale"]
    g = (gain - gain.mean()) / (gain.std() + 1e-8)
    return {"x": torch.from_numpy(x), "g": torch.from_numpy(g.astype(np.float32)),
            "gain": torch.from_numpy(gain.astype(np.float32)),
            "logerr": torch.from_numpy(np.log(d["full"].astype(np.float32) + 1e-5)),
            "clip": meta["clip"], "path": path}


def is_val(clip: str, fraction: float) -> bool:
    return int(hashlib.sha1(clip.encode()).hexdigest()[:8], 16) / 2**32 < fraction


def captured(score: torch.Tensor, gain: torch.Tensor, rate: float) -> float:
    """Sum of the true gain over the predicted top k, over the best possible sum, minus the random
    baseline's, as a fraction (1 = as good as the probe score, 0 = random)."""
    flat_s, flat_g = score.reshape(-1), gain.reshape(-1)
    k = max(1, round(rate * flat_g.numel()))
    best = flat_g.topk(k).values.sum()
    got = flat_g[flat_s.topk(k).indices].sum()
    rand = flat_g.mean() * k
    return float((got - rand) / (best - rand + 1e-12))


def pair_loss(s: torch.Tensor, g: torch.Tensor, pairs: int, gen: torch.Generator) -> torch.Tensor:
    """Gain-weighted RankNet loss on random pairs within each window. s, g: [B,N]."""
    b, n = s.shape
    i = torch.randint(0, n, (b, pairs), generator=gen)
    j = torch.randint(0, n, (b, pairs), generator=gen)
    dg = g.gather(1, i) - g.gather(1, j)
    ds = s.gather(1, i) - s.gather(1, j)
    w = dg.abs()
    return (w * F.softplus(-torch.sign(dg) * ds)).sum() / (w.sum() + 1e-8)


def attach(head_path: str, weights: str) -> int:
    """Put the head into the weights file (in place, atomically), keeping the tokens' identity."""
    head, summary = load_head_file(head_path)
    sha = add_router_head(weights, head, weights, summary)
    print(f"{weights}: router head {Path(head_path).name} attached (file sha256 {sha[:12]})", file=sys.stderr)
    return 0


def attach_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=f"{PROG} attach", description="Put a trained router head into a model's "
                                 "weights file (in place, atomically), keeping the tokens' identity.")
    ap.add_argument("head", metavar="HEAD", help="The head file `fit` wrote.")
    ap.add_argument("--weights", required=True, help="The weights file to write the head into.")
    args = ap.parse_args(argv)
    return attach(args.head, args.weights)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=f"{PROG} fit", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="router-data")
    ap.add_argument("--recipe", choices=("mse", "rank"), default="rank")
    ap.add_argument("--out", default=None)
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--max-steps", type=int, default=100000)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--width", type=int, default=48)
    ap.add_argument("--dilations", default="1,2,4")
    ap.add_argument("--features", default=",".join(FEATURES),
                    help=f"The head's inputs, in this order (of {', '.join(FEATURES)}).")
    ap.add_argument("--val-fraction", type=float, default=0.08)
    ap.add_argument("--pairs", type=int, default=8192)
    ap.add_argument("--err-weight", type=float, default=0.3)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--reload-every", type=int, default=500, help="steps between re-scans for new windows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    features = tuple(args.features.split(","))
    if not features or set(features) - set(FEATURES):
        ap.error(f"--features: choose from {', '.join(FEATURES)}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out or f"head-{args.recipe}.safetensors")
    log_path = out.with_suffix(".log.jsonl")

    windows: dict[str, dict] = {}

    def scan() -> None:
        for p in sorted(glob.glob(f"{args.data}/w*_*.npz")):
            if p.endswith(".tmp.npz") or p in windows:
                continue
            try:
                windows[p] = load_window(p, features)
            except Exception as exc:  # a file being written
                print(f"skip {p}: {exc}", file=sys.stderr)

    scan()
    train = [w for w in windows.values() if not is_val(w["clip"], args.val_fraction)]
    val = [w for w in windows.values() if is_val(w["clip"], args.val_fraction)]
    print(f"{len(train)} train windows, {len(val)} val windows "
          f"(val clips {sorted({w['clip'] for w in val})})", file=sys.stderr)
    if not windows:
        print(f"no windows in {args.data}", file=sys.stderr)
        return 1
    cfg = HeadConfig(in_channels=int(next(iter(windows.values()))["x"].shape[0]), width=args.width,
                     dilations=tuple(int(d) for d in args.dilations.split(",")), features=features,
                     recipe=args.recipe)
    head = RouterHead(cfg)
    for block in head.blocks:  # each residual block starts close to the identity
        torch.nn.init.zeros_(block.temporal.bias)
        block.temporal.weight.data.mul_(0.3)
    with torch.no_grad():  # input standardisation and the log-error scale from the training windows
        xs = torch.stack([w["x"].float().flatten(1) for w in train[:200]], 0)  # [W,C,N]
        head.in_mean.copy_(xs.mean((0, 2)))
        head.in_std.copy_(xs.std((0, 2)).clamp_min(1e-3))
        le = torch.stack([w["logerr"].flatten() for w in train[:200]])
        head.err_shift.fill_(float(le.mean()))
        head.err_scale.fill_(float(le.std()))
        del xs
    print(f"head {sum(p.numel() for p in head.parameters())} parameters, {head.flops_per_position()} FLOP per position",
          file=sys.stderr)
    opt = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=1e-4, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(args.seed)
    t_start = time.time()
    budget = 60 * args.minutes
    best = -math.inf
    step = 0

    def evaluate() -> dict:
        head.eval()
        c5, c25, corr, err = [], [], [], []
        with torch.no_grad():
            for w in val:
                s, le = head(w["x"][None].float())
                c5.append(captured(s[0], w["gain"], 0.5))
                c25.append(captured(s[0], w["gain"], 0.25))
                corr.append(float(torch.corrcoef(torch.stack([s[0].flatten(), w["g"].flatten()]))[0, 1]))
                err.append(float(le[0].exp().mean().log() - w["logerr"].exp().mean().log()))
        head.train()
        return {"cap@0.5": float(np.mean(c5)), "cap@0.25": float(np.mean(c25)), "corr": float(np.mean(corr)),
                "logerr_rmse": float(np.sqrt(np.mean(np.square(err))))}

    losses = []
    while step < args.max_steps:
        elapsed = time.time() - t_start
        if elapsed > budget:
            break
        lr = args.lr * (min(1.0, (step + 1) / 100)) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * elapsed / budget)))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, len(train), (args.batch,), generator=gen)
        batch = [train[i] for i in idx.tolist()]
        x = torch.stack([w["x"] for w in batch]).float()
        g = torch.stack([w["g"] for w in batch])
        le_t = torch.stack([w["logerr"] for w in batch])
        s, le = head(x)
        mse = F.mse_loss(s, g)
        if args.recipe == "mse":
            loss = mse
        else:
            loss = pair_loss(s.flatten(1), g.flatten(1), args.pairs, gen) + 0.1 * mse
        err_pos = F.mse_loss(le, le_t)
        err_win = F.mse_loss(torch.logsumexp(le.flatten(1), 1), torch.logsumexp(le_t.flatten(1), 1))
        loss = loss + args.err_weight * (err_pos + err_win)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % args.eval_every == 0:
            m = evaluate()
            m |= {"step": step, "minutes": round((time.time() - t_start) / 60, 2), "loss": float(np.mean(losses)),
                  "lr": lr, "train_windows": len(train)}
            losses = []
            score = (m["cap@0.5"] + m["cap@0.25"]) / 2
            if score > best:
                best = score
                save_head_file(out, head, {"recipe": args.recipe, "step": step, "val": m,
                                            "train_windows": len(train), "val_windows": len(val),
                                            "args": vars(args)})
                m["saved"] = True
            with open(log_path, "a") as f:
                f.write(json.dumps(m) + "\n")
            print(json.dumps(m), file=sys.stderr, flush=True)
        if step % args.reload_every == 0:
            before = len(windows)
            scan()
            if len(windows) > before:
                new = list(windows.values())[before:]
                train += [w for w in new if not is_val(w["clip"], args.val_fraction)]
                # the validation set stays as first loaded, so checkpoint scores stay comparable
    print(f"done: {step} steps, best {best:.4f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
