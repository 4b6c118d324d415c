"""Token-usage statistics of an .itok file: geometry, usage and coded sizes from its header and index only;
the token entropy (codebook use) from its decoded tokens.

Frames map to latent frames causally: frame 0 of a window is latent frame 0, frames 1-4 latent frame 1,
and so on. Frames shared by two overlapping windows are owned by the earlier window (the one that
codes them first), so every source frame appears exactly once in the per-frame table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..constants import FSQ_LEVELS, TEMPORAL_STRIDE
from ..errors import ContainerError
from ..eval.codebook import token_entropy
from ..format.arrays import ArraysReader, open_tokens
from ..format.chunks import read_audio_chunk, read_quality
from ..format.header import Header, WindowMeta
from ..format.reader import ItokReader
from ..model.catalog import models_with_identity


@dataclass
class Inspection:
    summary: dict
    windows: list[dict]
    frames: list[dict]
    token_entropy: dict | None = None  # codebook.token_entropy of the kept tokens (+ unreadable windows)

    def to_dict(self) -> dict:
        return {"summary": self.summary, "windows": self.windows, "frames": self.frames,
                "token_entropy": self.token_entropy}


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
        # coded sizes from the index (version 1 files: packed mask, and -1 = token codec not in the index)
        "mask_codec": w.mask_codec,
        "token_codec": w.token_codec,
        "mask_bytes": w.mask_size,
        "token_bytes": w.token_size,
        "bits_per_kept_token": 8 * w.token_size / w.kept if w.kept else 0.0,
        "mask_bits_per_position": 8 * w.mask_size / w.capacity if w.capacity else 0.0,
    } for w in windows]


def token_entropy_of(reader: ItokReader) -> dict:
    """`codebook.token_entropy` of every kept token in the file (levels of the format's FSQ digits), plus
    `unreadable_windows` / `errors` for windows that do not decode (they are left out, not fatal: the rest
    of an inspection comes from the index)."""
    parts, failed, errors = [], [], []
    for i in range(len(reader.windows)):
        try:
            parts.append(reader.read_window(i).tokens)
        except ContainerError as e:
            failed.append(i)
            errors.append(str(e))
    tokens = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
    return {**token_entropy(tokens, FSQ_LEVELS), "levels": list(FSQ_LEVELS), "unreadable_windows": failed,
            "errors": errors}


def source_size(header: Header) -> tuple[int, int]:
    """The source's frame size: `extra.source_size` where the file was coded at another size (--scale)."""
    size = header.extra.get("source_size")
    if isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
        return size[0], size[1]
    return header.width, header.height


def source_start(header: Header) -> float:
    """Seconds from the source's first frame to the file's first frame (`extra.source_start_pts`, --start)."""
    ticks = header.extra.get("source_start_pts")
    if not isinstance(ticks, int) or isinstance(ticks, bool) or ticks < 0:
        return 0.0
    return ticks * header.time_base_num / header.time_base_den


def summarize(header: Header, windows: list[WindowMeta], file_size: int, name: str = "") -> dict:
    """File-level statistics: geometry, timing, coding parameters, token usage and sizes."""
    kept = sum(w.kept for w in windows)
    capacity = sum(w.capacity for w in windows)
    mask_bytes = sum(w.mask_size for w in windows)
    token_bytes = sum(w.token_size for w in windows)
    rates = [w.kept / w.capacity for w in windows if w.capacity]
    pixels = header.num_frames * header.width * header.height
    fps = header.fps_num / header.fps_den
    keep_rate = kept / capacity if capacity else 0.0
    source = source_size(header)
    return {
        "file": name,
        "file_bytes": file_size,
        "source": header.source_name,
        "width": header.width,
        "height": header.height,
        # the source's size where --scale coded another one, and the source time of the first frame (--start)
        "source_width": source[0],
        "source_height": source[1],
        "start_seconds": source_start(header),
        "frames": header.num_frames,
        "fps": f"{header.fps_num}/{header.fps_den}",
        "fps_value": fps,
        "duration_seconds": header.num_frames / fps if fps else 0.0,
        "model": header.model_name,
        "weights_sha256": header.weights_sha256,
        # the installed models with the weights these tokens need (model/catalog.py), the named one first
        "decodes_with": models_with_identity(header.weights_sha256, prefer=header.model_name),
        # the precision the encoder ran in (files written before it was recorded: None)
        "precision": header.extra.get("precision"),
        "strategy": header.strategy,
        # the placement that chose the kept tokens (files written before it was recorded: None)
        "placement": header.extra.get("placement"),
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
        # what the mask and tokens cost as stored (from the index)
        "mask_bytes": mask_bytes,
        "token_bytes": token_bytes,
        "bits_per_kept_token": 8 * token_bytes / kept if kept else 0.0,
        "mask_bits_per_position": 8 * mask_bytes / capacity if capacity else 0.0,
    }


def inspect_file(path: str | Path) -> Inspection:
    """Statistics of an .itok file (or an export: its sizes are the arrays' stored bytes) from its index,
    the token entropy of its decoded tokens, and the target and per-window PSNR of a --target-psnr file
    (summary `target_psnr`, `psnr_mean`, `psnr_min`, `windows_short`; window `psnr`) and the kept audio
    stream (summary `audio`) when the file has those chunks."""
    with open_tokens(path) as r:
        header, windows, size = r.header, r.windows, r.file_size
        quality = read_quality(r)
        audio = audio_summary(r)
        entropy_stats = token_entropy_of(r)
        version = r.format if isinstance(r, ArraysReader) else f"{r.version[0]}.{r.version[1]}"
    insp = Inspection(summarize(header, windows, size, Path(path).name), window_rows(windows),
                      frame_rows(header, windows), entropy_stats)
    insp.summary["format_version"] = version
    if quality is not None:
        insp.summary.update(target_psnr=quality.target_psnr, max_bpp16=quality.max_bpp16,
                            psnr_mean=sum(quality.psnr) / len(quality.psnr), psnr_min=min(quality.psnr),
                            windows_short=quality.short())
        for row, p in zip(insp.windows, quality.psnr):
            row["psnr"] = p
    insp.summary["audio"] = audio
    return insp


def audio_summary(reader: ItokReader) -> dict | None:
    """Codec, channels, rate, duration and size of the file's audio chunk, or None."""
    track = read_audio_chunk(reader)
    return None if track is None else track.summary()
