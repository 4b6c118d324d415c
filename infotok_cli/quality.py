"""The WINDOW-QUALITY chunk (type 0x80, format 1.1): the target of a `--target-psnr` run and the PSNR
each window's reconstruction reached, so that `inspect` can show them without decoding anything.

Body (docs/FORMAT.md section 4.3), little-endian: `f32 target_psnr | f32 max_bpp16 (0 = none) |
u32 window_count | window_count x f32 psnr`. PSNR values are in dB over the window's own frames (before
overlap blending); a window whose reconstruction is exact is stored as 100 dB.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

from .container import CHUNK_QUALITY, ContainerError, ItokReader

__all__ = ["CHUNK_QUALITY", "PSNR_CAP", "WindowQuality", "pack_quality", "read_quality", "unpack_quality"]

PSNR_CAP = 100.0  # stored for an exact reconstruction (PSNR +inf)
MAX_TARGET = 100.0
_HEAD = struct.Struct("<ffI")


@dataclass
class WindowQuality:
    """Target and achieved PSNR of a file coded with --target-psnr."""

    target_psnr: float
    max_bpp16: float | None
    psnr: list[float] = field(default_factory=list)  # one per window, in window order

    def short(self) -> int:
        """Windows whose reconstruction did not reach the target."""
        return sum(p < self.target_psnr for p in self.psnr)


def pack_quality(q: WindowQuality) -> bytes:
    values = [min(PSNR_CAP, float(p)) for p in q.psnr]
    return _HEAD.pack(q.target_psnr, q.max_bpp16 or 0.0, len(values)) + struct.pack(f"<{len(values)}f", *values)


def unpack_quality(body: bytes, window_count: int) -> WindowQuality:
    """Decode and validate a body read from an (untrusted) file with `window_count` windows."""
    if len(body) < _HEAD.size:
        raise ContainerError("window-quality chunk is too short")
    target, max_bpp16, count = _HEAD.unpack_from(body)
    if count != window_count:
        raise ContainerError(f"window-quality chunk lists {count} windows, the file has {window_count}")
    if len(body) != _HEAD.size + 4 * count:
        raise ContainerError(f"window-quality chunk is {len(body)} bytes, expected {_HEAD.size + 4 * count}")
    if not (math.isfinite(target) and 0 < target <= MAX_TARGET):
        raise ContainerError(f"window-quality chunk has target {target!r}, outside (0, {MAX_TARGET}]")
    if not (math.isfinite(max_bpp16) and 0 <= max_bpp16 <= 2):
        raise ContainerError(f"window-quality chunk has max_bpp16 {max_bpp16!r}, outside [0, 2]")
    psnr = list(struct.unpack_from(f"<{count}f", body, _HEAD.size))
    if any(not (math.isfinite(p) and 0 <= p <= PSNR_CAP) for p in psnr):
        raise ContainerError(f"window-quality chunk holds a PSNR outside [0, {PSNR_CAP:g}]")
    return WindowQuality(target, max_bpp16 or None, psnr)


def read_quality(reader: ItokReader) -> WindowQuality | None:
    """The file's window-quality chunk, or None if it has none."""
    body = reader.read_skippable(CHUNK_QUALITY, _HEAD.size + 4 * len(reader.windows))
    return None if body is None else unpack_quality(body, len(reader.windows))
