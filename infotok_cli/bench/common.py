"""What every bench section shares: logging, report paths, the machine, stage timing and the fresh
processes that measure peak memory."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import torch

from ..coding.precision import choose_precision, cpu_info, native_bf16
from ..constants import __version__

# The repository checkout the package runs from: the report and its default inputs (docs/, samples/,
# ../shared/data/train, tests/data/) are relative to it, and its commands run there.
ROOT = Path(__file__).resolve().parents[2]
THROUGHPUT_SIZES = ((256, 256), (640, 360))


def log(msg: str) -> None:
    sys.stderr.write(f"[bench] {msg}\n")
    sys.stderr.flush()


def display_path(p: str | Path) -> str:
    """A path as it may appear in the report: relative to the repository, never absolute."""
    p = Path(p)
    if not p.is_absolute():
        return str(p)
    return os.path.relpath(p, ROOT)


def command_arg(arg: str) -> str:
    """A command-line argument for the report, with any absolute path made relative to the repo."""
    if arg.startswith("--") and "=" in arg:
        key, value = arg.split("=", 1)
        return f"{key}={command_arg(value)}"
    return display_path(arg) if os.path.isabs(arg) else arg


# ----------------------------------------------------------------------------- machine


def machine() -> dict:
    """What the numbers were measured on (no paths, no host names)."""
    cpu = cpu_info()
    info = {
        "cpu": cpu.model,
        "vector extensions": " ".join(cpu.flags) or "none detected",
        "bf16 native on the CPU": "yes (AVX512-BF16 / AMX)" if cpu.bf16_native else "no (emulated)",
        "precision `auto` picks": choose_precision("auto", "cuda" if torch.cuda.is_available() else "cpu").name,
        "logical cores": str(os.cpu_count()),
        "cores usable by this process": str(len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity")
        else "?",
        "torch threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "PyAV": av.__version__,
        "infotok": __version__,
    }
    if hasattr(os, "getloadavg"):  # other work on the machine slows every timing below
        info["load average at start (1/5/15 min)"] = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    if torch.cuda.is_available():
        info["GPU"] = f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    return info



# ----------------------------------------------------------------------------- timing


class StageTimer:
    """Seconds per stage of a Tokenizer's work, through its tracing hook (`tok.tracer = timer`); CUDA is
    synchronised at each boundary."""

    def __init__(self, device: torch.device):
        self.device = device
        self.t: dict[str, float] = defaultdict(float)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self.sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.t[stage] += time.perf_counter() - t0


def speed_precisions(device: str) -> list[str]:
    """float32 everywhere, and bf16 where the device runs it natively (emulated bf16 is not worth timing)."""
    return ["fp32"] + (["bf16"] if native_bf16(device) else [])


# ----------------------------------------------------------------------------- memory

# The child reports its own peak from /proc/self/status (VmHWM: the high-water mark of its address
# space since exec). ru_maxrss from wait4 or RUSAGE_CHILDREN is no good here: Linux carries the parent's
# peak into a child's ru_maxrss when it execs (the forked/vforked image counts), so every child would
# read at least the bench process's own peak.
CHILD = r"""
import json, sys, time
import torch
from infotok_cli.coding import Tokenizer, compress_video, decompress_video
from infotok_cli.model.store import load_model
mode, src, dst, model, device = sys.argv[1:6]
tok = Tokenizer(load_model(model or None, device), device)
t0 = time.perf_counter()
if mode == "compress":
    compress_video(src, dst, tok, overwrite=True)
elif mode == "decompress":
    decompress_video(src, dst, tok, overwrite=True)
out = {"seconds": time.perf_counter() - t0}
try:
    with open("/proc/self/status") as f:
        out["peak_kib"] = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    import resource
    out["peak_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
if tok.device.type == "cuda":
    out["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
print(json.dumps(out))
"""


def run_child(mode: str, src: Path | str, dst: Path | str, model: str, device: str,
              env: dict[str, str] | None = None) -> dict:
    """One compress/decompress (or only the model load) in a fresh interpreter; returns its seconds and
    its own peak resident memory."""
    p = subprocess.run([sys.executable, "-c", CHILD, mode, str(src), str(dst), model, device],
                       capture_output=True, text=True, cwd=ROOT, env=env)
    if p.returncode != 0:
        tail = p.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"{mode} child failed ({p.returncode}): {' | '.join(tail)}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["max_rss_mib"] = res["peak_kib"] / 1024
    return res



# The real `infotok` command in a fresh interpreter, then that process's own peak resident memory (VmHWM;
# see CHILD) as the last line of stdout.
CLI_CHILD = r"""
import json, sys, time
from infotok_cli.cli import main
t0 = time.perf_counter()
try:
    main(sys.argv[1:])
    code = 0
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
out = {"returncode": code, "seconds": time.perf_counter() - t0}
with open("/proc/self/status") as f:
    out["peak_kib"] = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
sys.stdout.write("\n" + json.dumps(out) + "\n")
"""


@dataclass
class Plan:
    """How much each section measures (--quick, --frames, --rd-frames, --rates, --runs)."""

    runs: int
    speed_frames: int
    rd_frames: int
    mem_base_frames: int
    hd_frames: int
    rates: list[float]
    native_rates: list[float]
    native_methods: list[str]
