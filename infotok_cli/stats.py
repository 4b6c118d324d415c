"""Token-usage statistics of an .itok file, from its header and index only (tokens are never read).

Frames map to latent frames causally: frame 0 of a window is latent frame 0, frames 1-4 latent frame 1,
and so on. Frames shared by two overlapping windows are owned by the earlier window (the one that
codes them first), so every source frame appears exactly once in the per-frame table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .container import TEMPORAL_STRIDE, Header, WindowMeta, read_header_and_index


@dataclass
class Inspection:
    summary: dict
    windows: list[dict]
    frames: list[dict]

    def to_dict(self) -> dict:
        return {"summary": self.summary, "windows": self.windows, "frames": self.frames}


def latent_index(frame_in_window: int) -> int:
    return 0 if frame_in_window == 0 else 1 + (frame_in_window - 1) // TEMPORAL_STRIDE


def frame_owners(windows: list[WindowMeta]) -> list[tuple[int, int]]:
    """(window index, frame within window) that owns each source frame."""
    owners: list[tuple[int, int]] = []
    for w in windows:
        for j in range(w.frame_count):
            if w.frame_start + j >= len(owners):
                owners.append((w.index, j))
    return owners


def frame_rows(header: Header, windows: list[WindowMeta]) -> list[dict]:
    """One row per source frame: its window, latent frame and that latent frame's token usage."""
    tb = header.time_base_num / header.time_base_den
    per_latent = windows[0].latent_shape[1] * windows[0].latent_shape[2] if windows else 0
    rows = []
    for f, (wi, j) in enumerate(frame_owners(windows)):
        lat = latent_index(j)
        kept = windows[wi].kept_per_frame[lat]
        rows.append({
            "frame": f,
            "timestamp": round((header.pts[f] - header.pts[0]) * tb, 6) if header.pts else None,
            "window": wi,
            "latent_frame": lat,
            "tokens_kept": kept,
            "tokens_possible": per_latent,
            "keep_fraction": kept / per_latent if per_latent else 0.0,
        })
    return rows


def window_rows(windows: list[WindowMeta]) -> list[dict]:
    return [{
        "window": w.index,
        "frame_start": w.frame_start,
        "frame_count": w.frame_count,
        "padded_frames": w.padded_frames,
        "latent_shape": list(w.latent_shape),
        "tokens_kept": w.kept,
        "tokens_possible": w.capacity,
        "keep_rate": w.kept / w.capacity if w.capacity else 0.0,
        "kept_per_latent_frame": list(w.kept_per_frame),
    } for w in windows]


def summarize(header: Header, windows: list[WindowMeta], file_size: int, name: str = "") -> dict:
    """File-level statistics: geometry, timing, coding parameters, token usage and sizes."""
    kept = sum(w.kept for w in windows)
    capacity = sum(w.capacity for w in windows)
    rates = [w.kept / w.capacity for w in windows if w.capacity]
    pixels = header.num_frames * header.width * header.height
    fps = header.fps_num / header.fps_den
    keep_rate = kept / capacity if capacity else 0.0
    return {
        "file": name,
        "file_bytes": file_size,
        "source": header.source_name,
        "width": header.width,
        "height": header.height,
        "frames": header.num_frames,
        "fps": f"{header.fps_num}/{header.fps_den}",
        "fps_value": fps,
        "duration_seconds": header.num_frames / fps if fps else 0.0,
        "model": header.model_name,
        "weights_sha256": header.weights_sha256,
        "strategy": header.strategy,
        "beta": header.beta,
        "window": header.window,
        "overlap": header.overlap,
        "windows": len(windows),
        "tokens_kept": kept,
        "tokens_max": capacity,
        "keep_rate": keep_rate,
        "window_keep_rate_min": min(rates) if rates else 0.0,
        "window_keep_rate_max": max(rates) if rates else 0.0,
        "bpp16": keep_rate + 1 / 16,
        "bits_per_pixel": 8 * file_size / pixels if pixels else 0.0,
        "compression_vs_raw_rgb": 3 * pixels / file_size if file_size else 0.0,
        "compression_vs_fixed_rate_tokens": capacity / kept if kept else 0.0,  # same grids, all kept
    }


def inspect_file(path: str | Path) -> Inspection:
    """Statistics of an .itok file without decoding any tokens."""
    header, windows, size = read_header_and_index(path)
    return Inspection(summarize(header, windows, size, Path(path).name), window_rows(windows),
                      frame_rows(header, windows))
