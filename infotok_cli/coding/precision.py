"""The device and the precision a model runs on, chosen from what the hardware runs natively.

`resolve_device("auto")` picks CUDA when present, else the CPU.

`auto` picks bfloat16 only where it is native: a CUDA GPU that supports it, or a CPU with AVX512-BF16
or AMX-BF16 instructions (where oneDNN runs bf16 convolutions and matrix products in hardware, 2-3
times faster than float32 for infotok-m). On any other CPU (AVX2-only: AMD Zen 2/3, most Intel client
chips) oneDNN emulates bf16 and a convolution runs about 130 times slower than in float32, so `auto`
picks float32 there. An explicit `bf16` is honoured everywhere, with a warning where it is emulated.

Tokens depend on the precision only through rounding: float32 and bf16 choose the same code at almost
every position, and a file decodes with either.
"""

from __future__ import annotations

import os
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..constants import DEVICES, PRECISIONS
from ..errors import OptionError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# CPU flags (as /proc/cpuinfo spells them) that matter for the model's speed, in the order `doctor` lists them
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_fp16")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise OptionError("--device cuda asked for, but no CUDA device is available")
    if name not in DEVICES:
        raise OptionError(f"unknown device {name!r}; use {', '.join(DEVICES)}")
    return torch.device(name)


class PrecisionError(ValueError):
    """An unknown precision, or one the device cannot run at all."""


class PrecisionWarning(UserWarning):
    """A precision the device runs, but only by emulation (very slowly)."""


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: tuple[str, ...]  # the VECTOR_FLAGS this CPU has
    capability: str  # what PyTorch's kernels were dispatched for ("AVX2", "AVX512", ...)
    bf16_native: bool

    def to_dict(self) -> dict:
        return {"model": self.model, "vector_extensions": list(self.flags), "torch_capability": self.capability,
                "bf16_native": self.bf16_native}


def _cpuinfo_text() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:  # not Linux, or no procfs
        return ""


def cpu_info() -> CpuInfo:
    """The CPU's model name, vector extensions and whether it runs bf16 natively."""
    text = _cpuinfo_text()
    model, flags = platform.processor() or platform.machine(), set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key == "flags":
            flags = set(value.split())
            break  # every core lists the same flags; the model name comes before them
    try:
        capability = str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # older torch
        capability = "unknown"
    if text:
        native = any(f in flags for f in NATIVE_BF16_FLAGS)
    else:  # no flags to read (macOS, Windows): trust oneDNN's own check
        native = _mkldnn_bf16_supported()
    return CpuInfo(model, tuple(f for f in VECTOR_FLAGS if f in flags), capability, native)


def _mkldnn_bf16_supported() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


@dataclass(frozen=True)
class Precision:
    """The precision a model runs in on one device, and why it was chosen."""

    name: str  # "fp32", "bf16" or "fp16"
    device: str  # "cpu" or "cuda"
    reason: str
    warning: str | None = None

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    def autocast(self) -> torch.autocast:
        """The autocast context the model runs under (disabled in float32)."""
        return torch.autocast(self.device, dtype=self.dtype, enabled=self.name != "fp32")

    def to_dict(self) -> dict:
        return {"precision": self.name, "device": self.device, "reason": self.reason}


def _device_type(device: str | torch.device) -> str:
    return device.type if isinstance(device, torch.device) else str(device).split(":")[0]


def native_bf16(device: str | torch.device) -> bool:
    if _device_type(device) == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cpu_info().bf16_native


def choose_precision(requested: str, device: str | torch.device) -> Precision:
    """Resolve `requested` (one of PRECISIONS) for `device`; see the module docstring for the rule.

    The environment variable INFOTOK_PRECISION, when set, replaces `auto` (for scripts and schedulers
    that cannot pass an option through)."""
    if requested == "auto":
        requested = os.environ.get("INFOTOK_PRECISION", "auto") or "auto"
    if requested not in PRECISIONS:
        raise PrecisionError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    kind = _device_type(device)
    native = native_bf16(kind)
    if requested == "auto":
        if native:
            where = "the GPU supports bf16" if kind == "cuda" else "the CPU runs bf16 natively (AVX512-BF16/AMX)"
            return Precision("bf16", kind, where)
        where = "the GPU does not support bf16" if kind == "cuda" else "the CPU has no native bf16 (AVX2-only)"
        return Precision("fp32", kind, where)
    if requested == "fp16" and kind != "cuda":
        raise PrecisionError("--precision fp16 needs a CUDA device; on the CPU use fp32 or bf16")
    warning = None
    if requested == "bf16" and not native:
        warning = ("bf16 is emulated on this CPU (no AVX512-BF16 or AMX): expect it to run about 100 times "
                   "slower than --precision fp32" if kind == "cpu" else "this GPU emulates bf16: expect it to be slow")
    return Precision(requested, kind, "asked for", warning)


def resolve_precision(requested: str | Precision, device: str | torch.device) -> Precision:
    """choose_precision, warning (PrecisionWarning) where the choice is emulated; a Precision passes through."""
    if isinstance(requested, Precision):
        return requested
    choice = choose_precision(requested, device)
    if choice.warning:
        warnings.warn(choice.warning, PrecisionWarning, stacklevel=3)
    return choice
