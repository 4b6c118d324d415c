"""Measurements behind the tile defaults (coding/tiling.py, docs/USAGE.md "Tiling").

  python -m infotok_cli.bench.tiling agree --clip CLIP --size 1280x720 --frames 9 --tiles 256:64,256:128
      tiled against whole-frame coding of one window: token and keep-mask agreement, PSNR at full rate and
      at --rate, and the seam statistic (mean absolute difference across tile borders / across other
      columns and rows of the tiled reconstruction)
  python -m infotok_cli.bench.tiling speed --clip CLIP --frames 9 --tiles 768:128
      seconds per megapixel-frame of a window's analysis + decode at 256x256 and 1920x1080 (tiled and
      whole), in one process
  python -m infotok_cli.bench.tiling flex --clip CLIP --contexts 0,64,128,192,256
      InfoTok-Flex (the conformance fixture's reduced weights) on a 512x512 window in 256-pixel tiles with
      each context, against the whole frame

Clips are resized (bicubic) to the size asked for; `--model` picks the infotok model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import av
import numpy as np
import torch
from safetensors.torch import load_file

from ..coding.geometry import padded_size
from ..coding.metrics import psnr_video
from ..coding.tiling import MAX_TILE, TileSpec
from ..coding.tokenizer import Tokenizer
from ..model.flex import FlexConfig, FlexTokenizer, load_release_state_dict
from ..model.store import FLEX_ARCHITECTURE, LoadedModel

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "data" / "infotok-flex"


def read_clip(path: str, frames: int, width: int, height: int) -> np.ndarray:
    out = []
    with av.open(path) as container:
        for frame in container.decode(video=0):
            out.append(frame.reformat(width=width, height=height, format="rgb24",
                                      interpolation="BICUBIC").to_ndarray())
            if len(out) == frames:
                break
    return np.stack(out)


def seam_ratio(rec: np.ndarray, borders_x: list[int], borders_y: list[int]) -> float:
    """Mean |difference| between neighbouring columns / rows across tile borders, over that across the
    others (1: no seam)."""
    f = rec.astype(np.float32)
    dx = np.abs(f[:, :, 1:] - f[:, :, :-1]).mean(axis=(0, 1, 3))  # per column border x | x+1
    dy = np.abs(f[:, 1:] - f[:, :-1]).mean(axis=(0, 2, 3))
    at = [dx[x - 1] for x in borders_x] + [dy[y - 1] for y in borders_y]
    others_x = np.delete(dx, [x - 1 for x in borders_x])
    others_y = np.delete(dy, [y - 1 for y in borders_y])
    return float(np.mean(at) / np.mean(np.concatenate([others_x, others_y])))


def code(tok: Tokenizer, frames: np.ndarray, rate: float, full: bool = True) -> dict:
    n, h, w, _ = frames.shape
    t0, c0 = time.perf_counter(), time.process_time()
    a = tok.analyse(frames, 0, padded_size(h, w))
    keep = tok.choose(a, tok.token_count(rate, a.indices.numel()))
    rec = tok.reconstruct_frames(a.indices, keep, n, h, w)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    result = {"indices": a.indices, "keep": keep, "rec": rec, "seconds": seconds, "cpu": cpu,
              "psnr": psnr_video(rec, frames), "full_psnr": None}
    if full:
        result["full_psnr"] = psnr_video(tok.reconstruct_frames(a.indices, torch.ones_like(keep), n, h, w), frames)
    return result


def borders(tok: Tokenizer, h: int, w: int) -> tuple[list[int], list[int]]:
    tiles = tok.tile_plan(*padded_size(h, w)) or []
    xs = sorted({t.core[2] for t in tiles} - {0})
    ys = sorted({t.core[0] for t in tiles} - {0})
    return [x for x in xs if x < w], [y for y in ys if y < h]


def agree(tok: Tokenizer, frames: np.ndarray, tiles: list[tuple[int, int]], rate: float) -> list[dict]:
    n, h, w, _ = frames.shape
    tok.tile_spec = tok.tiles(MAX_TILE // tok.tile_spec.align * tok.tile_spec.align, 0)
    whole = code(tok, frames, rate)
    rows = [{"tiles": "whole", "seconds": round(whole["seconds"], 1), "psnr": round(whole["psnr"], 3),
             "full_psnr": round(whole["full_psnr"], 3),
             "seam_ratio_at_tiled_borders": None}]
    for size, halo in tiles:
        tok.tile_spec = tok.tiles(size, halo)
        bx, by = borders(tok, h, w)
        tiled = code(tok, frames, rate)
        same = whole["indices"] == tiled["indices"]
        kept_same = (whole["keep"] == tiled["keep"]) & (~whole["keep"] | same)
        diff = np.abs(tiled["rec"].astype(np.int16) - whole["rec"].astype(np.int16))
        rows.append({"tiles": f"{size}:{halo}", "count": len(tok.tile_plan(*padded_size(h, w)) or [1]),
                     "seconds": round(tiled["seconds"], 1),
                     "token_agreement": round(float(same.float().mean()), 5),
                     "keep_agreement": round(float((whole["keep"] == tiled["keep"]).float().mean()), 5),
                     "position_agreement": round(float(kept_same.float().mean()), 5),
                     "psnr": round(tiled["psnr"], 3), "full_psnr": round(tiled["full_psnr"], 3),
                     "max_abs_diff_vs_whole": int(diff.max()), "mean_abs_diff_vs_whole": round(float(diff.mean()), 4),
                     "seam_ratio": round(seam_ratio(tiled["rec"], bx, by), 4),
                     "whole_seam_ratio_same_lines": round(seam_ratio(whole["rec"], bx, by), 4)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def speed(tok: Tokenizer, clip: str, frames: int, rate: float) -> list[dict]:
    """Wall and CPU seconds per megapixel-frame of one window's analysis, placement and decode (CPU time is
    the steadier figure on a shared machine); 256x256 before and after the large frames."""
    rows = []
    tiled = tok.tile_spec
    whole = tok.tiles(MAX_TILE // tiled.align * tiled.align, 0)
    for w, h, spec in ((256, 256, tiled), (1920, 1080, tiled), (1920, 1080, whole), (256, 256, tiled)):
        tok.tile_spec = spec
        x = read_clip(clip, frames, w, h)
        result = code(tok, x, rate)
        mpix = frames * w * h / 1e6
        rows.append({"size": f"{w}x{h}", "tiles": len(tok.tile_plan(*padded_size(h, w)) or [1]),
                     "wall_s_per_mpix": round(result["seconds"] / mpix, 3),
                     "cpu_s_per_mpix": round(result["cpu"] / mpix, 3)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def flex(clip: str, frames: int, contexts: list[int], rate: float) -> list[dict]:
    cfg = FlexConfig.from_release(json.loads((FIXTURE / "small-config.json").read_text()))
    model = FlexTokenizer(cfg).eval()
    load_release_state_dict(model, load_file(FIXTURE / "small-weights.safetensors"))
    loaded = LoadedModel(model=model, config=cfg, name="flex-small", sha256="0" * 64, e_ref=0.0,
                         path=FIXTURE / "small-weights.safetensors", metadata={"architecture": FLEX_ARCHITECTURE})
    tok = Tokenizer(loaded, "cpu", precision="fp32")
    x = read_clip(clip, frames, 512, 512)
    torch.manual_seed(0)
    whole = code(tok, x, rate, full=False)
    rows = [{"context": "whole", "psnr": round(whole["psnr"], 3)}]
    print(json.dumps(rows[-1]), flush=True)
    for context in contexts:
        # 256-pixel cores, coded in tiles although 512x512 fits the rotary table
        tok.tile_spec = TileSpec(256, context, cfg.spatial_compression)
        tiled = code(tok, x, rate, full=False)
        same = whole["indices"] == tiled["indices"]
        rows.append({"context": context, "token_agreement": round(float(same.float().mean()), 4),
                     "keep_agreement": round(float((whole["keep"] == tiled["keep"]).float().mean()), 4),
                     "psnr": round(tiled["psnr"], 3),
                     "seam_ratio": round(seam_ratio(tiled["rec"], [256], [256]), 4)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("agree", "speed", "flex"))
    p.add_argument("--clip", required=True)
    p.add_argument("--model", default="infotok-m")
    p.add_argument("--size", default="1280x720")
    p.add_argument("--frames", type=int, default=9)
    p.add_argument("--rate", type=float, default=0.5)
    p.add_argument("--tiles", default="768:128", help="SIZE:HALO,... (agree, speed)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--contexts", default="0,64,128,192,256", help="flex")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tiles = [tuple(int(v) for v in item.split(":")) for item in args.tiles.split(",")]
    if args.what == "flex":
        flex(args.clip, args.frames, [int(v) for v in args.contexts.split(",")], args.rate)
        return
    tok = Tokenizer(args.model, "cpu")
    if args.what == "agree":
        w, h = (int(v) for v in args.size.split("x"))
        agree(tok, read_clip(args.clip, args.frames, w, h), tiles, args.rate)
    else:
        tok.tile_spec = tok.tiles(*tiles[0])
        speed(tok, args.clip, args.frames, args.rate)


if __name__ == "__main__":
    main()
