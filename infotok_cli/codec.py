"""Compress a video into an .itok file and back: windows -> model -> router -> container.

Frames stream through in coding windows of `window` = 1 + 4k frames that overlap by `overlap`
frames, so memory is bounded by one window whatever the video's length. Each window is padded to the
model's stride (edge pixels repeated; cropped back on decode) and a short last window is padded in time
by repeating its last frame to the nearest 1 + 4k (the padding is dropped on decode).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .audio import AudioError, AudioTrack, pack_audio, read_audio, unpack_audio
from .container import CHUNK_AUDIO, CHUNK_QUALITY, ContainerError, Header, ItokReader, ItokWriter
from .metrics import psnr_video
from .model import SPATIAL_STRIDE, TEMPORAL_STRIDE, InfoTok
from .precision import Precision, resolve_precision
from .quality import PSNR_CAP, WindowQuality, pack_quality
from .router import (
    DEFAULT_PLACEMENT,
    MIN_RATE,
    PLACEMENTS,
    STRATEGIES,
    position_error,
    probe_errors,
    probe_half,
    tokens_for_quality,
    tokens_for_rate,
    top_k_mask,
    video_rates,
    window_rate,
)
from .video_io import VideoInfo, VideoWriter, iter_frames, probe_video
from .weights import LoadedModel

CHUNK_PIXELS = 1 << 22  # pixels per chunk of the per-frame convolution stages
Progress = Callable[[int, int], None]  # (frames done, frames total)
MaskFn = Callable[[torch.Tensor, int], torch.Tensor]  # (placement score [t,h,w], k) -> keep mask


class CodecError(Exception):
    """One-line, user-facing problem with the coding parameters or the model."""


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CodecError("--device cuda asked for, but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise CodecError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def padded_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) rounded up to the model's spatial stride: the frame size a window is coded at."""
    return -(-height // SPATIAL_STRIDE) * SPATIAL_STRIDE, -(-width // SPATIAL_STRIDE) * SPATIAL_STRIDE


def padded_length(frames: int) -> int:
    """Smallest 1 + 4k that is >= frames."""
    return 1 + -(-(frames - 1) // TEMPORAL_STRIDE) * TEMPORAL_STRIDE


def plan_windows(num_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """(first frame, frame count) of each coding window; consecutive windows share `overlap` frames."""
    check_window(window, overlap)
    plan, start = [], 0
    while True:
        count = min(window, num_frames - start)
        plan.append((start, count))
        if start + count >= num_frames:
            return plan
        start += window - overlap


def check_budget(strategy: str, beta: float) -> None:
    """The token-budget options (`--strategy`, `--beta`) are valid, or CodecError."""
    if strategy not in STRATEGIES:
        raise CodecError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if not 1 / 16 <= beta <= 1:
        raise CodecError(f"--beta must be between 1/16 (0.0625) and 1, got {beta}")


def check_window(window: int, overlap: int) -> None:
    if window < 1 or (window - 1) % TEMPORAL_STRIDE:
        raise CodecError(f"--window must be 1 + 4k frames (e.g. 17, 33), got {window}")
    if not 0 <= overlap < window or (window > 1 and overlap > (window - 1) // 2):
        raise CodecError(f"--overlap must be between 0 and half the window, got {overlap}")


def iter_windows(frames: Iterator[np.ndarray], num_frames: int, window: int, overlap: int
                 ) -> Iterator[tuple[int, np.ndarray]]:
    """Group a frame stream into (first frame, frames [n,H,W,3]) windows, keeping only one window."""
    plan = plan_windows(num_frames, window, overlap)
    buffer: list[np.ndarray] = []
    buffer_start = 0
    for start, count in plan:
        drop = start - buffer_start  # frames of the previous window that are not shared
        buffer, buffer_start = buffer[drop:], start
        while len(buffer) < count:
            try:
                buffer.append(next(frames))
            except StopIteration:
                raise CodecError(f"the video ended after {start + len(buffer)} of {num_frames} frames") from None
        yield start, np.stack(buffer[:count])


def to_model_input(frames: np.ndarray, padded_hw: tuple[int, int], device: torch.device) -> torch.Tensor:
    """uint8 [n,H,W,3] -> float [1,3,T,Hp,Wp] in [-1, 1], padded in time (1 + 4k) and space (stride)."""
    n, h, w, _ = frames.shape
    x = torch.from_numpy(frames).to(device).permute(3, 0, 1, 2).float().div_(127.5).sub_(1)
    hp, wp = padded_hw
    if (hp, wp) != (h, w):  # repeat edge pixels: cheaper to code than a black border
        x = torch.nn.functional.pad(x, (0, wp - w, 0, hp - h), mode="replicate")
    t = padded_length(n)
    if t > n:
        x = torch.cat([x, x[:, -1:].expand(-1, t - n, -1, -1)], dim=1)
    return x[None]


def to_frames(x: torch.Tensor, n: int, h: int, w: int) -> np.ndarray:
    """[1,3,T,Hp,Wp] in [-1, 1] -> uint8 [n,h,w,3] (padding cropped), one frame at a time so that no
    float copy of the whole window is made."""
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        frame = x[0, :, i, :h, :w].float().clamp_(-1, 1).add_(1).mul_(127.5).round_()
        out[i] = frame.to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return out


@dataclass
class WindowAnalysis:
    """The router's view of one window: all token indices, the per-position full-rate error (which sets
    the window's rate; estimated from the probe decodes when the full-rate decode is skipped, see
    Tokenizer.analyse) and the placement score (the top k of it keep their tokens)."""

    start: int
    count: int
    padded: int
    indices: torch.Tensor  # int64 [t,h,w]
    error: torch.Tensor  # float32 [t,h,w]
    full_psnr: float | None = None  # PSNR of the full-rate reconstruction (analyse(measure=True))
    score: torch.Tensor | None = None  # float32 [t,h,w]; None means the error itself

    @property
    def placement_score(self) -> torch.Tensor:
        return self.error if self.score is None else self.score


class Tokenizer:
    """A loaded model on a device, with the window-level operations the codec and eval need.

    `placement` chooses which positions keep their tokens (router.py): "probe-gain" (the default: two
    probe decodes per window, no full-rate decode with weights that record e_ref_probe), "drop-gain"
    (the full-rate decode, then the same probes) or "error" (the full-rate error alone, the paper's
    router). `precision` ("auto", "fp32", "bf16", "fp16" or a resolved `Precision`) is the precision the
    model runs in (precision.py: `auto` is bf16 only where the hardware runs it natively).
    """

    def __init__(self, loaded: LoadedModel, device: str | torch.device = "auto", placement: str = DEFAULT_PLACEMENT,
                 precision: str | Precision = "auto"):
        if placement not in PLACEMENTS:
            raise CodecError(f"unknown placement {placement!r}; choose one of {', '.join(PLACEMENTS)}")
        self.loaded = loaded
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.precision = resolve_precision(precision, self.device)
        self.model: InfoTok = loaded.model.to(self.device).for_inference_(self.precision.dtype)
        self.placement = placement

    @property
    def skips_full_decode(self) -> bool:
        """Probe-gain placement with weights that carry e_ref_probe: the probes give both the placement and
        the window's error estimate, so the full-rate decode is not needed (unless a PSNR is measured)."""
        return self.placement == "probe-gain" and self.loaded.e_ref_probe is not None

    @property
    def probe_scale(self) -> float:
        """e_ref / e_ref_probe: turns a probe's error where a token is sent into a full-rate error
        estimate (1 for weights without e_ref_probe)."""
        probe = self.loaded.e_ref_probe
        return 1.0 if probe is None else self.loaded.e_ref / probe

    @property
    def router_passes(self) -> int:
        """Network passes per window before any token is chosen: encode, full-rate decode, probes."""
        if self.placement == "error":
            return 2
        return 3 if self.skips_full_decode else 4

    def autocast(self) -> torch.autocast:
        return self.precision.autocast()

    def bound_chunks(self, height: int, width: int) -> None:
        """Size the per-frame 2-D stages' chunks to about 4 Mpixels, so peak memory does not grow with
        the frame size times the window length (results do not depend on the chunk size)."""
        chunk = max(1, CHUNK_PIXELS // (TEMPORAL_STRIDE * height * width))
        self.model.encoder.frame_chunk = self.model.decoder.frame_chunk = chunk

    @torch.no_grad()
    def analyse(self, frames: np.ndarray, start: int, padded_hw: tuple[int, int],
                measure: bool = False) -> WindowAnalysis:
        """Encode a window and score its positions for placement; the full-rate error sets its rate.

        `error` placement: decode all tokens once (the full-rate pass) and rank by that error.
        `drop-gain`: that pass, then two probe decodes give each token's drop gain against it.
        `probe-gain`: the gain from the two probes alone: dropped error minus the full-rate error
        estimated from the probe that sends the token (sent error x e_ref / e_ref_probe; x 1 for weights
        without e_ref_probe). With e_ref_probe the window's rate follows the same estimate and the
        full-rate decode is skipped. With `measure`, the full-rate decode always runs, for the
        PSNR of that reconstruction against `frames` (and the error is then the measured one).
        """
        self.bound_chunks(*padded_hw)
        x, codes, indices = self.encode_window(frames, padded_hw)
        error = full_psnr = None
        if measure or not self.skips_full_decode:
            x_full = self.decode_full(codes)
            error = self.full_rate_error(x, x_full)
            if measure:
                n, h, w, _ = frames.shape
                full_psnr = psnr_video(to_frames(x_full, n, h, w), frames)
            del x_full  # before the probe decodes, so that one reconstruction exists at a time
        score = None
        if self.placement != "error":
            dropped, sent = self.probe_scores(x, codes)
            estimate = sent * self.probe_scale  # the full-rate error, as the probes see it
            if error is None:
                error = estimate
            score = dropped - (estimate if self.placement == "probe-gain" else error)
        return WindowAnalysis(start, frames.shape[0], x.shape[2] - frames.shape[0], indices[0].cpu(), error,
                              full_psnr, score)

    # analyse()'s parts, separate so that a profiler (scripts/bench.py) can time each one
    def encode_window(self, frames: np.ndarray, padded_hw: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        """uint8 frames -> (model input, codes, token indices)."""
        x = to_model_input(frames, padded_hw, self.device)
        with self.autocast():
            return (x, *self.model.encode(x))

    def decode_full(self, codes: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.model.decode(codes)

    def full_rate_error(self, x: torch.Tensor, x_full: torch.Tensor) -> torch.Tensor:
        return position_error(x, x_full)[0].cpu()

    def probe_scores(self, x: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(error where dropped, error where sent) of every position [t,h,w] from the two probe decodes
        (router.probe_errors, fixed probe half)."""

        def decode(keep: torch.Tensor) -> torch.Tensor:
            with self.autocast():
                return self.model.decode(codes, keep)

        dropped, sent = probe_errors(x, decode, probe_half(tuple(codes.shape[1:-1])))
        return dropped[0].cpu(), sent[0].cpu()

    def window_psnr(self, a: WindowAnalysis, keep: torch.Tensor, frames: np.ndarray) -> float:
        """PSNR of window `a` decoded from the tokens in `keep`, as a receiver decodes it (one pass)."""
        n, h, w, _ = frames.shape
        return psnr_video(to_frames(self.reconstruct(a.indices, keep), n, h, w), frames)

    @torch.no_grad()
    def reconstruct(self, indices: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Token indices [t,h,w] + keep mask -> frames [1,3,T,Hp,Wp] in [-1, 1] (autocast precision)."""
        self.bound_chunks(indices.shape[1] * SPATIAL_STRIDE, indices.shape[2] * SPATIAL_STRIDE)
        with self.autocast():
            return self.model.decode_indices(indices[None].to(self.device), keep[None].to(self.device))


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
    # the decodes the rate search made per window (besides the router's encode and full-rate decode)
    target_psnr: float | None = None
    max_bpp16: float | None = None
    window_psnr: list[float] = field(default_factory=list)
    windows_short: int = 0
    search_probes: list[int] = field(default_factory=list)
    audio: dict | None = None  # the kept audio stream (AudioTrack.summary()), None when none was kept
    precision: str = "fp32"  # the precision the model ran in (precision.py)

    def to_dict(self) -> dict:
        return asdict(self)


def check_quality_options(target_psnr: float | None, max_bpp16: float | None) -> None:
    if target_psnr is not None and not (math.isfinite(target_psnr) and 1 <= target_psnr <= 99):
        raise CodecError(f"--target-psnr must be between 1 and 99 dB, got {target_psnr}")
    if max_bpp16 is not None:
        if target_psnr is None:
            raise CodecError("--max-bpp16 caps the rate of --target-psnr; give --target-psnr too")
        if not (math.isfinite(max_bpp16) and MIN_RATE + 1 / 16 <= max_bpp16 <= 1 + 1 / 16):
            raise CodecError(f"--max-bpp16 must be between 0.125 and 1.0625 (keep 1/16..1), got {max_bpp16}")


def notices_for(info: VideoInfo, audio_note: str | None = None) -> list[str]:
    notes = [audio_note] if audio_note else []
    if info.bit_depth > 8:
        notes.append(f"the input is {info.bit_depth}-bit; it is converted to 8-bit")
    return notes


def make_header(info: VideoInfo, tok: Tokenizer, window: int, overlap: int, beta: float, strategy: str,
                extra: dict | None = None) -> Header:
    """The .itok header for a source video coded with `tok` (frames padded to the model's stride)."""
    padded_height, padded_width = padded_size(info.height, info.width)
    return Header(
        source_name=info.name, width=info.width, height=info.height, num_frames=info.num_frames,
        fps_num=info.fps_num, fps_den=info.fps_den, time_base_num=info.time_base_num,
        time_base_den=info.time_base_den, pts=list(info.pts), rotation=info.rotation,
        sar_num=info.sar_num, sar_den=info.sar_den, model_name=tok.loaded.name,
        weights_sha256=tok.loaded.sha256, window=window, overlap=overlap, beta=float(beta),
        strategy=strategy, padded_width=padded_width, padded_height=padded_height, encoder_version=__version__,
        extra={**(extra or {}), "precision": tok.precision.name},
    )


def compress_video(src: str | Path, dst: str | Path, tok: Tokenizer, *, beta: float = 0.5,
                   strategy: str = "global", window: int = 33, overlap: int = 3, overwrite: bool = False,
                   progress: Progress | None = None, mask_fn: MaskFn | None = None,
                   target_psnr: float | None = None, max_bpp16: float | None = None,
                   audio: bool = True) -> CompressResult:
    """Compress `src` to the .itok file `dst`; returns the statistics of the result.

    `mask_fn` replaces the router's placement (top-k of the tokenizer's placement score) for baselines;
    the number of kept tokens still follows the strategy.

    `target_psnr` (dB) replaces the budget (`beta`, `strategy`): each window keeps the fewest top-scoring
    tokens whose reconstruction reaches the target (router.tokens_for_quality, warm-started from the
    previous window's count), everything when even that falls short, and at most `max_bpp16 - 1/16` of
    its positions when `max_bpp16` is given. The target and each window's achieved PSNR are stored in a
    window-quality chunk.

    `audio`: keep the source's first audio stream, its compressed packets as they are, in an AUDIO
    chunk (a stream that cannot be kept is dropped with a notice).
    """
    check_budget(strategy, beta)
    check_window(window, overlap)
    check_quality_options(target_psnr, max_bpp16)
    t0 = time.perf_counter()
    info = probe_video(src)
    track, audio_note = None, None
    if audio and info.has_audio:
        try:
            track = read_audio(src)
        except AudioError as e:
            audio_note = f"the audio is not kept: {e}"
    elif info.has_audio:
        audio_note = "the input has audio; it is not kept (--no-audio)"
    if target_psnr is not None:
        # The budget options do not apply; the header records the rate control in `extra`.
        strategy, beta = "window", 1.0
        extra = {"rate_control": "target_psnr", "target_psnr": float(target_psnr)}
        if max_bpp16 is not None:
            extra["max_bpp16"] = float(max_bpp16)
    else:
        extra = None
    header = make_header(info, tok, window, overlap, beta, strategy, extra)
    hp, wp = header.padded_height, header.padded_width
    choose = mask_fn or top_k_mask
    rates: list[float] = []
    psnrs: list[float] = []
    probes: list[int] = []
    kept = capacity = 0
    with ItokWriter(dst, header, overwrite=overwrite) as writer:

        def emit(a: WindowAnalysis, rate: float | None = None, keep: torch.Tensor | None = None) -> None:
            nonlocal kept, capacity
            if keep is None:
                keep = choose(a.placement_score, tokens_for_rate(rate, a.error.numel()))
            k = int(keep.sum())
            tokens = a.indices[keep].numpy().astype(np.uint16)  # raster order of the kept positions
            writer.write_window(a.start, a.count, a.padded, keep.numpy(), tokens)
            rates.append(k / a.error.numel())
            kept += k
            capacity += a.error.numel()

        pending: list[WindowAnalysis] = []  # the `video` strategy needs every window's error first
        k_prev: float | None = None  # previous window's keep rate: the search's warm start
        for start, frames in iter_windows(iter_frames(src, info), info.num_frames, window, overlap):
            a = tok.analyse(frames, start, (hp, wp), measure=target_psnr is not None)
            if target_psnr is not None:
                n = a.error.numel()
                cap = None if max_bpp16 is None else math.floor((max_bpp16 - 1 / 16) * n + 1e-9)
                found = tokens_for_quality(
                    n, lambda k, a=a, frames=frames: tok.window_psnr(a, choose(a.placement_score, k), frames),
                    target_psnr, a.full_psnr, k_start=None if k_prev is None else round(k_prev * n), k_cap=cap)
                emit(a, keep=choose(a.placement_score, found.k))
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
    )


def blend_weights(overlap: int) -> np.ndarray:
    """Weights of the earlier window on the shared frames: 0.75, 0.5, 0.25 for an overlap of 3."""
    return np.array([(overlap - i) / (overlap + 1) for i in range(overlap)], dtype=np.float32)


def iter_decoded(reader: ItokReader, tok: Tokenizer, progress: Progress | None = None) -> Iterator[np.ndarray]:
    """Decode an open .itok file frame by frame (uint8 [H,W,3]), blending window overlaps."""
    h = reader.header
    carry: np.ndarray | None = None  # last frames of the previous window, waiting to be blended
    carry_end = 0
    done = 0
    for meta in reader.windows:
        rec = reader.read_window(meta.index)
        keep = torch.from_numpy(rec.keep_mask)
        indices = torch.zeros(keep.shape, dtype=torch.int64)
        indices[keep] = torch.from_numpy(rec.tokens.astype(np.int64))
        frames = to_frames(tok.reconstruct(indices, keep), meta.frame_count, h.height, h.width)
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

    def to_dict(self) -> dict:
        return asdict(self)


def check_model_matches(header: Header, tok: Tokenizer) -> None:
    if header.weights_sha256 != tok.loaded.sha256:
        raise CodecError(
            f"the file was made with model {header.model_name} (weights {header.weights_sha256[:12]}), "
            f"but the model given is {tok.loaded.name} (weights {tok.loaded.sha256[:12]}); "
            "pass the matching --model")


def read_audio_chunk(reader: ItokReader) -> AudioTrack | None:
    """The audio track stored in an open .itok file, or None; a damaged chunk raises ContainerError."""
    from .audio import MAX_AUDIO_BYTES

    body = reader.read_skippable(CHUNK_AUDIO, MAX_AUDIO_BYTES)
    if body is None:
        return None
    try:
        return unpack_audio(body)
    except AudioError as e:
        raise ContainerError(str(e)) from None


def decompress_video(src: str | Path, dst: str | Path, tok: Tokenizer, *, lossless: bool = False,
                     overwrite: bool = False, progress: Progress | None = None,
                     audio: bool = True) -> DecompressResult:
    """Decode the .itok file `src` to the video `dst` with the source's size, frame count and timing,
    and (unless `audio` is false) the source's audio, muxed back as it was stored."""
    t0 = time.perf_counter()
    with ItokReader(src) as reader:
        h = reader.header
        check_model_matches(h, tok)
        fps = Fraction(h.fps_num, h.fps_den)
        track = read_audio_chunk(reader) if audio else None
        with VideoWriter(dst, h.width, h.height, fps, pts=list(h.pts),
                         time_base=Fraction(h.time_base_num, h.time_base_den), rotation=h.rotation,
                         sar=Fraction(h.sar_num, h.sar_den), lossless=lossless, overwrite=overwrite,
                         audio=track) as out:
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
                            precision=tok.precision.name)
