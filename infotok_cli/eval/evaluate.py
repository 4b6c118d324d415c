"""Rate-distortion evaluation: the ELBO router against other ways of spending the same token budget.

For each input video and keep rate every method compresses the video to a real file, which is decoded
back in a stream and compared with the source frame by frame (PSNR over the whole video, mean per-frame
SSIM, both from coding/metrics.py, and mean per-frame ST-LPIPS from perceptual.py, AlexNet by default; the
source's ST-LPIPS features are computed once per video and reused by every method). Methods:

* ``elbo``         the router: top-k positions by the tokenizer's placement (the model's default unless
                   one is given), the same rate in every window;
* ``elbo-error``   the same with the paper's placement, top-k by full-rate error (coding/router.py);
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

import numpy as np
import torch

from ..coding.compress import compress_video
from ..coding.decompress import iter_decoded
from ..coding.geometry import check_window
from ..coding.metrics import mse_sum, psnr_from_mse, ssim_frames
from ..coding.router import random_mask, raster_prefix_mask
from ..coding.tokenizer import Tokenizer
from ..constants import MIN_RATE, __version__
from ..errors import CodecError
from ..format.reader import ItokReader, read_header_and_index
from ..io.atomic import atomic_write
from ..io.video import VideoInfo, iter_frames, probe_video
from .baselines import CODEC_METHODS, available_codecs, codec_at_size, codec_skip_reason, compress_search, decode_codec
from .perceptual import DEFAULT_NET, NETS, STLPIPS, PerceptualError, ReferenceScorer, load_stlpips
from .tables import average_cells, fmt, markdown_table

__all__ = ["CSV_COLUMNS", "DEFAULT_RATES", "METHODS", "EvalError", "EvalReport", "EvalRow", "available_codecs",
           "average_cells", "evaluate", "fmt", "markdown_table", "measure", "measure_itok", "metric_network",
           "parse_methods", "parse_rates", "plot_rd", "resolve_methods"]

TOKEN_METHODS = ("elbo", "elbo-error", "elbo-global", "random", "raster", "search", "fixed")
DEFAULT_RATES = (0.25, 0.5, 0.75, 1.0)
_SSIM_CHUNK = 8  # frames per SSIM batch: bounded memory, fewer Python round trips

EvalProgress = Callable[[int, int, str], None]  # (steps done, steps total, what runs next)


class EvalError(ValueError):
    """One-line, user-facing problem with the evaluation's parameters (a ValueError: a usage error)."""


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


def parse_methods(text: str | None, codecs: bool = True) -> list[str]:
    """'elbo, search' -> the methods to run (`resolve_methods`); None: all of them."""
    return resolve_methods(None if text is None else [m.strip() for m in text.split(",") if m.strip()], codecs)


def metric_network(name: str, device: str | torch.device = "cpu") -> STLPIPS | None:
    """The ST-LPIPS network `name` ("alex", "vgg") loaded on `device`, or None for "none". An unknown name
    is an EvalError (a usage error); missing or damaged weights a PerceptualError."""
    if name == "none":
        return None
    if name not in NETS:
        raise EvalError(f"--lpips: unknown network {name!r}; choose from {', '.join(NETS)} or none")
    return load_stlpips(name, device)


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


    def write(self, csv_path: str | Path | None = None, plot: str | Path | None = None,
              overwrite: bool = False) -> list[str]:
        """The CSV and the rate-distortion PNG written to files (atomically); returns a line per file."""
        written = []
        if csv_path is not None:
            self.to_csv(csv_path, overwrite=overwrite)
            written.append(f"wrote {csv_path} ({len(self.rows)} rows)")
        if plot is not None:
            plot_rd(self, plot, overwrite=overwrite)
            written.append(f"wrote {plot}")
        return written


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
        tok.check_weights(reader.header.weights_sha256, reader.header.model_name)
        return measure(src, info, iter_decoded(reader, tok), lpips)


def _window_counts(itok: str | Path) -> tuple[list[int], list[int]]:
    _, windows, _ = read_header_and_index(itok)
    return [w.kept for w in windows], [w.capacity for w in windows]

# ----------------------------------------------------------------------------- the methods


@dataclass
class _Video:
    """One input video and what every method measures it with."""

    src: Path
    info: VideoInfo
    scorer: ReferenceScorer | None  # keeps this source's ST-LPIPS features for every method and rate


@dataclass
class _Context:
    """What the methods share during one evaluation."""

    tok: Tokenizer
    by_error: Tokenizer  # the same model with the paper's placement
    itok: Path  # the temporary .itok file every token method writes, measures and deletes
    window: int
    overlap: int
    seed: int

    def token_row(self, v: _Video, method: str, rate: float, strategy: str = "window", mask_fn=None,
                  coder: Tokenizer | None = None) -> EvalRow:
        """Compress with the router (or `mask_fn`'s placement) at `rate`, decode and measure."""
        coder = coder or self.tok
        res = compress_video(v.src, self.itok, coder, beta=rate, strategy=strategy, window=self.window,
                             overlap=self.overlap, overwrite=True, mask_fn=mask_fn)
        q = measure_itok(v.src, v.info, self.itok, self.tok, v.scorer)
        _, windows, _ = read_header_and_index(self.itok)
        self.itok.unlink()
        return EvalRow(
            video=v.info.name, method=method, rate=rate, frames=v.info.num_frames, width=v.info.width,
            height=v.info.height, psnr=q.psnr, ssim=q.ssim, lpips=q.lpips, mse=q.mse, file_bytes=res.file_bytes,
            bits_per_pixel=res.bits_per_pixel, encode_seconds=res.seconds, decode_seconds=q.decode_seconds,
            keep_rate=res.keep_rate, tokens_kept=res.tokens_kept, tokens_max=res.tokens_max, bpp16=res.bpp16,
            passes_per_window=float(coder.router_passes), windows=res.windows,
            window_tokens=[w.kept for w in windows], window_capacity=[w.capacity for w in windows])


# A method: (context, video, rate, the router's row at that rate or None) -> its row.
Method = Callable[[_Context, _Video, float, "EvalRow | None"], EvalRow]


def _elbo(ctx: _Context, v: _Video, rate: float, elbo: EvalRow | None) -> EvalRow:
    return ctx.token_row(v, "elbo", rate)


def _elbo_error(ctx: _Context, v: _Video, rate: float, elbo: EvalRow | None) -> EvalRow:
    return ctx.token_row(v, "elbo-error", rate, coder=ctx.by_error)


def _elbo_global(ctx: _Context, v: _Video, rate: float, elbo: EvalRow | None) -> EvalRow:
    return ctx.token_row(v, "elbo-global", rate, "global")


def _random(ctx: _Context, v: _Video, rate: float, elbo: EvalRow | None) -> EvalRow:
    gen = torch.Generator().manual_seed(ctx.seed)
    return ctx.token_row(v, "random", rate, mask_fn=lambda e, k: random_mask(tuple(e.shape), k, generator=gen))


def _raster(ctx: _Context, v: _Video, rate: float, elbo: EvalRow | None) -> EvalRow:
    return ctx.token_row(v, "raster", rate, mask_fn=lambda e, k: raster_prefix_mask(tuple(e.shape), k))


def _search(ctx: _Context, v: _Video, rate: float, elbo: EvalRow | None) -> EvalRow:
    assert elbo is not None
    info = v.info
    s = compress_search(v.src, ctx.itok, ctx.tok, info, elbo.mse, window=ctx.window, overlap=ctx.overlap)
    q = measure_itok(v.src, info, ctx.itok, ctx.tok, v.scorer)
    ctx.itok.unlink()
    kept, cap = sum(s.tokens), sum(s.capacity)
    return EvalRow(
        video=info.name, method="search", rate=rate, frames=info.num_frames, width=info.width, height=info.height,
        psnr=q.psnr, ssim=q.ssim, lpips=q.lpips, mse=q.mse, file_bytes=s.file_bytes,
        bits_per_pixel=8 * s.file_bytes / (info.num_frames * info.width * info.height), encode_seconds=s.seconds,
        decode_seconds=q.decode_seconds, keep_rate=kept / cap, tokens_kept=kept, tokens_max=cap,
        bpp16=kept / cap + 1 / 16, passes_per_window=1 + float(np.mean(s.probes)), windows=len(s.tokens),
        threshold_mse=elbo.mse, window_tokens=s.tokens, window_capacity=s.capacity, window_probes=s.probes)


def _fixed(ctx: _Context, v: _Video, rate: float, elbo: EvalRow | None) -> EvalRow:
    return ctx.token_row(v, "fixed", 1.0)


def _codec(method: str) -> Method:
    def run(ctx: _Context, v: _Video, rate: float, elbo: EvalRow | None) -> EvalRow:
        """The source with libx264 / libx265 at the router's file size."""
        assert elbo is not None
        info = v.info
        crf, data, secs = codec_at_size(v.src, info, method, elbo.file_bytes)
        q = measure(v.src, info, decode_codec(data, method), v.scorer)
        return EvalRow(
            video=info.name, method=method, rate=rate, frames=info.num_frames, width=info.width,
            height=info.height, psnr=q.psnr, ssim=q.ssim, lpips=q.lpips, mse=q.mse, file_bytes=len(data),
            bits_per_pixel=8 * len(data) / (info.num_frames * info.width * info.height), encode_seconds=secs,
            decode_seconds=q.decode_seconds, crf=crf)

    return run


# Every method, in report order. `fixed` runs once per video (keep 1); `search` and the codecs are
# calibrated against `elbo` at the same rate, so `elbo` runs whenever they do.
METHOD_TABLE: dict[str, Method] = {
    "elbo": _elbo, "elbo-error": _elbo_error, "elbo-global": _elbo_global, "random": _random, "raster": _raster,
    "search": _search, "fixed": _fixed, **{m: _codec(m) for m in CODEC_METHODS},
}
METHODS = tuple(METHOD_TABLE)
ONCE_PER_VIDEO = ("fixed",)
CALIBRATED = ("search", *CODEC_METHODS)


# ----------------------------------------------------------------------------- the evaluation


def _steps(methods: Sequence[str], rates: Sequence[float]) -> int:
    per_rate = [m for m in methods if m not in ONCE_PER_VIDEO]
    return len(per_rate) * len(rates) + sum(m in methods for m in ONCE_PER_VIDEO)


def _load_lpips(lpips: str | STLPIPS | None, tok: Tokenizer) -> STLPIPS | None:
    if not isinstance(lpips, str):
        return lpips
    if lpips not in NETS:
        raise EvalError(f"unknown ST-LPIPS network {lpips!r}; choose from {', '.join(NETS)}")
    try:
        return load_stlpips(lpips, tok.device)
    except PerceptualError as exc:
        raise EvalError(str(exc)) from None


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
    if any(m in methods for m in CALIBRATED) and "elbo" not in methods:
        methods = ["elbo", *methods]  # they are calibrated against the router's result
    lpips = _load_lpips(lpips, tok)
    infos = [probe_video(p) for p in paths]  # fail on a bad input before any long work starts
    by_error = Tokenizer(tok.loaded, tok.device, placement="error", precision=tok.precision)
    total, done = _steps(methods, rates) * len(paths), 0
    rows: list[EvalRow] = []
    skipped: list[dict] = []
    lpips_skipped: list[str] = []  # videos smaller than the ST-LPIPS network accepts

    def step(label: str) -> None:
        if progress:
            progress(done, total, label)

    with tempfile.TemporaryDirectory(prefix="infotok-eval-", dir=workdir) as tmp:
        ctx = _Context(tok, by_error, Path(tmp) / "out.itok", window, overlap, seed)
        for src, info in zip(paths, infos, strict=True):
            fits = lpips is not None and min(info.width, info.height) >= lpips.min_size
            if lpips is not None and not fits:
                lpips_skipped.append(info.name)
            video = _Video(Path(src), info, ReferenceScorer(lpips) if fits else None)
            plan = [(rate, m) for rate in rates for m in methods if m not in ONCE_PER_VIDEO]
            plan += [(1.0, m) for m in methods if m in ONCE_PER_VIDEO]
            elbo: dict[float, EvalRow] = {}
            for rate, method in plan:
                step(f"{info.name} @ {rate:g}: {method}" if method not in ONCE_PER_VIDEO else f"{info.name}: {method}")
                reason = codec_skip_reason(method, info)
                if reason:
                    skipped.append({"video": info.name, "method": method, "rate": rate, "reason": reason})
                else:
                    row = METHOD_TABLE[method](ctx, video, rate, elbo.get(rate))
                    if method == "elbo":
                        elbo[rate] = row
                    rows.append(row)
                done += 1
    step("done")
    return EvalReport(rows, _settings(tok, infos, rates, methods, window, overlap, seed, skipped, lpips,
                                      lpips_skipped))


def _settings(tok: Tokenizer, infos: list[VideoInfo], rates: list[float], methods: list[str], window: int,
              overlap: int, seed: int, skipped: list[dict], lpips: STLPIPS | None, lpips_skipped: list[str]) -> dict:
    return {
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
