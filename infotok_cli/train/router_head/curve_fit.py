"""Fit the router head's rate curve on the lines of `curves` and report how well it
predicts, on windows of held-out training clips.

The curve is linear in the standardised window summary (router_head.window_summary): one ridge
regression for the full-rate PSNR and one per keep rate for the log of the PSNR drop below it. The
report gives, on the held-out windows: the mean absolute error of the full-rate PSNR and of the PSNR at
each rate, and the decodes `--target-psnr`'s search (rate.tokens_for_quality) makes at targets 0.5, 1.5
and 3 dB below each window's full-rate PSNR and at fixed targets, on each window's measured curve
(linear between the measured rates): with the curve (the full-rate decode only where the search needs
it) against without it (the full-rate decode, then the secant search from half the window).

    python -m infotok_cli.train.router_head curve-fit --data curves.jsonl
    python -m infotok_cli.train.router_head curve-fit --data curves.jsonl \
        --attach infotok_cli/weights/infotok-m.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from ...coding.rate import tokens_for_quality
from ...model.router_head import SUMMARY_FEATURES, HeadConfig, RateCurve, RouterHead
from ...model.store import add_router_head, load_model, read_metadata
from . import PROG
from .fit import is_val

MIN_DROP = 0.02  # dB: drops below this (noise at high rates) are fitted as this
OFFSETS = (0.5, 1.5, 3.0)  # targets below each window's full-rate PSNR
FIXED_TARGETS = (26.0, 29.0, 32.0)


def load_lines(paths: list[str]) -> list[dict]:
    lines = []
    for path in paths:
        with open(path) as f:
            lines += [json.loads(line) for line in f if line.strip()]
    return lines


def fit(lines: list[dict], ridge: float) -> dict[str, np.ndarray]:
    x = np.array([d["summary"] for d in lines], dtype=np.float64)
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = np.concatenate([(x - mean) / std, np.ones((len(x), 1))], 1)
    full = np.array([d["full"] for d in lines])
    drops = np.log(np.maximum(full[:, None] - np.array([d["psnr"] for d in lines]), MIN_DROP))
    y = np.concatenate([full[:, None], drops], 1)
    penalty = ridge * np.eye(z.shape[1])
    penalty[-1, -1] = 0  # the bias is not shrunk
    coef = np.linalg.solve(z.T @ z + penalty, z.T @ y)  # [F+1, 1+R]
    return {"mean": mean, "std": std, "weight": coef[:-1].T, "bias": coef[-1]}


def curve_head(params: dict[str, np.ndarray], rates: tuple[float, ...], base: RouterHead | None = None) -> RouterHead:
    """`base` (else a bare head, enough for RouterHead.rate_curve) with the fitted rate curve."""
    head = RouterHead(HeadConfig(**{**(base.cfg.__dict__ if base else {}), "curve_rates": rates}))
    if base is not None:
        head.load_state_dict({k: v for k, v in base.state_dict().items() if not k.startswith("curve_")}, strict=False)
    for name in ("mean", "std", "weight", "bias"):
        getattr(head, f"curve_{name}").copy_(torch.tensor(params[name], dtype=torch.float32))
    return head.eval()


def curve_of(head: RouterHead, d: dict) -> RateCurve:
    return head.rate_curve(torch.tensor(d["summary"]))


def measured(d: dict):
    """PSNR at k tokens on the window's measured curve, linear between the measured counts."""
    counts = [*d["counts"], d["capacity"]]
    values = [*d["psnr"], d["full"]]
    return lambda k: float(np.interp(k, counts, values))


def search_stats(lines: list[dict], head: RouterHead | None) -> dict:
    passes, over, short = [], [], 0
    for d in lines:
        n, psnr_at = d["capacity"], measured(d)
        targets = [d["full"] - o for o in OFFSETS] + list(FIXED_TARGETS)
        for target in targets:
            if head is None:
                r = tokens_for_quality(n, psnr_at, target, d["full"])
                passes.append(1 + r.probes)  # the full-rate decode, then the search
            else:
                curve = curve_of(head, d)
                r = tokens_for_quality(n, psnr_at, target, estimate=lambda k, c=curve, n=n: c.psnr(k / n))
                passes.append(r.probes)
            if r.reached:
                over.append(r.psnr - target)
            else:
                short += 1
    return {"decodes": float(np.mean(passes)), "above_target": float(np.mean(over)), "short": short,
            "searches": len(passes)}


def report(train: list[dict], held: list[dict], head: RouterHead) -> dict:
    rates = head.cfg.curve_rates
    curves = [curve_of(head, d) for d in held]
    full_err = np.mean([abs(c.full_psnr - d["full"]) for c, d in zip(curves, held)])
    rate_err = {r: float(np.mean([abs(c.psnr(r) - d["psnr"][i]) for c, d in zip(curves, held)]))
                for i, r in enumerate(rates)}
    return {"train_windows": len(train), "held_out_windows": len(held),
            "held_out_clips": sorted({d["meta"]["clip"] for d in held}),
            "full_psnr_mae": float(full_err), "psnr_mae": rate_err,
            "search_with_curve": search_stats(held, head),
            "search_without_curve": search_stats(held, None)}


def attach(weights: str, params: dict, rates: tuple[float, ...], summary: dict) -> str:
    base = load_model(weights).router_head
    if base is None:
        raise SystemExit(f"{weights} has no router head to add a rate curve to")
    training = json.loads(read_metadata(weights).get("router_head_training", "{}") or "{}")
    training["rate_curve"] = summary
    return add_router_head(weights, curve_head(params, rates, base), weights, training)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=f"{PROG} curve-fit", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--ridge", type=float, default=1.0)
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--attach", default=None, metavar="WEIGHTS",
                    help="Refit on every window and write the curve into these weights' router head.")
    args = ap.parse_args(argv)
    lines = load_lines(args.data)
    rates = tuple(lines[0]["rates"])
    if any(tuple(d["rates"]) != rates for d in lines) or len(lines[0]["summary"]) != len(SUMMARY_FEATURES):
        raise SystemExit("the lines differ in rates or summary size")
    held = [d for d in lines if is_val(d["meta"]["clip"], args.val_fraction)]
    train = [d for d in lines if not is_val(d["meta"]["clip"], args.val_fraction)]
    result = report(train, held, curve_head(fit(train, args.ridge), rates))
    result["ridge"] = args.ridge
    print(json.dumps(result, indent=1))
    if args.attach:
        summary = {"windows": len(lines), "ridge": args.ridge, "held_out": {
            k: result[k] for k in ("full_psnr_mae", "search_with_curve", "search_without_curve")}}
        sha = attach(args.attach, fit(lines, args.ridge), rates, summary)
        print(f"wrote {args.attach} ({sha[:12]})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
