"""The public Python API: read token files, compress and decompress files, tokenize frames in memory.

* `load(path)` -> `TokenFile`: an .itok file's header and its windows; each window's keep mask and
  tokens are read only when asked for (defined in `tokens`, which needs no torch).
* `compress(src, dst, **options)` / `decompress(src, dst, **options)`: what `infotok compress` /
  `infotok decompress` do, returning the statistics their `--json` prints.
* `Tokenizer`: one model kept loaded; `encode` turns frames already in memory into tokens and masks,
  `decode` turns them back into frames, and `compress_file` / `decompress_file` reuse the loaded model
  for many files (what the batch CLI and the Ray module call).

Token layout everywhere: a window's `keep` is bool `[t, h, w]` over its latent grid and `tokens` is
int32 `[t, h, w]` with the code (0..63999) at kept positions and `-1` at dropped ones.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from . import codec
from .codec import (
    CodecError,
    CompressResult,
    DecompressResult,
    check_budget,
    check_window,
    compress_video,
    decompress_video,
    iter_decoded,
    padded_size,
    plan_windows,
    resolve_device,
)
from .container import Header, ItokReader
from .precision import Precision
from .router import DEFAULT_PLACEMENT, tokens_for_rate, top_k_mask, video_rates, window_rate
from .tokens import DROPPED, TokenFile, Tokens, TokenWindow, load
from .weights import DEFAULT_MODEL, WEIGHTS_DIR, LoadedModel, WeightsError, load_model

__all__ = ["DROPPED", "TokenFile", "TokenWindow", "Tokenizer", "Tokens", "compress", "decompress", "load"]


# ----------------------------------------------------------------------------- tokenizer


def model_for_file(header: Header, model: str | os.PathLike | None = None) -> str:
    """The model that decodes a file: `model` if given, else the shipped model the header names, else the
    default model."""
    if model is not None:
        return str(model)
    shipped = {p.stem for p in WEIGHTS_DIR.glob("*.safetensors")}
    return header.model_name if header.model_name in shipped else DEFAULT_MODEL


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


class _MemoryReader:
    """What `codec.iter_decoded` reads from an .itok file, served from windows in memory, so that in-memory
    decoding blends window overlaps exactly as file decoding does."""

    def __init__(self, clip: Tokens | TokenFile):
        self.header = SimpleNamespace(width=clip.width, height=clip.height, num_frames=clip.num_frames,
                                      overlap=clip.overlap)
        self._windows = clip.windows
        self.windows = [SimpleNamespace(index=i, frame_start=w.frame_start, frame_count=w.frame_count)
                        for i, w in enumerate(clip.windows)]

    def read_window(self, i: int) -> SimpleNamespace:
        w = self._windows[i]
        return SimpleNamespace(keep_mask=w.keep, tokens=w.kept_tokens)


class Tokenizer(codec.Tokenizer):
    """One model, loaded once, on one device.

    `Tokenizer()` loads the default shipped model; `Tokenizer("infotok-m")` or `Tokenizer("my.safetensors",
    device="cuda")` another. `placement="error"` places kept tokens by full-rate error alone (faster
    encoding, lower quality at the same rate; see router.py). `precision="auto"` runs bf16 where the
    hardware runs it natively, else float32; "fp32" / "bf16" (/ "fp16" on CUDA) force one (precision.py).
    Not thread-safe: give each worker its own.
    """

    def __init__(self, model: str | os.PathLike | LoadedModel | None = None, device: str | torch.device = "auto",
                 placement: str = DEFAULT_PLACEMENT, precision: str | Precision = "auto"):
        dev = resolve_device(device) if isinstance(device, str) else device
        loaded = model if isinstance(model, LoadedModel) else load_model(model, dev)
        super().__init__(loaded, dev, placement, precision)

    @classmethod
    def for_file(cls, header: Header, model: str | os.PathLike | None = None,
                 device: str | torch.device = "auto", precision: str | Precision = "auto") -> Tokenizer:
        """The tokenizer that decodes a file (see `model_for_file`); raises WeightsError if its weights are
        not the ones the file was made with."""
        tok = cls(model_for_file(header, model), device, precision=precision)
        tok.check_weights(header.weights_sha256, header.model_name)
        return tok

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def sha256(self) -> str:
        return self.loaded.sha256

    def check_weights(self, sha256: str, model_name: str) -> None:
        """Raise WeightsError unless this model's weights are `sha256` (tokens only decode with them)."""
        try:
            codec.check_model_matches(SimpleNamespace(weights_sha256=sha256, model_name=model_name), self)
        except CodecError as exc:
            raise WeightsError(str(exc)) from None

    # -- in memory

    def encode(self, frames: np.ndarray | torch.Tensor, *, beta: float = 0.5, strategy: str = "global",
               window: int = 33, overlap: int = 3) -> Tokens:
        """Frames uint8 `[T, H, W, 3]` -> `Tokens`, exactly as `compress` codes the same frames."""
        check_budget(strategy, beta)
        check_window(window, overlap)
        frames = as_frames(frames)
        n, h, w, _ = frames.shape
        padded_hw = padded_size(h, w)
        analyses = [self.analyse(frames[start:start + count], start, padded_hw)
                    for start, count in plan_windows(n, window, overlap)]
        # The same routing as codec.compress_video: one rate per window from its error, top-k placement.
        errors = [a.error.mean().item() for a in analyses]
        if strategy == "video":
            rates = video_rates(beta, errors, [a.error.numel() for a in analyses])
        else:
            rates = [window_rate(strategy, beta, e, self.loaded.e_ref) for e in errors]
        out = Tokens(width=w, height=h, num_frames=n, window=window, overlap=overlap, beta=float(beta),
                     strategy=strategy, model_name=self.name, weights_sha256=self.sha256)
        for i, (a, rate) in enumerate(zip(analyses, rates)):
            keep = top_k_mask(a.placement_score, tokens_for_rate(rate, a.error.numel()))
            out.windows.append(TokenWindow.from_arrays(i, a.start, a.count, a.padded, keep.numpy(),
                                                       a.indices[keep].numpy().astype(np.uint16)))
        return out

    def decode(self, tokens: Tokens | TokenFile) -> np.ndarray:
        """Tokens (from `encode` or `load`) -> frames uint8 `[T, H, W, 3]`, exactly as `decompress` decodes
        them (window overlaps blended)."""
        self.check_weights(tokens.weights_sha256, tokens.model_name)
        out = np.empty((tokens.num_frames, tokens.height, tokens.width, 3), dtype=np.uint8)
        count = 0
        for count, frame in enumerate(iter_decoded(_MemoryReader(tokens), self), start=1):  # type: ignore[arg-type]
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
        progress, and whatever else `codec.compress_video` takes)."""
        return compress_video(src, dst, self, overwrite=force, **options)

    def decompress_file(self, src: str | os.PathLike, dst: str | os.PathLike, *, force: bool = False,
                        **options: Any) -> DecompressResult:
        """Decode the .itok file `src` to the video `dst` (options: lossless, progress, ...)."""
        with ItokReader(src) as reader:
            header = reader.header
        self.check_weights(header.weights_sha256, header.model_name)
        return decompress_video(src, dst, self, overwrite=force, **options)


def compress(src: str | os.PathLike, dst: str | os.PathLike, *, model: str | os.PathLike | None = None,
             device: str = "auto", tokenizer: Tokenizer | None = None, force: bool = False,
             placement: str = DEFAULT_PLACEMENT, precision: str = "auto", **options: Any) -> dict[str, Any]:
    """`infotok compress SRC DST`: returns the statistics `--json` prints.

    Options as on the command line: beta (0.5), strategy ("global"), window (33), overlap (3), model,
    device, placement ("probe-gain"), precision ("auto"), force; `progress` takes a `(frames done, frames
    total)` callback. Pass a `tokenizer` to reuse a loaded model across calls (its own placement and
    precision then apply).
    """
    tok = tokenizer or Tokenizer(model, device, placement, precision)
    return tok.compress_file(src, dst, force=force, **options).to_dict()


def decompress(src: str | os.PathLike, dst: str | os.PathLike, *, model: str | os.PathLike | None = None,
               device: str = "auto", tokenizer: Tokenizer | None = None, force: bool = False,
               precision: str = "auto", **options: Any) -> dict[str, Any]:
    """`infotok decompress SRC DST`: returns the statistics `--json` prints.

    The model is the one the file names (if shipped) unless `model` or `tokenizer` is given; options:
    lossless (False), audio (True), precision ("auto"), force, progress.
    """
    if tokenizer is None:
        with ItokReader(src) as reader:
            header = reader.header
        tokenizer = Tokenizer.for_file(header, model, device, precision)
    return tokenizer.decompress_file(src, dst, force=force, **options).to_dict()
