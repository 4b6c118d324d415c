"""The imported InfoTok-Flex model: speed, FLOPs and the peak memory of a real `infotok compress`."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from ..coding.precision import choose_precision
from ..eval.clips import prepare
from ..model.catalog import imported_models, read_metadata, user_model_dir
from ..model.store import FLEX_ARCHITECTURE, load_model
from .common import CLI_CHILD, ROOT, StageTimer, log, run_child, speed_precisions

FLEX_MANIFEST = ROOT / "tests" / "data" / "infotok-flex" / "manifest-full.json"
FLEX_RANDOM = "random weights of the released shape"
FLEX_WINDOW = (17, 256, 256)  # frames, height, width: the authors' window at the paper's resolution
FLEX_MEMORY_SIZE = (640, 360)

def installed_flex() -> str | None:
    """The first model with architecture infotok-flex in the user's model store, if any."""
    for name in imported_models():
        try:
            if read_metadata(user_model_dir() / f"{name}.safetensors").get("architecture") == FLEX_ARCHITECTURE:
                return name
        except Exception:  # noqa: BLE001 - an unreadable file in the store is not the bench's concern
            continue
    return None


def random_flex() -> torch.nn.Module:
    """The released InfoTok-Flex architecture (tests/data/infotok-flex/manifest-full.json) with random weights."""
    from infotok_cli.model.flex import FlexConfig, FlexTokenizer

    torch.manual_seed(0)
    return FlexTokenizer(FlexConfig.from_release(json.loads(FLEX_MANIFEST.read_text())["config"])).eval()


def random_flex_store(model: torch.nn.Module, tmp: Path) -> tuple[str, dict[str, str]]:
    """A temporary model store (INFOTOK_HOME under `tmp`) holding `model`'s weights, written by `infotok
    models import`'s own code (flex_store.import_checkpoint), so that the real commands run them; returns
    the model's name there and the environment that selects the store."""
    from safetensors.torch import save_file

    from infotok_cli.model.flex_store import import_checkpoint

    home, name = tmp / "flex-home", "infotok-flex-random"
    state = tmp / "flex-random.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(state))
    old = os.environ.get("INFOTOK_HOME")
    os.environ["INFOTOK_HOME"] = str(home)  # the store import_checkpoint writes to
    try:
        import_checkpoint(state, name, config=FLEX_MANIFEST, force=True)
    finally:
        if old is None:
            os.environ.pop("INFOTOK_HOME", None)
        else:
            os.environ["INFOTOK_HOME"] = old
    state.unlink()
    return name, {**os.environ, "INFOTOK_HOME": str(home)}


def flex_window(content: Path, tmp: Path) -> np.ndarray:
    """FLEX_WINDOW's frames of `content` (scaled and centre-cropped, looped if short), uint8 [T, H, W, 3]."""
    from infotok_cli.io.video import iter_frames

    n, h, w = FLEX_WINDOW
    clip = prepare(content, tmp / "flex-window.mp4", (w, h), n, lossless=False, loop=True)
    return np.stack(list(islice(iter_frames(clip), n)))


@torch.no_grad()
def flex_speed(model: torch.nn.Module, frames: np.ndarray, device: str, precision: str, runs: int) -> dict:
    """Seconds of the model's encode and of its full-rate decode of one window (medians of `runs` runs after
    a warm-up), in `precision` (autocast, as the Tokenizer runs it)."""
    from infotok_cli.coding.geometry import padded_size, to_model_input

    dev = torch.device(device)
    choice = choose_precision(precision, device)
    model.to(dev)
    x = to_model_input(frames, padded_size(*frames.shape[1:3]), dev)
    timer = StageTimer(dev)
    enc: list[float] = []
    dec: list[float] = []
    for i in range(runs + 1):  # the first run is the warm-up (allocator, oneDNN primitives, page cache)
        timer.t.clear()
        with choice.autocast():
            with timer("encode"):
                codes, _ = model.encode(x)
            with timer("decode"):
                model.decode(codes)
        if i:
            enc.append(timer.t["encode"])
            dec.append(timer.t["decode"])
        log(f"flex {device} {precision}: run {i}/{runs} encode {timer.t['encode']:.1f} s, "
            f"decode {timer.t['decode']:.1f} s")
    model.to("cpu")
    return {"device": device, "precision": precision, "frames": frames.shape[0],
            "encode_s": statistics.median(enc), "decode_s": statistics.median(dec)}


def flex_flops(model: torch.nn.Module) -> tuple[float, float]:
    """GFLOP per frame of encode and of decode of a FLEX_WINDOW window, counted by FlopCounterMode on the
    same architecture built on the meta device (shapes only, no arithmetic, so the full-size window costs
    nothing; FLOPs do not depend on the weights). There attention runs as its matrix products, which the
    counter sees (the CPU's fused attention kernel it does not)."""
    from torch.utils.flop_counter import FlopCounterMode

    n, h, w = FLEX_WINDOW
    with torch.device("meta"):
        meta = type(model)(model.cfg).eval()
    x = torch.empty(1, 3, n, h, w, device="meta")
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            codes, _ = meta.encode(x)
        encode = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            meta.decode(codes)
        decode = counter.get_total_flops()
    return encode / n / 1e9, decode / n / 1e9


def flex_compress_memory(content: Path, tmp: Path, name: str, env: dict[str, str], frames: int, device: str
                         ) -> dict:
    """Peak resident memory and time of the real `infotok compress --placement error --strategy window` of
    `frames` frames at FLEX_MEMORY_SIZE in a fresh process, and of a process that only loads the model."""
    w, h = FLEX_MEMORY_SIZE
    src = prepare(content, tmp / "flex-mem.mp4", (w, h), frames, lossless=False, loop=True)
    load = run_child("load", "", "", name, device, env)
    cmd = ["compress", str(src), str(tmp / "flex-mem.itok"), "--model", name, "--placement", "error",
           "--strategy", "window", "--device", device, "--force", "--json", "-q"]
    log(f"flex memory: infotok compress SRC DST {' '.join(cmd[3:])} ({frames} frames of {w}x{h})")
    p = subprocess.run([sys.executable, "-c", CLI_CHILD, *cmd], capture_output=True, text=True, cwd=ROOT, env=env)
    lines = [line for line in p.stdout.splitlines() if line.strip()]
    measured = json.loads(lines[-1]) if lines else {"returncode": p.returncode}
    if p.returncode != 0 or measured["returncode"] != 0:
        tail = p.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"flex compress child failed ({measured['returncode']}): {' | '.join(tail)}")
    result = json.loads(lines[-2])
    return {"frames": frames, "size": f"{w}x{h}", "peak_mib": measured["peak_kib"] / 1024,
            "load_mib": load["max_rss_mib"], "process_s": measured["seconds"], "seconds": result["seconds"],
            "keep_rate": result["keep_rate"],
            "windows": result["windows"], "precision": result["precision"],
            "command": "infotok compress SRC DST --model NAME --placement error --strategy window"}


def flex_section(content: Path, tmp: Path, runs: int, memory_frames: int, device: str) -> list[str]:
    """The markdown of the imported InfoTok-Flex section (see the module docstring)."""
    name = installed_flex()
    if name is not None:
        loaded = load_model(name, "cpu")
        model: torch.nn.Module = loaded.model
        label = f"imported `{name}` ({loaded.sha256[:12]})"
        about = f"The model imported as `{name}` in the user's model store (weights {loaded.sha256[:12]})."
    else:
        model, loaded = random_flex(), None
        label = FLEX_RANDOM
        about = ("No InfoTok-Flex model is imported in the user's model store, so this is the released "
                 "architecture (`tests/data/infotok-flex/manifest-full.json`) with random weights "
                 "(`torch.manual_seed(0)`, the constructor's initialisation): every row says so. Speed, FLOPs "
                 "and memory do not depend on the weight values.")
    parameters = sum(p.numel() for p in model.parameters())
    log(f"flex: {label}, {parameters:,} parameters")
    frames = flex_window(content, tmp)
    n, h, w = FLEX_WINDOW
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    speeds = [flex_speed(model, frames, dev, p, runs) for dev in devices for p in speed_precisions(dev)]
    gflop_encode, gflop_decode = flex_flops(model)
    log(f"flex: {gflop_encode:.1f} GFLOP/frame encode, {gflop_decode:.1f} decode")
    memory = None
    if memory_frames > 0:
        if loaded is not None:
            memory = flex_compress_memory(content, tmp, name, dict(os.environ), memory_frames, device)
        else:
            store_name, env = random_flex_store(model, tmp)
            memory = flex_compress_memory(content, tmp, store_name, env, memory_frames, device)
        log(f"flex memory: peak {memory['peak_mib']:.0f} MiB, compress {memory['seconds']:.0f} s "
            f"({memory['process_s']:.0f} s with start-up and model load)")
    md = ["## Imported InfoTok-Flex", "",
          f"{about} {parameters:,} parameters.", "",
          f"Encode (CNN encoder, transformer compressor, FSQ) and full-rate decode (every token) of one "
          f"{n}-frame {w}x{h} window of `{content.name}` (scaled and centre-cropped), calling the model directly "
          f"under the precision's autocast as the codec does; medians of {runs} run(s) after a warm-up. float32 "
          "always, bf16 where the device runs it natively. `compress --placement error` runs the encode and one "
          "such decode per window; the drop-gain placements add two probe decodes.", "",
          "| weights | device | precision | window | encode frames/s | decode frames/s | encode s | decode s |",
          "|---|---|---|---|---|---|---|---|"]
    for r in speeds:
        md.append(f"| {label} | {r['device']} | {r['precision']} | {n}x{w}x{h} | {r['frames'] / r['encode_s']:.2f} | "
                  f"{r['frames'] / r['decode_s']:.2f} | {r['encode_s']:.1f} | {r['decode_s']:.1f} |")
    md += ["", f"Cost per frame, counted by `torch.utils.flop_counter.FlopCounterMode` on the same {n}x{w}x{h} "
           "window with the model on PyTorch's meta device (shapes only: the whole window at no cost, and "
           "attention is counted as its matrix products). It counts convolutions and matrix products (a "
           "multiply-add = 2 FLOPs), not element-wise operations, norms or activations.", "",
           "| weights | input | encode GFLOP/frame | decode GFLOP/frame |", "|---|---|---|---|",
           f"| {label} | {n}x{w}x{h} | {gflop_encode:.1f} | {gflop_decode:.1f} |", ""]
    if memory is not None:
        md += [f"Peak resident memory of one real `{memory['command']}` (other options at their defaults: window "
               f"33, overlap 3) of {memory['frames']} frames at {memory['size']} in a fresh process on {device} "
               f"(it ran in {memory['precision']}), from its /proc/self/status VmHWM"
               + (", with the random weights written to a temporary model store by `infotok models import`'s "
                  "own code" if loaded is None else "")
               + f". Starting Python and torch and loading the model alone peaks at {memory['load_mib']:.0f} MiB. "
               "Compress seconds as the command reports them; the process took "
               f"{memory['process_s']:.0f} s with start-up and model load.",
               "", "| weights | input | windows | peak RSS | above load | keep rate | compress s | frames/s |",
               "|---|---|---|---|---|---|---|---|",
               f"| {label} | {memory['frames']} frames of {memory['size']} | {memory['windows']} | "
               f"{memory['peak_mib']:.0f} MiB | {memory['peak_mib'] - memory['load_mib']:.0f} MiB | "
               f"{memory['keep_rate']:.3f} | {memory['seconds']:.0f} | {memory['frames'] / memory['seconds']:.3f} |",
               ""]
    return md

