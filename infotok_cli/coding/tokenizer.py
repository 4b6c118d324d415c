"""The tokenizer engine: one model, loaded once, on one device, with everything done with it.

A `Tokenizer` runs the model on coding windows (`analyse`: encode and score positions for placement;
`reconstruct`: decode kept tokens), and offers the whole-video operations on top: `encode` / `decode`
for frames in memory and `compress_file` / `decompress_file` for files (the pipelines of
`compress.py` and `decompress.py`). `for_file` builds the tokenizer that decodes a given file and
`TokenizerCache` keeps one per model for a batch of files.

Stages can be timed from the outside through `tracer`: a callable that takes a stage name ("encoder",
"full-rate decode", "probe decodes", "router", "decoder") and returns a context manager around it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..constants import PLACEMENTS, SPATIAL_STRIDE, TEMPORAL_STRIDE
from ..errors import CodecError, OptionError, WeightsMismatchError
from ..format.arrays import open_tokens
from ..format.header import Header
from ..format.tokens import Geometry, Tokens, TokenWindow
from ..model.catalog import imported_models, model_for_file, shipped_models
from ..model.family import TokenizerModel
from ..model.router_head import dithered_score, extract_features, window_summary
from ..model.store import LoadedModel, load_model
from .compress import CompressResult, compress_video
from .decompress import DecompressResult, MemoryReader, decompress_video, iter_decoded
from .geometry import check_window, padded_length, padded_size, plan_windows, to_frames, to_model_input
from .metrics import psnr_video
from .precision import Precision, resolve_device, resolve_precision
from .rate import check_budget, rates_for
from .router import position_error, probe_errors, probe_half, top_k_mask
from .tiling import Tile, TiledPasses, TileSpec, plan_tiles

CHUNK_PIXELS = 1 << 22  # pixels per chunk of the per-frame convolution stages
Tracer = Callable[[str], AbstractContextManager]  # stage name -> a context manager around that stage


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
    dither: bool = False  # a learned score: spread low rates' tokens (router_head.dithered_score)
    summary: torch.Tensor | None = None  # the head's window statistics (router_head.window_summary)

    @property
    def placement_score(self) -> torch.Tensor:
        return self.error if self.score is None else self.score


class Tokenizer:
    """One model, loaded once, on one device.

    `Tokenizer()` loads the default shipped model; `Tokenizer("infotok-m")`, `Tokenizer("my.safetensors",
    device="cuda")` or `Tokenizer(loaded_model)` another. `placement` chooses which positions keep their
    tokens (router.py): "probe-gain" (two probe decodes per window, no full-rate decode with weights that
    record e_ref_probe), "drop-gain" (the full-rate decode, then the same probes), "error" (the full-rate
    error alone, the paper's router: faster encoding, lower quality at the same rate) or "predicted" (the
    weights' learned router head on the encoder's latent: no decode at all). None: the model's default
    (`default_placement`).
    `precision="auto"` runs bf16 where the hardware runs it natively, else float32; "fp32" / "bf16"
    (/ "fp16" on CUDA) force one (precision.py). Not thread-safe: give each worker its own.
    """

    def __init__(self, model: str | os.PathLike | LoadedModel | None = None, device: str | torch.device = "auto",
                 placement: str | None = None, precision: str | Precision = "auto"):
        if placement is not None and placement not in PLACEMENTS:
            raise OptionError(f"unknown placement {placement!r}; choose one of {', '.join(PLACEMENTS)}")
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.loaded = model if isinstance(model, LoadedModel) else load_model(model, self.device)
        self.precision = resolve_precision(precision, self.device)
        self.model: TokenizerModel = self.loaded.model.to(self.device).for_inference_(self.precision.dtype)
        self.head = self.loaded.router_head
        self.placement = placement or self.default_placement
        if self.placement == "predicted":
            if self.head is None:
                raise OptionError(f"model {self.loaded.name} has no learned router head; use --placement "
                                  f"{self.default_placement} (its default)")
            self.head = self.head.to(self.device)
        self.tracer: Tracer | None = None
        self.tile_spec = self.tiles(*self.model.default_tile)

    @classmethod
    def for_file(cls, header: Header, model: str | os.PathLike | None = None, device: str | torch.device = "auto",
                 precision: str | Precision = "auto") -> Tokenizer:
        """The tokenizer that decodes a file (`model`, else the shipped model its header names, else the
        default); raises WeightsError if its weights are not the ones the file was made with."""
        tok = cls(model_for_file(header.model_name, model, header.weights_sha256), device, precision=precision)
        tok.check_weights(header.weights_sha256, header.model_name)
        return tok

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def sha256(self) -> str:
        return self.loaded.sha256

    @property
    def default_placement(self) -> str:
        """`predicted` for weights that carry a learned router head (within 0.15 dB of probe-gain on the dev
        set, no decode: docs/MODEL_CARD.md); else the model family's own (model/family.py)."""
        return "predicted" if self.head is not None else self.model.default_placement

    @property
    def default_strategy(self) -> str:
        """`global` where the weights carry a reference error (e_ref) to rate windows against, else `window`
        (imported weights that were not calibrated: every window keeps beta)."""
        return "global" if self.loaded.e_ref > 0 else "window"

    def token_count(self, rate: float, capacity: int) -> int:
        """Tokens a window of `capacity` positions keeps at `rate`, by the model family's rule (round(rate x
        N), or a released model's own count, so that its placement keeps what the authors' code does)."""
        return self.model.keep_count(rate, capacity)

    def check_weights(self, sha256: str, model_name: str) -> None:
        """Raise WeightsMismatchError (a WeightsError and a CodecError) unless this model's weights are
        `sha256` (tokens only decode with them)."""
        if sha256 != self.loaded.sha256:
            raise WeightsMismatchError(
                f"the file was made with model {model_name} (weights {sha256[:12]}), but the model given is "
                f"{self.loaded.name} (weights {self.loaded.sha256[:12]}); pass the matching --model"
                + ("" if model_name in (*shipped_models(), *imported_models()) else
                   f", or import it: `infotok models import CHECKPOINT --name {model_name}`"))

    # -- tiles (tiling.py)

    def tiles(self, size: int, halo: int) -> TileSpec:
        """Tiles of cores of at most `size` pixels with `halo` pixels of context for this model: starting where
        the model's attention windows do, and no larger than its largest input (model/family.py)."""
        return TileSpec(size, halo, self.model.tile_align, self.model.largest_side)

    def tile_plan(self, height: int, width: int, spec: TileSpec | None = None) -> list[Tile] | None:
        """The tiles of a padded frame size (None: coded whole)."""
        return plan_tiles(height, width, spec or self.tile_spec)

    def recorded_tiles(self, header: Any) -> TileSpec:
        """The tiles a file's header records (its encoder's), else this tokenizer's."""
        recorded = (getattr(header, "extra", None) or {}).get("tiles")
        if not isinstance(recorded, dict):
            return self.tile_spec
        size, halo = recorded.get("size"), recorded.get("halo")
        if type(size) is not int or type(halo) is not int:
            raise CodecError(f"the header's tiles {recorded!r} are not two integers")
        return self.tiles(size, halo)

    # -- the model on windows

    @property
    def skips_full_decode(self) -> bool:
        """Probe-gain placement with weights that carry e_ref_probe: the probes give both the placement and
        the window's error estimate, so the full-rate decode is not needed (unless a PSNR is measured)."""
        return self.placement == "predicted" or (self.placement == "probe-gain" and self.loaded.e_ref_probe is not None)

    @property
    def predicts_quality(self) -> bool:
        """Placement `predicted` with a head that carries a rate curve: each window's analysis comes with
        a predicted rate-PSNR curve, which starts --target-psnr's search (no full-rate decode up front)."""
        return self.placement == "predicted" and bool(self.head.cfg.curve_rates)

    @property
    def probe_scale(self) -> float:
        """e_ref / e_ref_probe: turns a probe's error where a token is sent into a full-rate error
        estimate (1 for weights without e_ref_probe)."""
        probe = self.loaded.e_ref_probe
        return 1.0 if probe is None else self.loaded.e_ref / probe

    @property
    def router_passes(self) -> int:
        """Network passes per window before any token is chosen: encode, full-rate decode, probes."""
        if self.placement == "predicted":
            return 1
        if self.placement == "error":
            return 2
        return 3 if self.skips_full_decode else 4

    def autocast(self) -> torch.autocast:
        return self.precision.autocast()

    def stage(self, name: str) -> AbstractContextManager:
        """The tracer's context around a stage of the work, or nothing when no tracer is set."""
        return nullcontext() if self.tracer is None else self.tracer(name)

    def bound_chunks(self, height: int, width: int) -> None:
        """Size the per-frame 2-D stages' chunks to about 4 Mpixels, so peak memory does not grow with
        the frame size times the window length (results do not depend on the chunk size)."""
        chunk = max(1, CHUNK_PIXELS // (TEMPORAL_STRIDE * height * width))
        self.model.bound_memory(chunk)

    def _decode(self, codes: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        with self.autocast():
            return self.model.decode(codes, keep)

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
        `predicted`: the router head's score and full-rate error estimate, from the encode alone.
        """
        tiles = self.tile_plan(*padded_hw)
        if tiles is not None:
            return self._analyse_tiled(frames, start, padded_hw, measure, tiles)
        self.bound_chunks(*padded_hw)
        if self.placement == "predicted":
            return self._analyse_predicted(frames, start, padded_hw, measure)
        with self.stage("encoder"):
            x = to_model_input(frames, padded_hw, self.device)
            with self.autocast():
                codes, indices = self.model.encode(x)
        error = full_psnr = None
        if measure or not self.skips_full_decode:
            with self.stage("full-rate decode"):
                x_full = self._decode(codes)
            with self.stage("router"):
                error = position_error(x, x_full)[0].cpu()
            if measure:
                n, h, w, _ = frames.shape
                full_psnr = psnr_video(to_frames(x_full, n, h, w), frames)
            del x_full  # before the probe decodes, so that one reconstruction exists at a time
        score = None
        if self.placement != "error":
            dropped, sent = self.probe_scores(x, codes, tuple(indices.shape[1:]))
            estimate = sent * self.probe_scale  # the full-rate error, as the probes see it
            if error is None:
                error = estimate
            score = dropped - (estimate if self.placement == "probe-gain" else error)
        return WindowAnalysis(start, frames.shape[0], x.shape[2] - frames.shape[0], indices[0].cpu(), error,
                              full_psnr, score)

    def _analyse_predicted(self, frames: np.ndarray, start: int, padded_hw: tuple[int, int],
                           measure: bool) -> WindowAnalysis:
        with self.stage("encoder"):
            x = to_model_input(frames, padded_hw, self.device)
            with self.autocast():
                features, codes, indices = extract_features(self.model, x)
        with self.stage("router"), self.autocast():
            score, error = self.head.predict(features)
            summary = window_summary(features, score, error.log())
        full_psnr = None
        if measure:
            with self.stage("full-rate decode"):
                x_full = self._decode(codes)
            n, h, w, _ = frames.shape
            full_psnr = psnr_video(to_frames(x_full, n, h, w), frames)
            error = position_error(x, x_full)[0]
        return WindowAnalysis(start, frames.shape[0], x.shape[2] - frames.shape[0], indices[0].cpu(),
                              error.cpu(), full_psnr, score.cpu(), dither=True, summary=summary)

    def _analyse_tiled(self, frames: np.ndarray, start: int, padded_hw: tuple[int, int], measure: bool,
                       tiles: list[Tile]) -> WindowAnalysis:
        """`analyse` with every pass run tile by tile (tiling.py): the same maps over the whole token grid."""
        n = frames.shape[0]
        grid = (1 + (padded_length(n) - 1) // TEMPORAL_STRIDE, padded_hw[0] // SPATIAL_STRIDE,
                padded_hw[1] // SPATIAL_STRIDE)
        passes = TiledPasses(self, tiles, grid, frames)
        score = summary = full_psnr = error = None
        if self.placement == "predicted":
            indices, score, error, summary = passes.encode_predicted()
            if measure:
                error, full_psnr = passes.errors(indices, None, "full-rate decode", psnr=True)
        else:
            indices = passes.encode()
            if measure or not self.skips_full_decode:
                error, full_psnr = passes.errors(indices, None, "full-rate decode", psnr=measure)
            if self.placement != "error":
                dropped, sent = passes.probe_scores(indices)
                estimate = sent * self.probe_scale
                if error is None:
                    error = estimate
                score = dropped - (estimate if self.placement == "probe-gain" else error)
        return WindowAnalysis(start, n, padded_length(n) - n, indices, error, full_psnr, score,
                              dither=self.placement == "predicted", summary=summary)

    def probe_scores(self, x: torch.Tensor, codes: torch.Tensor,
                     grid: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """(error where dropped, error where sent) of every position of the latent `grid` [t,h,w] from the
        two probe decodes (router.probe_errors, fixed probe half). `codes` are whatever the model's encode
        returned (their layout differs between model families)."""
        with self.stage("probe decodes"):
            dropped, sent = probe_errors(x, lambda keep: self._decode(codes, keep), probe_half(grid))
            return dropped[0].cpu(), sent[0].cpu()

    def choose(self, a: WindowAnalysis, k: int) -> torch.Tensor:
        """The keep mask of window `a` with `k` tokens: the top k of its placement score (a learned score
        dithered at low rates)."""
        with self.stage("router"):
            score = a.placement_score
            if a.dither and self.head is not None:
                score = dithered_score(score, k / score.numel(), self.head.cfg.dither)
            return top_k_mask(score, k)

    def window_psnr(self, a: WindowAnalysis, keep: torch.Tensor, frames: np.ndarray) -> float:
        """PSNR of window `a` decoded from the tokens in `keep`, as a receiver decodes it (one pass)."""
        n, h, w, _ = frames.shape
        return psnr_video(self.reconstruct_frames(a.indices, keep, n, h, w), frames)

    def reconstruct_frames(self, indices: torch.Tensor, keep: torch.Tensor, n: int, h: int, w: int,
                           spec: TileSpec | None = None) -> np.ndarray:
        """Token indices [t,h,w] + keep mask -> the window's frames uint8 [n,h,w,3]; in tiles (`spec`, else
        this tokenizer's) when the frame exceeds them."""
        tiles = self.tile_plan(indices.shape[1] * SPATIAL_STRIDE, indices.shape[2] * SPATIAL_STRIDE, spec)
        if tiles is None:
            return to_frames(self.reconstruct(indices, keep), n, h, w)
        with torch.no_grad():
            return TiledPasses(self, tiles, tuple(indices.shape)).frames_of(indices, keep, n, h, w)

    @torch.no_grad()
    def reconstruct(self, indices: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Token indices [t,h,w] + keep mask -> frames [1,3,T,Hp,Wp] in [-1, 1] (autocast precision)."""
        self.bound_chunks(indices.shape[1] * SPATIAL_STRIDE, indices.shape[2] * SPATIAL_STRIDE)
        with self.stage("decoder"), self.autocast():
            return self.model.decode_indices(indices[None].to(self.device), keep[None].to(self.device))

    # -- frames in memory

    def encode(self, frames: np.ndarray | torch.Tensor, *, beta: float = 0.5, strategy: str | None = None,
               window: int = 33, overlap: int = 3) -> Tokens:
        """Frames uint8 `[T, H, W, 3]` -> `Tokens`, exactly as `compress` codes the same frames (strategy
        None: the model's default_strategy)."""
        strategy = strategy or self.default_strategy
        check_budget(strategy, beta)
        check_window(window, overlap)
        frames = as_frames(frames)
        n, h, w, _ = frames.shape
        padded_hw = padded_size(h, w)
        analyses = [self.analyse(frames[start:start + count], start, padded_hw)
                    for start, count in plan_windows(n, window, overlap)]
        rates = rates_for(strategy, beta, [a.error.mean().item() for a in analyses],
                          [a.error.numel() for a in analyses], self.loaded.e_ref)
        out = Tokens(width=w, height=h, num_frames=n, window=window, overlap=overlap, beta=float(beta),
                     strategy=strategy, model_name=self.name, weights_sha256=self.sha256)
        for i, (a, rate) in enumerate(zip(analyses, rates)):
            keep = self.choose(a, self.token_count(rate, a.error.numel()))
            out.windows.append(TokenWindow.from_arrays(i, a.start, a.count, a.padded, keep.numpy(),
                                                       a.indices[keep].numpy().astype(np.uint16)))
        return out

    def geometry(self, width: int, height: int, num_frames: int, fps: float | str, *, window: int = 33,
                 overlap: int = 3) -> Geometry:
        """The `Geometry` of a clip of this size, frame count and rate coded by this model: its windows' latent
        grids (`latent_shapes`) are what `Tokens.from_arrays` takes for it."""
        return Geometry.for_video(width, height, num_frames, fps, self.name, self.sha256, window=window,
                                  overlap=overlap)

    def decode(self, tokens: Tokens | Any) -> np.ndarray:
        """Tokens (from `encode`, `load` or `Tokens.from_arrays`) -> frames uint8 `[T, H, W, 3]`, exactly as
        `decompress` decodes them (window overlaps blended)."""
        self.check_weights(tokens.weights_sha256, tokens.model_name)
        out = np.empty((tokens.num_frames, tokens.height, tokens.width, 3), dtype=np.uint8)
        count = 0
        for count, frame in enumerate(iter_decoded(MemoryReader(tokens), self), start=1):  # type: ignore[arg-type]
            if count > tokens.num_frames:
                break
            out[count - 1] = frame
        if count != tokens.num_frames:
            raise CodecError(f"decoded {count} frames, but the tokens declare {tokens.num_frames}")
        return out

    # -- files

    def compress_file(self, src: str | os.PathLike, dst: str | os.PathLike, *, force: bool = False,
                      **options: Any) -> CompressResult:
        """Compress the video `src` to the .itok file `dst` (options: beta, strategy, window, overlap,
        target_psnr, max_bpp16, audio, scale, start, duration, progress; see `compress.compress_video`)."""
        return compress_video(src, dst, self, overwrite=force, **options)

    def decompress_file(self, src: str | os.PathLike, dst: str | os.PathLike, *, force: bool = False,
                        **options: Any) -> DecompressResult:
        """Decode the .itok file (or export) `src` to the video `dst` (options: lossless, audio, format, progress)."""
        with open_tokens(src) as reader:
            header = reader.header
        self.check_weights(header.weights_sha256, header.model_name)
        return decompress_video(src, dst, self, overwrite=force, **options)


def as_frames(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Validate in-memory frames: uint8 `[T, H, W, 3]` (numpy or torch, any device)."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape) < 1:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got shape {list(frames.shape)}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got dtype {frames.dtype}")
    return np.ascontiguousarray(frames)


class TokenizerCache:
    """The tokenizers a batch of files needs, each model loaded once: `get(header)` is the tokenizer that
    decodes a file with that header (`model` if given, else the model the header names; see
    `Tokenizer.for_file`), with its weights checked against the file's."""

    def __init__(self, model: str | os.PathLike | None = None, device: str | torch.device = "auto",
                 precision: str | Precision = "auto"):
        self.model, self.precision = model, precision
        self.device = resolve_device(device) if isinstance(device, str) else device
        self._loaded: dict[str, Tokenizer] = {}

    def load(self, name: str) -> Tokenizer:
        if name not in self._loaded:
            self._loaded[name] = Tokenizer(name, self.device, precision=self.precision)
        return self._loaded[name]

    def get(self, header: Header) -> Tokenizer:
        tok = self.load(model_for_file(header.model_name, self.model, header.weights_sha256))
        tok.check_weights(header.weights_sha256, header.model_name)
        return tok
