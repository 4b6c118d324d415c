"""Tokens as data: an .itok file's windows (`TokenFile`, opened by `load`; an export's arrays open the same
way) and tokens made in memory (`Tokens`: by `Tokenizer.encode`, or from arrays with `Tokens.from_arrays`),
with each window's keep mask and codes on its latent grid.

Reading tokens needs neither torch nor PyAV: only the container reader. Layout everywhere: a window's
`keep` is bool `[t, h, w]` and `tokens` is int32 `[t, h, w]`, the code (0..63999) at kept positions and
`DROPPED` (-1) at dropped ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ContainerError
from .arrays import ArraysReader, Geometry, open_tokens, window_arrays
from .header import Header, WindowMeta
from .reader import ItokReader

__all__ = ["DROPPED", "Geometry", "TokenFile", "TokenWindow", "Tokens", "load"]

DROPPED = -1  # the token value at dropped positions in `TokenWindow.tokens`


# ----------------------------------------------------------------------------- windows


class TokenWindow:
    """One coding window: which frames it covers and its tokens on the latent grid `[t, h, w]`.

    `keep` and `tokens` are read from the file (checksum verified) on first use and then kept.
    """

    def __init__(self, index: int, frame_start: int, frame_count: int, padded_frames: int,
                 latent_shape: tuple[int, int, int], kept_per_latent_frame: list[int],
                 load: Callable[[], tuple[np.ndarray, np.ndarray]]):
        self.index = index
        self.frame_start = frame_start
        self.frame_count = frame_count  # source frames covered, overlap included
        self.padded_frames = padded_frames  # frames repeated at the end to reach 1 + 4k (not in the source)
        self.latent_shape = tuple(latent_shape)
        self.kept_per_latent_frame = list(kept_per_latent_frame)
        self._load = load
        self._keep: np.ndarray | None = None
        self._kept: np.ndarray | None = None

    @classmethod
    def from_arrays(cls, index: int, frame_start: int, frame_count: int, padded_frames: int, keep: np.ndarray,
                    kept_tokens: np.ndarray) -> TokenWindow:
        keep = np.asarray(keep, dtype=bool)
        kept_tokens = np.asarray(kept_tokens)
        return cls(index, frame_start, frame_count, padded_frames, keep.shape,
                   keep.reshape(keep.shape[0], -1).sum(axis=1).tolist(), lambda: (keep, kept_tokens))

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._keep is None:
            self._keep, self._kept = self._load()
        assert self._kept is not None
        return self._keep, self._kept

    @property
    def frame_end(self) -> int:
        """One past the last source frame of the window."""
        return self.frame_start + self.frame_count

    @property
    def keep(self) -> np.ndarray:
        """bool `[t, h, w]`: True where a token was kept."""
        return self._arrays()[0]

    @property
    def kept_tokens(self) -> np.ndarray:
        """The kept codes, uint16 `[k]`, in raster `(t, h, w)` order of the kept positions."""
        return self._arrays()[1]

    @property
    def tokens(self) -> np.ndarray:
        """int32 `[t, h, w]`: the code at kept positions, `-1` (DROPPED) at dropped ones."""
        keep, kept = self._arrays()
        out = np.full(keep.shape, DROPPED, dtype=np.int32)
        out[keep] = kept
        return out

    @property
    def tokens_kept(self) -> int:
        return sum(self.kept_per_latent_frame)

    @property
    def tokens_possible(self) -> int:
        t, h, w = self.latent_shape
        return t * h * w

    def sequence(self) -> tuple[np.ndarray, np.ndarray]:
        """The kept tokens as a flat sequence, in the order a sequence model consumes them: latent frame by
        latent frame (the model is causal in time), row by row inside a frame.

        Returns `(positions, tokens)`: int32 `[k, 3]` of `(t, y, x)` latent coordinates and int32 `[k]`.
        """
        keep, kept = self._arrays()
        return np.argwhere(keep).astype(np.int32), kept.astype(np.int32)

    def __repr__(self) -> str:
        return (f"TokenWindow(index={self.index}, frames={self.frame_start}..{self.frame_end - 1}, "
                f"latent_shape={self.latent_shape}, kept={self.tokens_kept}/{self.tokens_possible})")


class _ClipInfo:
    """Attributes shared by a token file and in-memory tokens (derived from `windows`)."""

    windows: list[TokenWindow]

    @property
    def tokens_kept(self) -> int:
        return sum(w.tokens_kept for w in self.windows)

    @property
    def tokens_possible(self) -> int:
        return sum(w.tokens_possible for w in self.windows)

    @property
    def keep_rate(self) -> float:
        return self.tokens_kept / self.tokens_possible if self.tokens_possible else 0.0


@dataclass
class Tokens(_ClipInfo):
    """Tokens held in memory (same window layout as a `TokenFile`): made by `Tokenizer.encode`, or built
    from arrays by `Tokens.from_arrays` (which also sets `header`, the container header `pack` writes)."""

    width: int
    height: int
    num_frames: int
    window: int
    overlap: int
    beta: float
    strategy: str
    model_name: str
    weights_sha256: str
    windows: list[TokenWindow] = field(default_factory=list)
    header: Header | None = None  # timing and the rest of the container header; None from `encode`

    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.windows[0].latent_shape[1:] if self.windows else (0, 0)

    @property
    def fps(self) -> Fraction | None:
        return None if self.header is None else Fraction(self.header.fps_num, self.header.fps_den)

    @classmethod
    def from_arrays(cls, geometry: Geometry, tokens: list[Any] | None = None, *, keep: list[Any] | None = None,
                    sequences: list[tuple[Any, Any]] | None = None) -> Tokens:
        """Tokens from plain arrays, one entry per window of `geometry` (`Geometry.from_file(path)`, or
        `Tokenizer.geometry(...)` / `Geometry.for_video(...)`):

        * `tokens`: int `[t, h, w]` per window, the code (0..63999) at kept positions and -1 at dropped
          ones; `keep` (bool `[t, h, w]` per window, optional) must then agree with it;
        * or `sequences`: `(positions int [k, 3] of (t, y, x), codes int [k])` per window, as
          `TokenWindow.sequence()` returns them.

        A window may keep any number of tokens. Raises ContainerError (one line) for a code outside the
        codebook, a position outside the latent grid, a shape that does not match the geometry or a
        missing window.
        """
        if (tokens is None) == (sequences is None):
            raise ContainerError("give either tokens (one array per window) or sequences (one per window)")
        given = list(tokens if tokens is not None else sequences)  # type: ignore[arg-type]
        masks = list(keep) if keep is not None else [None] * len(given)
        n = len(geometry.windows)
        if len(given) != n or len(masks) != n:
            raise ContainerError(f"the geometry has {n} windows, but {len(given)} arrays"
                                 + ("" if keep is None else f" and {len(masks)} keep masks") + " were given")
        h = geometry.header
        out = cls(width=h.width, height=h.height, num_frames=h.num_frames, window=h.window, overlap=h.overlap,
                  beta=h.beta, strategy=h.strategy, model_name=h.model_name, weights_sha256=h.weights_sha256,
                  header=h)
        for i, ((start, count, padded), shape) in enumerate(zip(geometry.windows, geometry.latent_shapes)):
            if tokens is not None:
                mask, kept = window_arrays(i, shape, given[i], masks[i])
            else:
                mask, kept = window_arrays(i, shape, sequence=given[i])
            out.windows.append(TokenWindow.from_arrays(i, start, count, padded, mask, kept))
        return out


class TokenFile(_ClipInfo):
    """An open .itok file, or an export's arrays (see `load`). Use as a context manager, or call `close()`.

    `header` is the full container header; the common fields are attributes. `windows` lists every
    window (tokens read lazily, then kept); `iter_windows()` yields them without keeping them, for
    files too large to hold.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._reader: ItokReader | ArraysReader | None = open_tokens(self.path)
        self.header: Header = self._reader.header
        self.file_size: int = self._reader.file_size
        self.version: tuple[int, int] = self._reader.version
        r = self._reader
        self.format_version = r.format if isinstance(r, ArraysReader) else f"{self.version[0]}.{self.version[1]}"
        self._meta: list[WindowMeta] = list(self._reader.windows)
        self.windows = [self._window(m) for m in self._meta]

    def _window(self, meta: WindowMeta) -> TokenWindow:
        def load() -> tuple[np.ndarray, np.ndarray]:
            if self._reader is None:
                raise ValueError(f"{self.path}: the token file is closed")
            rec = self._reader.read_window(meta.index)
            return rec.keep_mask, rec.tokens

        return TokenWindow(meta.index, meta.frame_start, meta.frame_count, meta.padded_frames, meta.latent_shape,
                           meta.kept_per_frame, load)

    def iter_windows(self) -> Iterator[TokenWindow]:
        """Every window in order, read one at a time and not kept by the file object."""
        for meta in self._meta:
            yield self._window(meta)

    # header fields
    width = property(lambda self: self.header.width)
    height = property(lambda self: self.header.height)
    num_frames = property(lambda self: self.header.num_frames)
    model_name = property(lambda self: self.header.model_name)
    weights_sha256 = property(lambda self: self.header.weights_sha256)
    window = property(lambda self: self.header.window)
    overlap = property(lambda self: self.header.overlap)
    beta = property(lambda self: self.header.beta)
    strategy = property(lambda self: self.header.strategy)
    latent_hw = property(lambda self: self.header.latent_hw)

    @property
    def fps(self) -> Fraction:
        return Fraction(self.header.fps_num, self.header.fps_den)

    def info(self) -> dict[str, Any]:
        """The header as a JSON-friendly dict: geometry, timing, model and coding parameters."""
        h = self.header
        return {
            "source_name": h.source_name, "width": h.width, "height": h.height, "num_frames": h.num_frames,
            "fps": f"{h.fps_num}/{h.fps_den}", "fps_value": h.fps_num / h.fps_den,
            "time_base": f"{h.time_base_num}/{h.time_base_den}", "rotation": h.rotation,
            "model_name": h.model_name, "weights_sha256": h.weights_sha256, "window": h.window,
            "overlap": h.overlap, "beta": h.beta, "strategy": h.strategy, "padded_width": h.padded_width,
            "padded_height": h.padded_height, "temporal_stride": h.temporal_stride,
            "spatial_stride": h.spatial_stride, "latent_hw": list(h.latent_hw), "windows": len(self.windows),
            "tokens_kept": self.tokens_kept, "tokens_possible": self.tokens_possible,
            "format_version": self.format_version, "encoder_version": h.encoder_version,
        }

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> TokenFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"TokenFile({str(self.path)!r}, {self.width}x{self.height}, {self.num_frames} frames, "
                f"{len(self.windows)} windows, kept {self.tokens_kept}/{self.tokens_possible})")


def load(path: str | os.PathLike) -> TokenFile:
    """Open an .itok file, or the `.npz` / `.safetensors` arrays `export` writes: header and index are read
    and validated now (an export's windows too), tokens when a window is used. Raises `ContainerError`
    (one-line message) for anything wrong with the file."""
    return TokenFile(path)
