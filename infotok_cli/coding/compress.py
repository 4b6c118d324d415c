"""Compress a video into an .itok file: windows -> model -> router -> container.

Frames stream through one coding window at a time (geometry.py); each window is analysed by the
tokenizer (tokenizer.py), gets its token count from rate control (rate.py) and its kept positions from
the router's placement, and is written to the .itok file (atomically, io/files.py). The source's audio
is kept as it is in an AUDIO chunk, a `--target-psnr` run's per-window quality in a WINDOW-QUALITY chunk.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..constants import __version__
from ..errors import AudioError
from ..format.chunks import PSNR_CAP, AudioTrack, WindowQuality, pack_audio, pack_quality
from ..format.header import Header
from ..format.layout import CHUNK_AUDIO, CHUNK_QUALITY
from ..io.audio import read_audio
from ..io.files import itok_writer
from ..io.source import STDIN, STDIN_NAME, InputOptions, select, source_path, trim_audio
from ..io.video import VideoInfo, iter_frames, probe_video
from .geometry import Progress, check_window, iter_windows, padded_size
from .rate import check_budget, check_quality_options, tokens_for_quality, video_rates, window_rate

if TYPE_CHECKING:  # pragma: no cover
    from .tokenizer import Tokenizer, WindowAnalysis

MaskFn = Callable[[torch.Tensor, int], torch.Tensor]  # (placement score [t,h,w], k) -> keep mask


@dataclass
class CompressResult:
    input: str
    output: str
    frames: int
    width: int
    height: int
    windows: int
    tokens_kept: int
    tokens_max: int
    keep_rate: float
    bpp16: float
    file_bytes: int
    bits_per_pixel: float
    seconds: float
    frames_per_second: float
    window_rates: list[float] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    # --target-psnr runs: the target, each window's achieved PSNR, the windows that fell short of it and
    # the decodes the rate search made per window (besides the router's passes and, unless the head's rate
    # curve starts the search, the full-rate decode made before it)
    target_psnr: float | None = None
    max_bpp16: float | None = None
    window_psnr: list[float] = field(default_factory=list)
    windows_short: int = 0
    search_probes: list[int] = field(default_factory=list)
    audio: dict | None = None  # the kept audio stream (AudioTrack.summary()), None when none was kept
    precision: str = "fp32"  # the precision the model ran in (precision.py)
    strategy: str = ""  # the budget strategy used (the model's default when none was given)
    placement: str = ""  # the router's placement (router.py)
    # the input's own frame size (width/height are the coded size, which --scale may change) and the source
    # time of the first coded frame after the input's first frame (--start)
    source_width: int = 0
    source_height: int = 0
    start_seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)



def notices_for(info: VideoInfo, audio_note: str | None = None) -> list[str]:
    notes = [audio_note] if audio_note else []
    if info.bit_depth > 8:
        notes.append(f"the input is {info.bit_depth}-bit; it is converted to 8-bit")
    return notes


def make_header(info: VideoInfo, tok: Tokenizer, window: int, overlap: int, beta: float, strategy: str,
                extra: dict | None = None) -> Header:
    """The .itok header for a source video coded with `tok` (frames padded to the model's stride)."""
    padded_height, padded_width = padded_size(info.height, info.width)
    extra = {**(extra or {}), "precision": tok.precision.name, "placement": tok.placement}
    if tok.tile_plan(padded_height, padded_width) is not None:  # coded in tiles: the decoder uses the same
        extra["tiles"] = tok.tile_spec.record()
    return Header(
        source_name=info.name, width=info.width, height=info.height, num_frames=info.num_frames,
        fps_num=info.fps_num, fps_den=info.fps_den, time_base_num=info.time_base_num,
        time_base_den=info.time_base_den, pts=list(info.pts), rotation=info.rotation,
        sar_num=info.sar_num, sar_den=info.sar_den, model_name=tok.name,
        weights_sha256=tok.sha256, window=window, overlap=overlap, beta=float(beta),
        strategy=strategy, padded_width=padded_width, padded_height=padded_height, encoder_version=__version__,
        extra=extra,
    )


def compress_video(src: str | Path, dst: str | Path, tok: Tokenizer, *, beta: float = 0.5,
                   strategy: str | None = None, window: int = 33, overlap: int = 3, overwrite: bool = False,
                   progress: Progress | None = None, mask_fn: MaskFn | None = None,
                   target_psnr: float | None = None, max_bpp16: float | None = None,
                   audio: bool = True, scale: str | tuple[int, int] | None = None,
                   start: str | float | None = None, duration: str | float | None = None) -> CompressResult:
    """Compress `src` to the .itok file `dst`; returns the statistics of the result.

    `mask_fn` replaces the router's placement (top-k of the tokenizer's placement score) for baselines;
    the number of kept tokens still follows the strategy (None: the model's default, `global` where it
    carries a reference error, else `window`).

    `target_psnr` (dB) replaces the budget (`beta`, `strategy`): each window keeps the fewest top-scoring
    tokens whose reconstruction reaches the target (rate.tokens_for_quality, started from the count the
    router head's rate curve predicts where the model has one, else from the previous window's count),
    everything when even that falls short, and at most `max_bpp16 - 1/16` of its positions when
    `max_bpp16` is given. The target and each window's achieved PSNR are stored in a window-quality chunk.

    `audio`: keep the source's first audio stream, its compressed packets as they are, in an AUDIO
    chunk (a stream that cannot be kept is dropped with a notice).

    `scale` ("W:H", ffmpeg's meaning), `start` and `duration` (seconds) choose what is coded of the input
    (io/source.py; the audio is cut to match); `src` "-" reads the video from stdin.
    """
    strategy = strategy or tok.default_strategy
    check_budget(strategy, beta)
    check_window(window, overlap)
    check_quality_options(target_psnr, max_bpp16)
    selection = InputOptions.parse(scale, start, duration)  # before any input is read
    t0 = time.perf_counter()
    with source_path(src) as path:
        probed = probe_video(path)
        if os.fspath(src) == STDIN:
            probed.name = STDIN_NAME
        info, cut = select(probed, selection)
        track, audio_note = None, None
        if audio and info.has_audio:
            try:
                track = read_audio(path)
                track = trim_audio(track, cut) if track is not None and selection.trims else track
                audio_note = None if track is not None else "the input's audio has no packet in the kept interval"
            except AudioError as e:
                audio_note = f"the audio is not kept: {e}"
        elif info.has_audio:
            audio_note = "the input has audio; it is not kept (--no-audio)"
        return _compress(path, src, dst, tok, info, track, audio_note, t0, beta=beta, strategy=strategy,
                         window=window, overlap=overlap, overwrite=overwrite, progress=progress, mask_fn=mask_fn,
                         target_psnr=target_psnr, max_bpp16=max_bpp16)


def _compress(path: Path, src: str | Path, dst: str | Path, tok: Tokenizer, info: VideoInfo, track: AudioTrack | None,
              audio_note: str | None, t0: float, *, beta: float, strategy: str, window: int, overlap: int,
              overwrite: bool, progress: Progress | None, mask_fn: MaskFn | None, target_psnr: float | None,
              max_bpp16: float | None) -> CompressResult:
    """compress_video once the input is known: `path` to read, `info` the frames to code."""
    if target_psnr is not None:
        # The budget options do not apply; the header records the rate control in `extra`.
        strategy, beta = "window", 1.0
        extra = {"rate_control": "target_psnr", "target_psnr": float(target_psnr)}
        if max_bpp16 is not None:
            extra["max_bpp16"] = float(max_bpp16)
    else:
        extra = {}
    if info.scaled:
        extra["source_size"] = [info.source_width, info.source_height]
    if info.start_pts:
        extra["source_start_pts"] = info.start_pts
    header = make_header(info, tok, window, overlap, beta, strategy, extra)
    hp, wp = header.padded_height, header.padded_width
    rates: list[float] = []
    psnrs: list[float] = []
    probes: list[int] = []
    kept = capacity = 0

    def choose(a: WindowAnalysis, k: int) -> torch.Tensor:
        return mask_fn(a.placement_score, k) if mask_fn is not None else tok.choose(a, k)

    with itok_writer(dst, header, overwrite=overwrite) as writer:

        def emit(a: WindowAnalysis, rate: float | None = None, keep: torch.Tensor | None = None) -> None:
            nonlocal kept, capacity
            if keep is None:
                keep = choose(a, tok.token_count(rate, a.error.numel()))
            k = int(keep.sum())
            tokens = a.indices[keep].numpy().astype(np.uint16)  # raster order of the kept positions
            writer.write_window(a.start, a.count, a.padded, keep.numpy(), tokens)
            rates.append(k / a.error.numel())
            kept += k
            capacity += a.error.numel()

        pending: list[WindowAnalysis] = []  # the `video` strategy needs every window's error first
        k_prev: float | None = None  # previous window's keep rate: the search's warm start
        # the head's rate curve guides the search instead (and no full-rate decode is made up front)
        guided = mask_fn is None and tok.predicts_quality
        for start, frames in iter_windows(iter_frames(path, info), info.num_frames, window, overlap):
            a = tok.analyse(frames, start, (hp, wp), measure=target_psnr is not None and not guided)
            if target_psnr is not None:
                n = a.error.numel()
                cap = None if max_bpp16 is None else math.floor((max_bpp16 - 1 / 16) * n + 1e-9)
                curve = tok.head.rate_curve(a.summary) if guided else None
                estimate = None if curve is None else lambda k, c=curve, n=n: c.psnr(k / n)
                found = tokens_for_quality(
                    n, lambda k, a=a, frames=frames: tok.window_psnr(a, choose(a, k), frames),
                    target_psnr, a.full_psnr, estimate=estimate,
                    k_start=None if k_prev is None else round(k_prev * n), k_cap=cap)
                emit(a, keep=choose(a, found.k))
                psnrs.append(min(PSNR_CAP, found.psnr))
                probes.append(found.probes)
                k_prev = found.k / n
            elif strategy == "video":
                pending.append(a)
            else:
                emit(a, window_rate(strategy, beta, a.error.mean().item(), tok.loaded.e_ref))
            if progress:
                progress(start + frames.shape[0], info.num_frames)
        if pending:
            for a, r in zip(pending, video_rates(beta, [a.error.mean().item() for a in pending],
                                                 [a.error.numel() for a in pending])):
                emit(a, r)
        quality = None
        if target_psnr is not None:
            quality = WindowQuality(float(target_psnr), max_bpp16, psnrs)
            writer.write_chunk(CHUNK_QUALITY, pack_quality(quality))
        if track is not None:
            writer.write_chunk(CHUNK_AUDIO, pack_audio(track))
    seconds = time.perf_counter() - t0
    size = Path(dst).stat().st_size
    keep_rate = kept / capacity
    notices = notices_for(info, audio_note)
    if quality is not None and quality.short():
        notices.append(f"{quality.short()} of {len(psnrs)} windows did not reach {target_psnr:g} dB "
                       f"(they keep {'the --max-bpp16 cap' if max_bpp16 is not None else 'every token'})")
    return CompressResult(
        input=str(src), output=str(dst), frames=info.num_frames, width=info.width, height=info.height,
        windows=len(rates), tokens_kept=kept, tokens_max=capacity, keep_rate=keep_rate,
        bpp16=keep_rate + 1 / 16, file_bytes=size,
        bits_per_pixel=8 * size / (info.num_frames * info.width * info.height), seconds=seconds,
        frames_per_second=info.num_frames / seconds, window_rates=rates, notices=notices,
        target_psnr=target_psnr, max_bpp16=max_bpp16, window_psnr=psnrs,
        windows_short=quality.short() if quality else 0, search_probes=probes,
        audio=track.summary() if track is not None else None, precision=tok.precision.name,
        strategy=strategy, placement=tok.placement if mask_fn is None else "custom",
        source_width=info.source_width or info.width, source_height=info.source_height or info.height,
        start_seconds=float(info.start_pts * info.time_base),
    )
