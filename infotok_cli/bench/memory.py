"""Memory (peak resident memory of one command in a fresh process) and batch overhead (one process for
many clips against one per clip)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import torch

from ..coding.precision import choose_precision
from ..eval.clips import prepare
from .common import ROOT, log, run_child


def measure_batch(content: Path, tmp: Path, model: str, device: str, clips: int = 20, frames: int = 9,
                  size: tuple[int, int] = (128, 128)) -> dict:
    """Wall time of compressing `clips` short clips in one batch process vs one process per clip (both through
    the real CLI, so start-up, imports and model loading are counted where they happen)."""
    one = prepare(content, tmp / "batch-0.mp4", size, frames, lossless=False, loop=True)
    paths = [one] + [tmp / f"batch-{i}.mp4" for i in range(1, clips)]
    for p in paths[1:]:
        p.write_bytes(one.read_bytes())
    common = ["--device", device, "-q"] + (["--model", model] if model else [])
    cli = [sys.executable, "-m", "infotok_cli", "compress"]

    def timed(cmd: list[str]) -> float:
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        return time.perf_counter() - t0

    batch_s = timed(cli + [str(p) for p in paths] + ["-o", str(tmp / "batch-out")] + common)
    single_s = sum(timed(cli + [str(p), str(tmp / f"single-{i}.itok")] + common) for i, p in enumerate(paths))
    return {"clips": clips, "frames": frames, "size": size, "batch_s": batch_s, "single_s": single_s,
            "overhead_per_file_s": (single_s - batch_s) / clips}



def memory_section(content: Path, clips: list[Path], tmp: Path, base_frames: int, hd_frames: int, model_arg: str,
                   device: torch.device) -> list[str]:
    """The markdown of the memory section: compress and decompress of 1x, 4x and 16x the length and of a 720p
    input, each in a fresh process."""
    log("memory")
    rows = []
    base = base_frames
    dev = device.type
    base_rss = run_child("load", "", "", model_arg, dev)["max_rss_mib"]
    cases = [(f"256x256, {base * m} frames ({m}x)", (256, 256), base * m, content) for m in (1, 4, 16)]
    hd_src = next((c for c in clips if c.name == "bigbuckbunny.mp4"), content)
    cases.append((f"1280x720, {hd_frames} frames", (1280, 720), hd_frames, hd_src))
    for label, size, n, src in cases:
        clip = prepare(src, tmp / "mem.mp4", size, n, lossless=False, loop=True)
        c = run_child("compress", clip, tmp / "mem.itok", model_arg, dev)
        d = run_child("decompress", tmp / "mem.itok", tmp / "mem-out.mp4", model_arg, dev)
        rows.append((label, n, c, d))
        log(f"memory {label}: compress {c['max_rss_mib']:.0f} MiB, decompress {d['max_rss_mib']:.0f} MiB")
    cuda = any("cuda_peak_bytes" in c for _, _, c, _ in rows)
    head = ["input", "compress peak RSS", "above load", "compress frames/s", "decompress peak RSS",
            "decompress frames/s"] + (["CUDA peak (compress)"] if cuda else [])
    md = ["## Memory", "",
           f"Peak resident memory of one `compress` / `decompress` (defaults) in a fresh process on {dev} "
           f"in {choose_precision('auto', dev).name}, "
           f"from its /proc/self/status VmHWM. Starting Python and torch and loading the model alone peaks at "
           f"{base_rss:.0f} MiB (`above load` is the rest). Frames stream through one coding window (33 "
           "frames) at a time, so beyond one window the peak should stay flat as the length grows.", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, n, c, d in rows:
        line = (f"| {label} | {c['max_rss_mib']:.0f} MiB | {c['max_rss_mib'] - base_rss:.0f} MiB | "
                f"{n / c['seconds']:.1f} | {d['max_rss_mib']:.0f} MiB | {n / d['seconds']:.1f} |")
        if cuda:
            line += f" {c.get('cuda_peak_bytes', 0) / 2**20:.0f} MiB |"
        md.append(line)
    md.append("")

    return md


def batch_section(content: Path, tmp: Path, model_arg: str, device: torch.device) -> list[str]:
    """The markdown of the batch overhead section."""
    log("batch overhead")
    b = measure_batch(content, tmp, model_arg, device.type)
    w, h = b["size"]
    md = ["## Batch overhead", "",
           f"{b['clips']} clips of {b['frames']} frames at {w}x{h} (`{content.name}`), `compress` defaults "
           f"on {device.type}: one `infotok compress CLIPS... -o DIR` against one `infotok compress` "
           "process per clip (Python start-up, imports and model load every time). Wall time of the "
           "real commands.", "",
           "| run | total s | s per clip |", "|---|---|---|",
           f"| one batch process | {b['batch_s']:.1f} | {b['batch_s'] / b['clips']:.2f} |",
           f"| one process per clip | {b['single_s']:.1f} | {b['single_s'] / b['clips']:.2f} |", "",
           f"Per-file overhead saved by the batch: {b['overhead_per_file_s']:.2f} s per clip "
           f"({b['single_s'] / b['batch_s']:.1f}x faster in total).", ""]

    return md
