"""Decode an .itok file back to frames and to a video: container -> model -> blended frames -> video.

`iter_decoded` decodes window by window (memory: one window), blending the frames two windows share;
`MemoryReader` serves tokens held in memory to it, so in-memory decoding blends exactly as file
decoding does. `decompress_video` writes the frames with the source's size, frame count and timing,
and the audio the file keeps.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import CodecError
from ..format.arrays import open_tokens
from ..format.chunks import read_audio_chunk
from ..format.reader import ItokReader
from ..io.video_writer import VideoWriter
from .geometry import Progress, blend_weights

if TYPE_CHECKING:  # pragma: no cover
    from .tokenizer import Tokenizer



class MemoryReader:
    """What `iter_decoded` reads from an .itok file, served from windows in memory, so that in-memory
    decoding blends window overlaps exactly as file decoding does."""

    def __init__(self, clip: Any):
        self.header = SimpleNamespace(width=clip.width, height=clip.height, num_frames=clip.num_frames,
                                      overlap=clip.overlap)
        self._windows = clip.windows
        self.windows = [SimpleNamespace(index=i, frame_start=w.frame_start, frame_count=w.frame_count)
                        for i, w in enumerate(clip.windows)]

    def read_window(self, i: int) -> SimpleNamespace:
        w = self._windows[i]
        return SimpleNamespace(keep_mask=w.keep, tokens=w.kept_tokens)


def iter_decoded(reader: ItokReader, tok: Tokenizer, progress: Progress | None = None) -> Iterator[np.ndarray]:
    """Decode an open .itok file frame by frame (uint8 [H,W,3]), blending window overlaps."""
    h = reader.header
    tiles = tok.recorded_tiles(h)  # decode in the encoder's tiles (InfoTok-Flex's tokens depend on them)
    carry: np.ndarray | None = None  # last frames of the previous window, waiting to be blended
    carry_end = 0
    done = 0
    for meta in reader.windows:
        rec = reader.read_window(meta.index)
        keep = torch.from_numpy(rec.keep_mask)
        indices = torch.zeros(keep.shape, dtype=torch.int64)
        indices[keep] = torch.from_numpy(rec.tokens.astype(np.int64))
        frames = tok.reconstruct_frames(indices, keep, meta.frame_count, h.height, h.width, tiles)
        shared = carry_end - meta.frame_start
        if carry is not None and shared > 0:
            w = blend_weights(shared)[:, None, None, None]
            mixed = carry[-shared:].astype(np.float32) * w + frames[:shared].astype(np.float32) * (1 - w)
            frames[:shared] = np.round(mixed).astype(np.uint8)
        if carry is not None:
            yield from carry[: len(carry) - max(shared, 0)]
        overlap_next = min(h.overlap, meta.frame_count - 1) if meta.index + 1 < len(reader.windows) else 0
        cut = meta.frame_count - overlap_next
        yield from frames[:cut]
        done += cut
        carry, carry_end = frames[cut:], meta.frame_start + meta.frame_count
        if progress:
            progress(done, h.num_frames)
    if carry is not None and len(carry):
        yield from carry


@dataclass
class DecompressResult:
    input: str
    output: str
    frames: int
    width: int
    height: int
    seconds: float
    frames_per_second: float
    lossless: bool
    audio: dict | None = None  # the audio muxed into the output (AudioTrack.summary()), if any
    notices: list[str] = field(default_factory=list)
    precision: str = "fp32"  # the precision the model ran in (precision.py)
    file_bytes: int = 0  # the size of the video written (to a file or to stdout)

    def to_dict(self) -> dict:
        return asdict(self)



def decompress_video(src: str | Path, dst: str | Path, tok: Tokenizer, *, lossless: bool = False,
                     overwrite: bool = False, progress: Progress | None = None,
                     audio: bool = True, format: str | None = None) -> DecompressResult:
    """Decode the .itok file `src` (or the arrays `export` writes) to the video `dst` with the source's size,
    frame count and timing, and (unless `audio` is false) the source's audio, muxed back as it was stored.

    `dst` "-" streams the video to stdout in the container `format` (mkv, mp4, mov or nut;
    constants.STREAM_FORMATS), e.g. for `| ffplay -`; a file's container follows its suffix."""
    t0 = time.perf_counter()
    with open_tokens(src) as reader:
        h = reader.header
        tok.check_weights(h.weights_sha256, h.model_name)
        fps = Fraction(h.fps_num, h.fps_den)
        track = read_audio_chunk(reader) if audio else None
        with VideoWriter(dst, h.width, h.height, fps, pts=list(h.pts),
                         time_base=Fraction(h.time_base_num, h.time_base_den), rotation=h.rotation,
                         sar=Fraction(h.sar_num, h.sar_den), lossless=lossless, overwrite=overwrite,
                         audio=track, container=format) as out:
            count = 0
            for frame in iter_decoded(reader, tok, progress):
                out.write(frame)
                count += 1
            if count != h.num_frames:  # raised inside the writer, so no partial output is left
                raise CodecError(f"decoded {count} frames, but the file declares {h.num_frames}")
    seconds = time.perf_counter() - t0
    return DecompressResult(input=str(src), output=str(dst), frames=count, width=h.width, height=h.height,
                            seconds=seconds, frames_per_second=count / seconds, lossless=lossless,
                            audio=track.summary() if track is not None else None, notices=out.notices,
                            precision=tok.precision.name, file_bytes=out.bytes_written)

