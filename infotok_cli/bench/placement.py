"""Placement: compress time per placement, and what the learned router head adds to the encoder."""

from __future__ import annotations

import statistics
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from ..coding.compress import compress_video
from ..coding.geometry import padded_size, to_model_input
from ..coding.tokenizer import Tokenizer
from ..constants import SPATIAL_STRIDE, TEMPORAL_STRIDE
from ..eval.clips import prepare
from ..io.video import iter_frames
from ..model.router_head import extract_features, head_tensors
from ..model.store import (
    load_model,
)
from .common import log


def measure_placements(toks: dict[str, Tokenizer], clip: Path, runs: int, tmp: Path) -> dict[str, list]:
    """Compress seconds of `clip` per placement: every tokenizer warmed up first, then the runs interleaved
    (placement after placement), so that drift of the machine hits all alike."""
    for p, tok in toks.items():
        compress_video(clip, tmp / f"placement-{p}.itok", tok, overwrite=True)
    seconds: dict[str, list] = {p: [] for p in toks}
    for _ in range(runs):
        for p, tok in toks.items():
            seconds[p].append(compress_video(clip, tmp / f"placement-{p}.itok", tok, overwrite=True).seconds)
    return seconds


def head_overhead(tok: Tokenizer, clip: Path, runs: int) -> dict:
    """Seconds of the encoder alone and of the encoder with the router head (`tok`'s) on one 33-frame window
    of `clip` (interleaved, medians of max(runs, 5)), and the head's share of the weights file and FLOPs."""
    frames = np.stack(list(islice(iter_frames(clip), 33)))
    n, h, w, _ = frames.shape
    x = to_model_input(frames, padded_size(h, w), tok.device)

    def encode() -> None:
        tok.model.encode(x)

    def encode_and_head() -> None:
        tok.head.predict(extract_features(tok.model, x)[0])

    alone, with_head = [], []
    with torch.no_grad(), tok.autocast():
        encode(), encode_and_head()  # warm-up
        for _ in range(max(runs, 5)):
            for fn, out in ((encode, alone), (encode_and_head, with_head)):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
    head_bytes = sum(t.numel() * t.element_size() for t in head_tensors(tok.head).values())
    hp, wp = padded_size(h, w)
    positions = (hp // SPATIAL_STRIDE) * (wp // SPATIAL_STRIDE)  # one latent frame's grid, 4 frames' worth
    return {"encode_s": statistics.median(alone), "encode_head_s": statistics.median(with_head),
            "head_bytes": head_bytes, "file_bytes": tok.loaded.path.stat().st_size,
            "head_gflop_per_frame": tok.head.flops_per_position() * positions / TEMPORAL_STRIDE / 1e9,
            "frames": n, "size": f"{w}x{h}", "precision": tok.precision.name}


def placement_section(model: str | None, content: Path, tmp: Path, frames: int, runs: int) -> list[str]:
    """Compress time per placement at 256x256 (the learned router head against the probes it replaces)."""
    loaded = load_model(model, "cpu")  # one model, shared by the tokenizers (same device and precision)
    default = Tokenizer(loaded, "cpu")
    placements = ["probe-gain", "error"] + (["predicted"] if default.head is not None else [])
    toks = {p: Tokenizer(loaded, "cpu", placement=p) for p in placements}
    clip = prepare(content, tmp / "placement-256.mp4", (256, 256), frames, lossless=False, loop=True)
    log(f"placements {', '.join(placements)}")
    seconds = measure_placements(toks, clip, runs, tmp)
    base = statistics.median(seconds["probe-gain"])
    md = ["## Placement", "",
          f"`compress` of `{content.name}` at 256x256, {frames} frames, CPU, {default.precision.name} (the "
          f"precision `auto` picks here), defaults apart from `--placement` (the model's default is "
          f"`{default.placement}`). Medians of {runs} run(s) after a warm-up, the placements interleaved. "
          "Quality per placement: docs/MODEL_CARD.md (`python -m infotok_cli.train.router_head eval`).", "",
          "| placement | decodes per window before coding | compress s | frames/s | speed vs probe-gain |",
          "|---|---|---|---|---|"]
    for p, tok in toks.items():
        c = statistics.median(seconds[p])
        md.append(f"| {p} | {tok.router_passes - 1} | {c:.2f} | {frames / c:.1f} | {base / c:.2f}x |")
    md.append("")
    if "predicted" in toks:
        o = head_overhead(toks["predicted"], clip, runs)
        extra = o["encode_head_s"] / o["encode_s"] - 1
        md += [f"The router head on one {o['frames']}-frame {o['size']} window ({o['precision']}, interleaved "
               f"medians of {max(runs, 5)}): encoder alone {o['encode_s'] * 1e3:.0f} ms, encoder with the "
               f"head's features and the head {o['encode_head_s'] * 1e3:.0f} ms ({100 * extra:+.1f}%); "
               f"{o['head_gflop_per_frame']:.3f} GFLOP per frame; {o['head_bytes']:,} bytes, "
               f"{100 * o['head_bytes'] / (o['file_bytes'] - o['head_bytes']):.1f}% of the weights file "
               "without it.", ""]
    return md

