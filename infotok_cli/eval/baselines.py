"""The baselines `infotok eval` compares the router with: standard codecs (PyAV's libx264 / libx265 at
the router's file size) and an ElasticTok-style search (per window, binary search for the smallest
raster prefix whose reconstruction reaches an MSE threshold, one full decode per probe).
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

from ..coding.compress import make_header
from ..coding.geometry import iter_windows, to_frames, to_model_input
from ..coding.router import raster_prefix_mask
from ..coding.tokenizer import Tokenizer
from ..constants import MIN_RATE
from ..io.files import itok_writer
from ..io.video import VideoInfo, iter_frames

CODEC_METHODS = ("x264", "x265")
_CODEC_LIB = {"x264": "libx264", "x265": "libx265"}
_CODEC_FORMAT = {"x264": "h264", "x265": "hevc"}  # raw elementary streams (see encode_codec)


# ----------------------------------------------------------------------------- x264 / x265


def available_codecs() -> tuple[str, ...]:
    """The comparison codecs that PyAV's bundled FFmpeg can encode."""
    return tuple(m for m in CODEC_METHODS if _CODEC_LIB[m] in av.codecs_available)


def codec_skip_reason(method: str, info: VideoInfo) -> str | None:
    """Why a comparison codec cannot run on this video, or None when it can."""
    if method == "x265" and min(info.width, info.height) < 64:
        # PyAV's bundled libx265 corrupts the heap (glibc aborts the process) on frames narrower than
        # one 64-pixel CTU, so such videos are skipped rather than risking the whole run.
        return "libx265 is unreliable on frames smaller than 64x64"
    return None


def encode_codec(src: str | Path, info: VideoInfo, method: str, crf: int, preset: str = "medium") -> bytes:
    """Encode the source (as decoded RGB) with libx264/libx265 at `crf` to an in-memory elementary stream.

    Raw Annex-B streams without the encoders' informational SEI (x264 writes its whole option string
    into every file, x265 likewise) keep the codec's overhead comparable to the compact .itok header: at
    the sizes compared here an MP4 wrapper plus those SEI would add 1-4 kB, which dwarfs short clips.
    """
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=_CODEC_FORMAT[method]) as out:
        stream = out.add_stream(_CODEC_LIB[method], rate=info.fps)
        stream.width, stream.height = info.width, info.height
        # 4:2:0 is what these codecs are normally used with; odd sizes need 4:4:4.
        even = info.width % 2 == 0 and info.height % 2 == 0
        stream.pix_fmt = "yuv420p" if even else "yuv444p"
        opts = {"crf": str(crf), "preset": preset}
        if method == "x265":
            opts["x265-params"] = "log-level=error:info=0"  # quiet on stderr, no option-string SEI
        stream.options = opts
        bsf = av.BitStreamFilterContext("filter_units=remove_types=6", stream) if method == "x264" else None

        def mux(packets) -> None:
            for packet in packets:
                out.mux(bsf.filter(packet) if bsf else [packet])

        for i, frame in enumerate(iter_frames(src, info)):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            mux(stream.encode(vf))
        mux(stream.encode(None))
        if bsf:
            out.mux(bsf.filter(None))
    return buf.getvalue()


def decode_codec(data: bytes, method: str) -> Iterator[np.ndarray]:
    """Decode an elementary stream from encode_codec to uint8 RGB frames."""
    with av.open(io.BytesIO(data), mode="r", format=_CODEC_FORMAT[method]) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def codec_at_size(src: str | Path, info: VideoInfo, method: str, target_bytes: int
                  ) -> tuple[int, bytes, float]:
    """Lowest CRF (best quality) whose file is no larger than target_bytes, by binary search over
    0..51; CRF 51 when even that is larger. Returns (crf, file bytes, seconds of that one encode)."""
    cache: dict[int, tuple[bytes, float]] = {}

    def enc(crf: int) -> bytes:
        if crf not in cache:
            t0 = time.perf_counter()
            data = encode_codec(src, info, method, crf)
            cache[crf] = (data, time.perf_counter() - t0)
        return cache[crf][0]

    lo, hi = 0, 51
    while lo < hi:
        mid = (lo + hi) // 2
        if len(enc(mid)) <= target_bytes:
            hi = mid
        else:
            lo = mid + 1
    data = enc(lo)
    return lo, data, cache[lo][1]


# ----------------------------------------------------------------------------- ElasticTok-style search


def search_floor(capacity: int) -> int:
    """Fewest tokens the search may keep: ceil(N/16), so its rate never falls below 1/16."""
    return max(1, math.ceil(capacity * MIN_RATE))


def search_keep(capacity: int, mse_at: Callable[[int], float], threshold: float) -> tuple[int, int]:
    """Smallest token count k in [ceil(N/16), N] whose reconstruction MSE is <= threshold, by binary
    search over k (assuming MSE falls as k grows, as ElasticTok does). Returns (k, probes); at most
    ceil(log2(N)) probes. When no count reaches the threshold the search ends at N (keep everything)
    without probing it, since the receiver's decode of the full set is not a probe."""
    lo, hi = search_floor(capacity), capacity
    probes = 0
    while lo < hi:
        mid = (lo + hi) // 2
        probes += 1
        if mse_at(mid) <= threshold:
            hi = mid
        else:
            lo = mid + 1
    return lo, probes


@dataclass
class SearchResult:
    tokens: list[int]
    capacity: list[int]
    probes: list[int]
    seconds: float
    file_bytes: int


@torch.no_grad()
def compress_search(src: str | Path, dst: str | Path, tok: Tokenizer, info: VideoInfo, threshold: float, *,
                    window: int = 33, overlap: int = 3) -> SearchResult:
    """ElasticTok-style compression: encode each window once, then binary-search the raster-prefix
    token count with one full decode per probe; the result is a regular .itok file."""
    t0 = time.perf_counter()
    extra = {"method": "search", "threshold_mse": threshold}
    header = make_header(info, tok, window, overlap, 1.0, "window", extra)
    hw = (header.padded_height, header.padded_width)
    res = SearchResult([], [], [], 0.0, 0)
    with itok_writer(dst, header, overwrite=True) as writer:
        for start, frames in iter_windows(iter_frames(src, info), info.num_frames, window, overlap):
            x = to_model_input(frames, hw, tok.device)
            with tok.autocast():
                _, indices = tok.model.encode(x)
            indices = indices[0].cpu()
            shape = tuple(indices.shape)
            ref = frames.astype(np.float64)

            def mse_at(k: int, indices: torch.Tensor = indices, shape: tuple = shape,
                       ref: np.ndarray = ref) -> float:
                rec = to_frames(tok.reconstruct(indices, raster_prefix_mask(shape, k)), ref.shape[0],
                                info.height, info.width)
                return float(np.mean((rec.astype(np.float64) - ref) ** 2))

            k, probes = search_keep(indices.numel(), mse_at, threshold)
            keep = raster_prefix_mask(shape, k)
            tokens = indices[keep].numpy().astype(np.uint16)
            writer.write_window(start, frames.shape[0], x.shape[2] - frames.shape[0], keep.numpy(), tokens)
            res.tokens.append(k)
            res.capacity.append(indices.numel())
            res.probes.append(probes)
    res.seconds = time.perf_counter() - t0
    res.file_bytes = Path(dst).stat().st_size
    return res
