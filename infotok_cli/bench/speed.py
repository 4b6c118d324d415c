"""Speed: compress / decompress frames per second, and where the time goes (the Tokenizer's stages)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..coding.compress import compress_video
from ..coding.decompress import decompress_video
from ..coding.tokenizer import Tokenizer
from ..eval.clips import prepare
from ..io.video import probe_video
from ..model.store import (
    load_model,
)
from .common import THROUGHPUT_SIZES, StageTimer, log, speed_precisions


@dataclass
class Speed:
    size: tuple[int, int]
    device: str
    precision: str
    placement: str
    frames: int
    compress_s: list[float] = field(default_factory=list)
    decompress_s: list[float] = field(default_factory=list)
    parts_c: dict[str, float] = field(default_factory=dict)  # mean seconds per run
    parts_d: dict[str, float] = field(default_factory=dict)


def measure_speed(tok: Tokenizer, clip: Path, runs: int, tmp: Path) -> Speed:
    """Compress / decompress times of `clip` and the share of each stage (the tokenizer's tracing hook)."""
    info = probe_video(clip)
    timer = StageTimer(tok.device)
    sp = Speed((info.width, info.height), tok.device.type, tok.precision.name, tok.placement, info.num_frames)
    itok, out = tmp / "speed.itok", tmp / "speed.mp4"
    compress_video(clip, itok, tok, overwrite=True)  # warm-up: allocator, kernels, page cache
    decompress_video(itok, out, tok, overwrite=True)
    tc: dict[str, float] = defaultdict(float)
    td: dict[str, float] = defaultdict(float)
    tok.tracer = timer
    for _ in range(runs):
        timer.t.clear()
        r = compress_video(clip, itok, tok, overwrite=True)
        sp.compress_s.append(r.seconds)
        timed = ("encoder", "full-rate decode", "probe decodes", "router")
        for k in timed:
            tc[k] += timer.t[k]
        tc["container + I/O"] += r.seconds - sum(timer.t[k] for k in timed)
        timer.t.clear()
        d = decompress_video(itok, out, tok, overwrite=True)
        sp.decompress_s.append(d.seconds)
        td["decoder"] += timer.t["decoder"]
        td["container + I/O"] += d.seconds - timer.t["decoder"]
    tok.tracer = None
    sp.parts_c = {k: v / runs for k, v in tc.items()}
    sp.parts_d = {k: v / runs for k, v in td.items()}
    return sp



def speed_table(speeds: list[Speed]) -> str:
    lines = ["| size | device | precision | placement | frames | compress frames/s | decompress frames/s | "
             "compress s | decompress s |", "|---|---|---|---|---|---|---|---|---|"]
    for s in speeds:
        c, d = statistics.median(s.compress_s), statistics.median(s.decompress_s)
        lines.append(f"| {s.size[0]}x{s.size[1]} | {s.device} | {s.precision} | {s.placement} | {s.frames} | "
                     f"{s.frames / c:.1f} | {s.frames / d:.1f} | {c:.2f} | {d:.2f} |")
    return "\n".join(lines)


def parts_table(speeds: list[Speed]) -> str:
    keys_c = ["encoder", "full-rate decode", "probe decodes", "router", "container + I/O"]
    lines = ["| size | device | precision | " + " | ".join(f"compress: {k}" for k in keys_c)
             + " | decompress: decoder | decompress: container + I/O |",
             "|---|---|---|" + "---|" * (len(keys_c) + 2)]
    for s in speeds:
        tc, td = sum(s.parts_c.values()), sum(s.parts_d.values())
        cells = [f"{s.parts_c[k]:.2f} s ({100 * s.parts_c[k] / tc:.0f}%)" for k in keys_c]
        cells += [f"{s.parts_d[k]:.2f} s ({100 * s.parts_d[k] / td:.0f}%)" for k in ("decoder", "container + I/O")]
        lines.append(f"| {s.size[0]}x{s.size[1]} | {s.device} | {s.precision} | " + " | ".join(cells) + " |")
    return "\n".join(lines)



def speed_section(model: str | None, content: Path, tmp: Path, frames: int, runs: int, mach: dict) -> list[str]:
    """The markdown of the speed section: every size, device and precision, and where the time goes."""
    speeds: list[Speed] = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for w, h in THROUGHPUT_SIZES:
        clip = prepare(content, tmp / f"speed-{w}x{h}.mp4", (w, h), frames, lossless=False,
                       loop=True)
        for dev in devices:
            for precision in speed_precisions(dev):
                log(f"speed {w}x{h} on {dev} in {precision}")
                ttok = Tokenizer(load_model(model, dev), dev, precision=precision)
                speeds.append(measure_speed(ttok, clip, runs, tmp))
    md = ["## Speed", "",
           f"Content: `{content.name}` scaled and centre-cropped, {frames} frames, "
           f"`compress` defaults (global strategy, beta 0.5, window 33, overlap 3, the model's default "
           f"placement `{ttok.placement}`: the Placement section compares the others). Medians of "
           f"{runs} run(s) after a warm-up; decompress includes writing the output video "
           f"(libx264). CPU: {mach['cpu']} ({mach['vector extensions']}); float32 always, bf16 where "
           f"the device runs it natively; with no option `auto` runs {mach['precision `auto` picks']} "
           "here.", "", speed_table(speeds), "",
           "### Where the time goes", "",
           "Mean seconds per run and share. Encoder = input conversion + CNN encoder + compressor "
           "transformer + FSQ; full-rate decode = the router's pass that decodes every token once (0 "
           "when the weights carry e_ref_probe: the window's error then comes from the probes); "
           "probe decodes = the two decodes that measure each token's drop gain (each sends half the "
           "tokens); router = error map, the learned router head where it places, and top-k; "
           "encoder includes the head's pixel statistics; container + I/O = reading and "
           "decoding the source video, windowing, writing the .itok (compress) or reading it, blending "
           "overlaps and encoding the output video (decompress).", "", parts_table(speeds), ""]
    shares = [100 * (s.parts_c["full-rate decode"] + s.parts_c["probe decodes"]) / sum(s.parts_c.values())
              for s in speeds]
    span = f"{min(shares):.0f}" if round(min(shares)) == round(max(shares)) else \
        f"{min(shares):.0f}-{max(shares):.0f}"
    md += [f"The router's extra decodes ({ttok.router_passes - 1} per window with placement "
           f"`{ttok.placement}`) take {span}% of compress time.", ""]

    return md
