"""Quality control: `--target-psnr` against its targets, against `--beta` and against the search."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..coding.compress import compress_video
from ..coding.tokenizer import Tokenizer
from ..eval.clips import prepare
from ..eval.tables import fmt
from ..io.video import probe_video
from .common import log

QUALITY_OFFSETS = (0.5, 1.5, 3.0)  # targets: dB below each clip's full-rate PSNR
QUALITY_BETAS = (0.0625, 0.125, 0.25, 0.5, 0.75, 1.0)  # the --beta curve the target runs are compared with


def tokens_at_psnr(curve: list[tuple[float, int]], psnr: float) -> float | None:
    """Tokens the --beta curve needs for `psnr` (linear in PSNR between measured points; None outside)."""
    pts = sorted(curve)
    for (p0, k0), (p1, k1) in zip(pts, pts[1:]):
        if p0 <= psnr <= p1:
            return k0 if p1 == p0 else k0 + (psnr - p0) * (k1 - k0) / (p1 - p0)
    return None


def quality_rows(tok: Tokenizer, clips: list[Path], frames: int, tmp: Path) -> list[dict]:
    """Per clip (256x256) and target: `--target-psnr` against its target per window, against `--beta` at the
    same whole-video PSNR, and against the ElasticTok-style search for the same per-window target."""
    from infotok_cli.eval.baselines import compress_search
    from infotok_cli.eval.evaluate import measure_itok

    # the full-rate decode --target-psnr makes before its search where the placement skips it (not with the
    # head's rate curve: the search then decodes the full rate only if it needs it, and counts it)
    up_front = int(tok.skips_full_decode and not tok.predicts_quality)
    rows = []
    for clip in clips:
        src = prepare(clip, tmp / f"q-{clip.stem}.mp4", (256, 256), frames)
        info = probe_video(src)
        dst = tmp / "q.itok"
        full = compress_video(src, dst, tok, target_psnr=99, overwrite=True)  # keeps all: full-rate PSNR
        curve = []
        for beta in QUALITY_BETAS:
            r = compress_video(src, dst, tok, beta=beta, overwrite=True)
            curve.append((measure_itok(src, info, dst, tok).psnr, r.tokens_kept))
        for offset in QUALITY_OFFSETS:
            target = round(float(np.mean(full.window_psnr)) - offset, 2)
            r = compress_video(src, dst, tok, target_psnr=target, overwrite=True)
            psnr = measure_itok(src, info, dst, tok).psnr
            s = compress_search(src, tmp / "q-search.itok", tok, info, 255.0**2 / 10 ** (target / 10))
            rows.append({
                "clip": clip.name, "offset": offset, "target": target, "window_psnr": r.window_psnr,
                "short": r.windows_short, "at_floor": [k < 1 / 16 + 2e-3 for k in r.window_rates],
                "tokens": r.tokens_kept, "capacity": r.tokens_max, "psnr": psnr,
                "beta_tokens": tokens_at_psnr(curve, psnr),
                "passes": tok.router_passes + up_front + float(np.mean(r.search_probes)),
                "search_passes": 1 + float(np.mean(s.probes)), "search_tokens": sum(s.tokens),
                "seconds": r.seconds, "search_seconds": s.seconds,
            })  # fmt: skip
            log(f"quality {clip.name} target {target}: keep {r.keep_rate:.3f}, PSNR {psnr:.2f}, "
                f"passes {rows[-1]['passes']:.1f} vs search {rows[-1]['search_passes']:.1f}")
    return rows




def quality_section(tok: Tokenizer, clips: list[Path], frames: int) -> list[str]:
    """The markdown of the --target-psnr section (dev set at 256x256)."""
    with tempfile.TemporaryDirectory(prefix="infotok-bench-q-") as tmpdir:
        rows = quality_rows(tok, clips, frames, Path(tmpdir)) if clips else []
    md = ["## Quality control (`--target-psnr`)", "",
          f"Dev set at 256x256 (the clips of the rate-distortion section), first {frames} frames, window 33. "
          "Targets are set per clip at 0.5, 1.5 and 3 dB below its mean full-rate window PSNR. Per window: "
          "achieved - target over the windows that reach it, excluding those already at the 1/16 floor "
          "(they cannot land closer); `short` = windows that cannot reach the target even keeping everything. "
          "`--beta` tokens at equal PSNR = the global strategy's token count at the whole-video PSNR the target "
          f"run reached, interpolated on its curve at beta {', '.join(f'{b:g}' for b in QUALITY_BETAS)} (each "
          "measured by decoding). Passes per window: `--target-psnr` = encode + "
          + ("the search's decodes, started from the router head's rate curve (a full-rate decode only "
             "where the search needs one)" if tok.predicts_quality else
             "full-rate decode + " + ("" if tok.placement == "predicted" else "the two probe decodes + ")
             + "the search's decodes")
          + f" (placement `{tok.placement}`); ElasticTok-style search (`infotok eval`'s `search`, "
          "raster-prefix placement, binary search for the same per-window PSNR) = encode + its decodes.", ""]
    if not rows:
        return md + ["No dev-set clips found: nothing measured.", ""]
    md += ["| target below full rate | windows | short | at floor | mean above target | worst above target "
           "| within 0.5 dB | tokens saved vs --beta | passes/window | search passes/window | search tokens / ours |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for offset in QUALITY_OFFSETS:
        g = [r for r in rows if r["offset"] == offset]
        dev = [p - r["target"] for r in g for p, fl in zip(r["window_psnr"], r["at_floor"]) if p >= r["target"]
               and not fl]
        saved = [1 - r["tokens"] / r["beta_tokens"] for r in g if r["beta_tokens"]]
        n = sum(len(r["window_psnr"]) for r in g)
        md.append(f"| {offset:g} dB | {n} | {sum(r['short'] for r in g)} | {sum(sum(r['at_floor']) for r in g)} | "
                  f"{fmt(float(np.mean(dev)) if dev else None, 2)} dB | {fmt(max(dev) if dev else None, 2)} dB | "
                  f"{sum(d <= 0.5 for d in dev)}/{len(dev)} | "
                  f"{fmt(100 * float(np.mean(saved)) if saved else None, 1)}% ({len(saved)} clips) | "
                  f"{np.mean([r['passes'] for r in g]):.1f} | {np.mean([r['search_passes'] for r in g]):.1f} | "
                  f"{sum(r['search_tokens'] for r in g) / sum(r['tokens'] for r in g):.2f} |")
    md.append("")
    return md

