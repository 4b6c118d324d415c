"""Rate-distortion evaluation: the ELBO router against other ways of spending the same token budget.

For each input video and keep rate every method compresses the video to a real file, which is decoded
back in a stream and compared with the source frame by frame (PSNR over the whole video, mean per-frame
SSIM, both from metrics.py, and mean per-frame ST-LPIPS from perceptual.py, AlexNet by default; the
source's ST-LPIPS features are computed once per video and reused by every method). Methods:

* ``elbo``         the router: top-k positions by the tokenizer's placement (probe gain by default), the
                   same rate in every window;
* ``elbo-error``   the same with the paper's placement, top-k by full-rate error (router.py);
* ``elbo-global``  the router with the ``global`` strategy (rate per window follows its error; the
                   realised keep rate differs from the target and is reported);
* ``random``       the same token count per window, uniformly random positions (seeded);
* ``raster``       the same token count per window, raster-prefix positions;
* ``search``       ElasticTok-style: per window, binary search for the smallest raster prefix whose
                   reconstruction MSE is under a threshold, one full decode per probe. The threshold is
                   the MSE the ELBO router reached on that video at that rate, so the two are compared at
                   matched quality (tokens, network passes, time);
* ``fixed``        keep every token (the base tokenizer), once per video;
* ``x264``/``x265`` the source encoded with PyAV's libx264/libx265 at the best quality (lowest CRF)
                   whose stream is no larger than the ELBO router's .itok file at that rate; when even
                   CRF 51 is larger, CRF 51 and its real size are reported.

``search`` and the codecs are calibrated against ``elbo``, so ``elbo`` runs whenever they are asked for.
"""

from __future__ import annotations

import csv
import io
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from . import __version__
from .codec import (
    CodecError,
    Tokenizer,
    check_model_matches,
    check_window,
    compress_video,
    iter_decoded,
    iter_windows,
    make_header,
    to_frames,
    to_model_input,
)
from .container import ItokReader, ItokWriter, read_header_and_index
from .metrics import mse_sum, psnr_from_mse, ssim_frames
from .perceptual import DEFAULT_NET, NETS, STLPIPS, PerceptualError, ReferenceScorer, load_stlpips
from .plots import atomic_write
from .router import MIN_RATE, random_mask, raster_prefix_mask
from .video_io import VideoInfo, iter_frames, probe_video

TOKEN_METHODS = ("elbo", "elbo-error", "elbo-global", "random", "raster", "search", "fixed")
CODEC_METHODS = ("x264", "x265")
METHODS = TOKEN_METHODS + CODEC_METHODS
DEFAULT_RATES = (0.25, 0.5, 0.75, 1.0)
_CODEC_LIB = {"x264": "libx264", "x265": "libx265"}
_CODEC_FORMAT = {"x264": "h264", "x265": "hevc"}  # raw elementary streams (see encode_codec)
_SSIM_CHUNK = 8  # frames per SSIM batch: bounded memory, fewer Python round trips

EvalProgress = Callable[[int, int, str], None]  # (steps done, steps total, what runs next)


class EvalError(ValueError):
    """One-line, user-facing problem with the evaluation's parameters (a ValueError: a usage error)."""


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


def parse_rates(text: str) -> list[float]:
    """'0.25,0.5,1' -> [0.25, 0.5, 1.0]; every rate in [1/16, 1], duplicates dropped, order kept."""
    rates: list[float] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            r = float(Fraction(part))
        except (ValueError, ZeroDivisionError):
            raise EvalError(f"--rates: {part!r} is not a number") from None
        if not MIN_RATE <= r <= 1:
            raise EvalError(f"--rates: {part} is outside [1/16, 1] (0.0625 to 1)")
        if r not in rates:
            rates.append(r)
    if not rates:
        raise EvalError("--rates: give at least one keep rate, e.g. 0.25,0.5,0.75,1")
    return rates


def resolve_methods(methods: Iterable[str] | None, codecs: bool = True) -> list[str]:
    """Validate method names, drop codecs PyAV lacks (or all with codecs=False), in canonical order."""
    asked = list(METHODS if methods is None else methods)
    unknown = [m for m in asked if m not in METHODS]
    if unknown:
        raise EvalError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    have = available_codecs() if codecs else ()
    return [m for m in METHODS if m in asked and (m not in CODEC_METHODS or m in have)]


# ----------------------------------------------------------------------------- results


@dataclass
class EvalRow:
    """One method on one video at one keep rate."""

    video: str
    method: str
    rate: float  # the target keep rate (token budget); codecs: the rate whose .itok size they match
    frames: int
    width: int
    height: int
    psnr: float
    ssim: float
    lpips: float | None  # mean per-frame ST-LPIPS (lower is better); None when not measured
    mse: float
    file_bytes: int
    bits_per_pixel: float  # real size of the compressed file: 8 x bytes / (frames x W x H)
    encode_seconds: float
    decode_seconds: float
    keep_rate: float | None = None  # tokens kept / tokens possible (None for codecs)
    tokens_kept: int | None = None
    tokens_max: int | None = None
    bpp16: float | None = None  # keep_rate + 1/16: 16-bit tokens plus the 1-bit mask
    passes_per_window: float | None = None  # sender-side network passes (encode, decodes) per window
    windows: int | None = None
    crf: int | None = None  # codecs: the chosen CRF
    threshold_mse: float | None = None  # search: the per-window MSE it had to reach
    window_tokens: list[int] = field(default_factory=list)
    window_capacity: list[int] = field(default_factory=list)
    window_probes: list[int] = field(default_factory=list)  # search: decode probes per window

    def to_dict(self) -> dict:
        return {k: _finite(v) for k, v in asdict(self).items()}


# Columns shared by per-video rows and averages in the CSV (the per-window lists stay in the JSON).
CSV_COLUMNS = [f.name for f in fields(EvalRow) if not f.name.startswith("window_")]
_AVERAGED = ("psnr", "ssim", "lpips", "mse", "file_bytes", "bits_per_pixel", "encode_seconds", "decode_seconds",
             "keep_rate", "tokens_kept", "tokens_max", "bpp16", "passes_per_window")


def _finite(v):
    """JSON has no inf/nan: identical videos (PSNR inf) are written as null."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


@dataclass
class EvalReport:
    rows: list[EvalRow]
    settings: dict

    def averages(self) -> list[dict]:
        """Per (method, rate): the mean over videos of every numeric column (PSNR averaged per video,
        as TokenBench does)."""
        groups: dict[tuple[str, float], list[EvalRow]] = {}
        for r in self.rows:
            groups.setdefault((r.method, r.rate), []).append(r)
        out = []
        order = sorted(groups.items(), key=lambda kv: (METHODS.index(kv[0][0]), kv[0][1]))
        for (method, rate), rows in order:
            avg: dict = {"method": method, "rate": rate, "videos": len(rows)}
            for key in _AVERAGED:
                vals = [getattr(r, key) for r in rows if getattr(r, key) is not None]
                avg[key] = float(np.mean(vals)) if vals else None
            out.append(avg)
        return out

    def matched(self) -> list[dict]:
        """ELBO router vs binary search at matched quality, per rate (means over videos)."""
        by = {(a["method"], a["rate"]): a for a in self.averages()}
        out = []
        for rate in self.settings.get("rates", []):
            e, s = by.get(("elbo", rate)), by.get(("search", rate))
            if not e or not s:
                continue
            out.append({
                "rate": rate,
                "elbo_keep_rate": e["keep_rate"], "search_keep_rate": s["keep_rate"],
                "elbo_psnr": e["psnr"], "search_psnr": s["psnr"],
                "elbo_passes_per_window": e["passes_per_window"],
                "search_passes_per_window": s["passes_per_window"],
                "elbo_encode_seconds": e["encode_seconds"], "search_encode_seconds": s["encode_seconds"],
                "token_saving": 1 - e["keep_rate"] / s["keep_rate"] if s["keep_rate"] else None,
            })
        return out

    def to_dict(self) -> dict:
        return {
            "settings": self.settings,
            "rows": [r.to_dict() for r in self.rows],
            "averages": [{k: _finite(v) for k, v in a.items()} for a in self.averages()],
            "matched_quality": [{k: _finite(v) for k, v in m.items()} for m in self.matched()],
        }

    def to_csv(self, path: str | Path | None = None, overwrite: bool = False) -> str:
        """Per-video rows, then one row per (method, rate) with video = "(mean)". Returns the text and
        writes it (atomically) to `path` when given."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow(asdict(r))
        for a in self.averages():
            w.writerow({**a, "video": "(mean)"})
        text = buf.getvalue()
        if path is not None:
            atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline=""), overwrite)
        return text


# ----------------------------------------------------------------------------- measuring


class _Timed:
    """Wraps an iterator and adds up the time spent producing its items (the decoder's share)."""

    def __init__(self, it: Iterator[np.ndarray]):
        self.it, self.seconds = it, 0.0

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            t0 = time.perf_counter()
            try:
                item = next(self.it)
            except StopIteration:
                return
            finally:
                self.seconds += time.perf_counter() - t0
            yield item


@dataclass
class Quality:
    mse: float
    psnr: float
    ssim: float
    frames: int
    decode_seconds: float
    lpips: float | None = None


def measure(src: str | Path, info: VideoInfo, decoded: Iterator[np.ndarray],
            lpips: ReferenceScorer | None = None) -> Quality:
    """Compare a stream of decoded frames with the source, one small batch of frames at a time; with
    `lpips` (a scorer made for this source video) also the mean per-frame ST-LPIPS."""
    timed = _Timed(decoded)
    sq, n, ssims, lps, count = 0.0, 0, [], [], 0
    ref_batch: list[np.ndarray] = []
    dec_batch: list[np.ndarray] = []

    def flush() -> None:
        nonlocal sq, n
        a, b = np.stack(ref_batch), np.stack(dec_batch)
        s, c = mse_sum(a, b)
        sq, n = sq + s, n + c
        ssims.extend(ssim_frames(a, b).tolist())
        if lpips is not None:
            lps.extend(lpips.score(count - len(ref_batch), a, b).tolist())
        ref_batch.clear()
        dec_batch.clear()

    source = iter_frames(src, info)
    for frame in timed:
        ref = next(source, None)
        if ref is None:
            raise CodecError(f"{info.name}: the decoded video has more frames than the source")
        if frame.shape != ref.shape:
            raise CodecError(f"{info.name}: decoded frame {count} is {frame.shape}, source {ref.shape}")
        ref_batch.append(ref)
        dec_batch.append(frame)
        count += 1
        if len(ref_batch) == _SSIM_CHUNK:
            flush()
    if ref_batch:
        flush()
    if count != info.num_frames:
        raise CodecError(f"{info.name}: decoded {count} frames, the source has {info.num_frames}")
    mse = sq / n
    return Quality(mse, psnr_from_mse(mse), float(np.mean(ssims)), count, timed.seconds,
                   float(np.mean(lps)) if lps else None)


def measure_itok(src: str | Path, info: VideoInfo, itok: str | Path, tok: Tokenizer,
                 lpips: ReferenceScorer | None = None) -> Quality:
    """Decode an .itok file in a stream (as `infotok decompress` does) and measure it."""
    with ItokReader(itok) as reader:
        check_model_matches(reader.header, tok)
        return measure(src, info, iter_decoded(reader, tok), lpips)


def _window_counts(itok: str | Path) -> tuple[list[int], list[int]]:
    _, windows, _ = read_header_and_index(itok)
    return [w.kept for w in windows], [w.capacity for w in windows]


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
    with ItokWriter(dst, header, overwrite=True) as writer:
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


# ----------------------------------------------------------------------------- x264 / x265


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


# ----------------------------------------------------------------------------- the evaluation


def _steps(methods: Sequence[str], rates: Sequence[float]) -> int:
    per_rate = [m for m in methods if m != "fixed"]
    return len(per_rate) * len(rates) + ("fixed" in methods)


def evaluate(paths: Sequence[str | Path], tok: Tokenizer, rates: Sequence[float] = DEFAULT_RATES,
             methods: Sequence[str] | None = None, *, window: int = 33, overlap: int = 3, seed: int = 0,
             progress: EvalProgress | None = None, workdir: str | Path | None = None,
             lpips: str | STLPIPS | None = DEFAULT_NET) -> EvalReport:
    """Evaluate every method on every video at every keep rate; see the module docstring.

    `lpips`: the ST-LPIPS network ("alex", "vgg"), an already loaded one, or None to skip the metric
    (it costs about as much as decoding); videos smaller than the network accepts get no ST-LPIPS.

    Compressed files go to a temporary folder (inside `workdir` when given) and are deleted as soon as
    they are measured, so disk use stays at one file at a time.
    """
    rates = [float(r) for r in rates]
    for r in rates:
        if not MIN_RATE <= r <= 1:
            raise EvalError(f"keep rate {r} is outside [1/16, 1]")
    try:
        check_window(window, overlap)
    except CodecError as exc:
        raise EvalError(str(exc)) from None
    methods = resolve_methods(methods, codecs=True)
    if any(m in methods for m in ("search", *CODEC_METHODS)) and "elbo" not in methods:
        methods = ["elbo", *methods]  # they are calibrated against the router's result
    if isinstance(lpips, str):
        if lpips not in NETS:
            raise EvalError(f"unknown ST-LPIPS network {lpips!r}; choose from {', '.join(NETS)}")
        try:
            lpips = load_stlpips(lpips, tok.device)
        except PerceptualError as exc:
            raise EvalError(str(exc)) from None
    infos = [probe_video(p) for p in paths]  # fail on a bad input before any long work starts
    # the same model, the paper's placement
    by_error = Tokenizer(tok.loaded, tok.device, placement="error", precision=tok.precision)
    total = _steps(methods, rates) * len(paths)
    done = 0
    rows: list[EvalRow] = []
    skipped: list[dict] = []
    lpips_skipped: list[str] = []  # videos smaller than the ST-LPIPS network accepts

    def step(label: str) -> None:
        if progress:
            progress(done, total, label)

    with tempfile.TemporaryDirectory(prefix="infotok-eval-", dir=workdir) as tmp:
        itok = Path(tmp) / "out.itok"

        def token_row(src, info, method: str, rate: float, beta: float, strategy: str,
                      mask_fn=None, coder: Tokenizer = tok) -> EvalRow:
            res = compress_video(src, itok, coder, beta=beta, strategy=strategy, window=window,
                                 overlap=overlap, overwrite=True, mask_fn=mask_fn)
            q = measure_itok(src, info, itok, tok, scorer)
            kept, cap = _window_counts(itok)
            itok.unlink()
            return EvalRow(
                video=info.name, method=method, rate=rate, frames=info.num_frames, width=info.width,
                height=info.height, psnr=q.psnr, ssim=q.ssim, lpips=q.lpips, mse=q.mse, file_bytes=res.file_bytes,
                bits_per_pixel=res.bits_per_pixel, encode_seconds=res.seconds,
                decode_seconds=q.decode_seconds,
                keep_rate=res.keep_rate, tokens_kept=res.tokens_kept, tokens_max=res.tokens_max,
                bpp16=res.bpp16, passes_per_window=float(coder.router_passes), windows=res.windows, window_tokens=kept,
                window_capacity=cap)

        for src, info in zip(paths, infos, strict=True):
            name = info.name
            # One scorer per video: it keeps this source's features for every method and rate.
            scorer = None
            if lpips is not None and min(info.width, info.height) >= lpips.min_size:
                scorer = ReferenceScorer(lpips)
            elif lpips is not None:
                lpips_skipped.append(name)
            pixels = info.num_frames * info.width * info.height
            for rate in rates:
                elbo: EvalRow | None = None
                for method in methods:
                    if method == "fixed":
                        continue
                    step(f"{name} @ {rate:g}: {method}")
                    reason = codec_skip_reason(method, info)
                    if reason:
                        skipped.append({"video": name, "method": method, "rate": rate, "reason": reason})
                        done += 1
                        continue
                    if method == "elbo":
                        elbo = row = token_row(src, info, "elbo", rate, rate, "window")
                    elif method == "elbo-error":
                        row = token_row(src, info, method, rate, rate, "window", coder=by_error)
                    elif method == "elbo-global":
                        row = token_row(src, info, method, rate, rate, "global")
                    elif method == "random":
                        gen = torch.Generator().manual_seed(seed)
                        row = token_row(src, info, method, rate, rate, "window",
                                        lambda e, k, g=gen: random_mask(tuple(e.shape), k, generator=g))
                    elif method == "raster":
                        row = token_row(src, info, method, rate, rate, "window",
                                        lambda e, k: raster_prefix_mask(tuple(e.shape), k))
                    elif method == "search":
                        assert elbo is not None
                        s = compress_search(src, itok, tok, info, elbo.mse, window=window, overlap=overlap)
                        q = measure_itok(src, info, itok, tok, scorer)
                        itok.unlink()
                        kept, cap = sum(s.tokens), sum(s.capacity)
                        row = EvalRow(
                            video=name, method=method, rate=rate, frames=info.num_frames, width=info.width,
                            height=info.height, psnr=q.psnr, ssim=q.ssim, lpips=q.lpips, mse=q.mse,
                            file_bytes=s.file_bytes,
                            bits_per_pixel=8 * s.file_bytes / pixels, encode_seconds=s.seconds,
                            decode_seconds=q.decode_seconds, keep_rate=kept / cap, tokens_kept=kept,
                            tokens_max=cap, bpp16=kept / cap + 1 / 16,
                            passes_per_window=1 + float(np.mean(s.probes)), windows=len(s.tokens),
                            threshold_mse=elbo.mse, window_tokens=s.tokens, window_capacity=s.capacity,
                            window_probes=s.probes)
                    else:  # x264 / x265 at the router's file size
                        assert elbo is not None
                        crf, data, secs = codec_at_size(src, info, method, elbo.file_bytes)
                        q = measure(src, info, decode_codec(data, method), scorer)
                        row = EvalRow(
                            video=name, method=method, rate=rate, frames=info.num_frames, width=info.width,
                            height=info.height, psnr=q.psnr, ssim=q.ssim, lpips=q.lpips, mse=q.mse,
                            file_bytes=len(data),
                            bits_per_pixel=8 * len(data) / pixels, encode_seconds=secs,
                            decode_seconds=q.decode_seconds, crf=crf)
                    rows.append(row)
                    done += 1
            if "fixed" in methods:
                step(f"{name}: fixed")
                rows.append(token_row(src, info, "fixed", 1.0, 1.0, "window"))
                done += 1
    step("done")
    settings = {
        "rates": rates, "methods": list(methods), "window": window, "overlap": overlap, "seed": seed,
        "model": tok.loaded.name, "weights_sha256": tok.loaded.sha256, "device": tok.device.type,
        "videos": [i.name for i in infos], "skipped": skipped, "infotok_version": __version__,
        "torch_version": torch.__version__,
        "psnr": "20 log10(255 / sqrt(MSE over the whole video)), averaged over videos",
        "ssim": "mean per-frame SSIM (Gaussian sigma 1.5, 8-bit range), averaged over videos",
        "lpips": None if lpips is None else
        f"mean per-frame ST-LPIPS (shift-tolerant LPIPS, {lpips.net_name}; frames in [-1, 1] at native "
        "resolution; lower is better), averaged over videos; none for frames under "
        f"{lpips.min_size}x{lpips.min_size}",
        "lpips_skipped": lpips_skipped,
    }
    return EvalReport(rows, settings)


# ----------------------------------------------------------------------------- plot and table

_STYLE = {
    "elbo": ("C0", "o", "-"), "elbo-error": ("C7", "o", "--"), "elbo-global": ("C1", "s", "--"),
    "random": ("C2", "v", ":"),
    "raster": ("C3", "^", ":"), "search": ("C4", "D", "-."), "fixed": ("k", "*", ""),
    "x264": ("C5", "x", "-"), "x265": ("C6", "+", "-"),
}


def plot_rd(report: EvalReport, path: str | Path, title: str = "", overwrite: bool = False) -> Path:
    """PNG of mean PSNR, mean SSIM and (when measured) mean ST-LPIPS against real bits per pixel, one line
    per method, written atomically (matplotlib's object API on the Agg canvas: no pyplot, no display, no
    global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [("psnr", "PSNR (dB)"), ("ssim", "SSIM")]
    if any(a["lpips"] is not None for a in report.averages()):
        panels.append(("lpips", "ST-LPIPS (lower is better)"))
    fig = Figure(figsize=(5.5 * len(panels), 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels))
    by_method: dict[str, list[dict]] = {}
    for a in report.averages():
        by_method.setdefault(a["method"], []).append(a)
    for method, pts in by_method.items():
        pts = sorted(pts, key=lambda a: a["bits_per_pixel"])
        color, marker, line = _STYLE.get(method, ("C7", ".", "-"))
        x = [a["bits_per_pixel"] for a in pts]
        for ax, (key, _) in zip(axes, panels, strict=True):
            y = [a[key] if a[key] is not None and math.isfinite(a[key]) else np.nan for a in pts]
            ax.plot(x, y, color=color, marker=marker, linestyle=line or "none", label=method)
    for ax, (_, label) in zip(axes, panels, strict=True):
        ax.set_xlabel("bits per pixel (real file size)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    n = len(report.settings.get("videos", []))
    fig.suptitle(title or f"rate-distortion, mean over {n} video{'s' * (n != 1)}")
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110), overwrite)


def fmt(v, digits: int = 3) -> str:
    """Table cell: '-' for missing, 'inf' for identical videos."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.{digits}f}"
    return str(v)


def markdown_table(report: EvalReport) -> str:
    """The averages as a Markdown table (used by the CLI's text output and by scripts/bench.py)."""
    head = ["method", "rate", "keep", "BPP16", "bits/pixel", "PSNR", "SSIM", "ST-LPIPS", "passes/window",
            "encode s", "decode s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in report.averages():
        lines.append(
            f"| {a['method']} | {a['rate']:g} | {fmt(a['keep_rate'])} | {fmt(a['bpp16'])} | "
            f"{fmt(a['bits_per_pixel'], 4)} | {fmt(a['psnr'], 2)} | {fmt(a['ssim'], 4)} | {fmt(a['lpips'], 4)} | "
            f"{fmt(a['passes_per_window'], 1)} | {fmt(a['encode_seconds'], 2)} | "
            f"{fmt(a['decode_seconds'], 2)} |")
    return "\n".join(lines)
