"""Plain arrays back into tokens: the `.npz` / `.safetensors` files `export` writes (with `tokens` changed
or wholly generated) read like an .itok file (`ArraysReader`, `open_tokens`), and windows built from
arrays held in memory (`window_arrays`, `Geometry`).

The keep mask of a window is its `keep_<i>` array where the file has one, else `tokens_<i> != -1`. Where
both are given they must agree: a code at every kept position and -1 at every dropped one (a generated
`tokens` array with the original `keep` left beside it is refused, not silently cut to the old mask).

Arrays are untrusted input: every shape and dtype is checked against the geometry the metadata declares
before an array is read (so nothing larger than one window is allocated), codes must lie in the
codebook, and anything wrong raises `ContainerError` with a one-line message.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zipfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..constants import CODEBOOK_SIZE, TEMPORAL_STRIDE
from ..errors import ContainerError
from .header import Header, WindowMeta, WindowRecord, check_window_geometry, latent_shape, pack_header, plan_windows
from .layout import MAX_FRAMES, MAX_HEADER_BYTES, SPATIAL_STRIDE
from .reader import ItokReader

__all__ = ["ArraysReader", "Geometry", "open_tokens", "window_arrays"]

DROPPED = -1
EXPORT_FORMAT = "infotok-tokens/1"  # the `format` of an export's metadata (export.py writes it)
MAX_METADATA_CHARS = 1 << 20  # the JSON metadata of an export is a few hundred bytes
_WINDOW_KEY = re.compile(r"(tokens|keep)_(\d+)")
_ZIP_MAGIC = b"PK\x03\x04"


# ----------------------------------------------------------------------------- one window


def window_arrays(i: int, shape: tuple[int, int, int], tokens: Any = None, keep: Any = None,
                  sequence: tuple[Any, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(keep bool `[t, h, w]`, kept codes uint16 in raster order) of window `i` of latent grid `shape`,
    from `tokens` (int `[t, h, w]`, -1 = dropped; `keep` optional, see the module docstring) or from
    `sequence` = (positions int `[k, 3]` of (t, y, x), codes int `[k]`), as `TokenWindow.sequence()`
    returns them (any order; each position once). Raises ContainerError for anything that does not fit."""
    what = f"window {i}"
    if (tokens is None) == (sequence is None):
        raise ContainerError(f"{what}: give either its tokens array or its (positions, codes) sequence")
    if sequence is not None:
        if keep is not None:
            raise ContainerError(f"{what}: a sequence says which positions are kept; give no keep mask")
        return _from_sequence(what, shape, sequence)
    tokens = _int_array(tokens, f"{what}: tokens")
    if tokens.shape != shape:
        raise ContainerError(f"{what}: tokens have shape {list(tokens.shape)}, the geometry's latent grid is "
                             f"{list(shape)}")
    bad = (tokens < DROPPED) | (tokens >= CODEBOOK_SIZE)
    if bad.any():
        at = tuple(int(v) for v in np.argwhere(bad)[0])
        raise ContainerError(f"{what}: code {int(tokens[at])} at (t, y, x) = {at} is outside the codebook "
                             f"0..{CODEBOOK_SIZE - 1} (-1 = dropped)")
    if keep is None:
        mask = tokens != DROPPED
    else:
        mask = np.asarray(keep)
        if mask.dtype != np.bool_ or mask.shape != shape:
            raise ContainerError(f"{what}: keep must be bool of shape {list(shape)}, got {mask.dtype} "
                                 f"{list(mask.shape)}")
        for where, wrong, says in ((mask, tokens == DROPPED, "-1 at kept"), (~mask, tokens != DROPPED,
                                                                              "a code at dropped")):
            n = int((where & wrong).sum())
            if n:
                raise ContainerError(f"{what}: tokens hold {says} positions of keep ({n}); make them agree, or "
                                     f"leave keep out (then tokens != -1 is the mask)")
    return np.require(mask, requirements=["C", "W"]), tokens[mask].astype(np.uint16)  # torch wants writable


def _int_array(a: Any, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise ContainerError(f"{what} must be integers, got {a.dtype}")
    if a.dtype == np.uint64 and a.size and int(a.max()) > np.iinfo(np.int64).max:  # would wrap, even to -1
        raise ContainerError(f"{what}: value {int(a.max())} is outside the codebook 0..{CODEBOOK_SIZE - 1}")
    return a.astype(np.int64, copy=False)


def _from_sequence(what: str, shape: tuple[int, int, int], sequence: tuple[Any, Any]) -> tuple[np.ndarray, np.ndarray]:
    try:
        positions, codes = sequence
    except (TypeError, ValueError):
        raise ContainerError(f"{what}: a sequence is a pair (positions [k, 3], codes [k])") from None
    positions, codes = _int_array(positions, f"{what}: positions"), _int_array(codes, f"{what}: codes")
    if positions.ndim != 2 or positions.shape[1] != 3 or codes.shape != positions.shape[:1]:
        raise ContainerError(f"{what}: positions must be [k, 3] and codes [k], got {list(positions.shape)} and "
                             f"{list(codes.shape)}")
    outside = ((positions < 0) | (positions >= np.array(shape))).any(axis=1)
    if outside.any():
        at = tuple(int(v) for v in positions[np.argmax(outside)])
        raise ContainerError(f"{what}: position (t, y, x) = {at} is outside the latent grid {list(shape)}")
    bad = (codes < 0) | (codes >= CODEBOOK_SIZE)
    if bad.any():
        raise ContainerError(f"{what}: code {int(codes[np.argmax(bad)])} is outside the codebook "
                             f"0..{CODEBOOK_SIZE - 1}")
    flat = np.ravel_multi_index(tuple(positions.T), shape) if len(positions) else np.zeros(0, np.int64)
    order = np.argsort(flat, kind="stable")
    if len(flat) and (np.diff(flat[order]) == 0).any():
        raise ContainerError(f"{what}: a position appears more than once in the sequence")
    keep = np.zeros(shape, dtype=bool)
    keep.reshape(-1)[flat] = True
    return keep, codes[order].astype(np.uint16)


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Geometry:
    """Everything about a clip's tokens but the tokens: the container header (frame size, frame count,
    timing, the model's name and weights hash, coding parameters) and each window's
    (frame_start, frame_count, padded_frames). Validated when made (ContainerError)."""

    header: Header
    windows: tuple[tuple[int, int, int], ...]

    def __post_init__(self) -> None:
        _, header = pack_header(self.header)  # validated, with plain Python types
        windows: list[tuple[int, int, int]] = []
        prev: WindowMeta | None = None
        for i, w in enumerate(self.windows):
            try:
                start, count, padded = (int(v) for v in w)
            except (TypeError, ValueError):
                raise ContainerError(f"window {i}: (frame_start, frame_count, padded_frames) must be three "
                                     f"integers") from None
            shape = check_window_geometry(header, i, start, count, padded, prev)
            prev = WindowMeta(i, 0, start, count, padded, shape, [])
            windows.append((start, count, padded))
        if prev is None or prev.frame_start + prev.frame_count != header.num_frames:
            raise ContainerError(f"the windows do not cover the video's {header.num_frames} frames")
        object.__setattr__(self, "header", header)
        object.__setattr__(self, "windows", tuple(windows))

    @property
    def latent_shapes(self) -> list[tuple[int, int, int]]:
        """(t, h, w) of each window's latent grid."""
        return [latent_shape(self.header, count, padded) for _, count, padded in self.windows]

    @classmethod
    def for_video(cls, width: int, height: int, num_frames: int, fps: float | Fraction | str, model_name: str,
                  weights_sha256: str, *, window: int = 33, overlap: int = 3, beta: float = 1.0,
                  strategy: str = "window", source_name: str = "") -> Geometry:
        """The geometry `compress` gives a video of this size, frame count and rate coded by the model
        `model_name` / `weights_sha256` (`Tokenizer.geometry` fills those in); timestamps are frame
        numbers in units of 1/fps."""
        rate = Fraction(fps).limit_denominator(1 << 20) if not isinstance(fps, Fraction) else fps
        if rate <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if not isinstance(num_frames, int) or not 1 <= num_frames <= MAX_FRAMES:
            raise ValueError(f"num_frames must be an integer in 1..{MAX_FRAMES}, got {num_frames!r}")
        pad = SPATIAL_STRIDE
        header = Header(
            source_name=source_name, width=width, height=height, num_frames=num_frames,
            fps_num=rate.numerator, fps_den=rate.denominator, time_base_num=rate.denominator,
            time_base_den=rate.numerator, pts=list(range(num_frames)), rotation=0, sar_num=0, sar_den=1,
            model_name=model_name, weights_sha256=weights_sha256, window=window, overlap=overlap,
            beta=float(beta), strategy=strategy, padded_width=-(-width // pad) * pad,
            padded_height=-(-height // pad) * pad)
        plan = [(s, c, (-(c - 1)) % TEMPORAL_STRIDE) for s, c in plan_windows(num_frames, window, overlap)]
        return cls(header, tuple(plan))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Geometry:
        """The geometry of an .itok file or an export (`.npz` / `.safetensors`): its header and windows."""
        with open_tokens(path) as r:
            return cls(r.header, tuple((m.frame_start, m.frame_count, m.padded_frames) for m in r.windows))


# ----------------------------------------------------------------------------- export files


class _Npz:
    """The .npy members of an .npz (a zip): each member's dtype and shape read from its header and checked
    before its data is read; never a pickle."""

    def __init__(self, f: BinaryIO):
        try:
            self._zip = zipfile.ZipFile(f)
            self._members = {i.filename[:-4]: i for i in self._zip.infolist() if i.filename.endswith(".npy")}
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as e:
            raise ContainerError(f"not a readable .npz ({e})") from None

    def names(self) -> list[str]:
        return list(self._members)

    def metadata(self) -> str | None:
        if "metadata" not in self._members:
            return None
        a = self.read("metadata", "U", ())
        return str(a[()])

    def stored_bytes(self, name: str) -> int:
        return self._members[name].compress_size

    def read(self, name: str, kinds: str, shape: tuple[int, ...]) -> np.ndarray:
        try:
            with self._zip.open(self._members[name]) as m:
                version = np.lib.format.read_magic(m)
                if version == (1, 0):
                    got_shape, fortran, dtype = np.lib.format.read_array_header_1_0(m)
                elif version == (2, 0):
                    got_shape, fortran, dtype = np.lib.format.read_array_header_2_0(m)
                else:
                    raise ContainerError(f"array {name}: unsupported .npy version {version}")
                _check_spec(name, dtype, tuple(got_shape), kinds, shape)
                if dtype.kind == "U" and dtype.itemsize > 4 * MAX_METADATA_CHARS:
                    raise ContainerError(f"array {name} is longer than {MAX_METADATA_CHARS} characters")
                size = dtype.itemsize * int(np.prod(got_shape, dtype=np.int64))
                data = m.read(size)
        except ContainerError:
            raise
        except (zipfile.BadZipFile, ValueError, EOFError, OSError, RuntimeError) as e:  # incl. zlib, CRC errors
            raise ContainerError(f"array {name} is not readable ({e})") from None
        if len(data) != size:
            raise ContainerError(f"array {name} is truncated")
        return np.frombuffer(data, dtype=dtype).reshape(got_shape, order="F" if fortran else "C")

    def close(self) -> None:
        self._zip.close()


class _Safetensors:
    """The tensors of a .safetensors file, each checked from the file's header before it is read."""

    _DTYPES = {"BOOL": np.dtype(bool), "U8": np.dtype(np.uint8), "I8": np.dtype(np.int8),
               "U16": np.dtype(np.uint16), "I16": np.dtype(np.int16), "U32": np.dtype(np.uint32),
               "I32": np.dtype(np.int32), "U64": np.dtype(np.uint64), "I64": np.dtype(np.int64)}

    def __init__(self, path: Path):
        from safetensors import SafetensorError, safe_open

        self._error = SafetensorError
        try:
            self._f = safe_open(str(path), framework="numpy")
            self._keys = list(self._f.keys())
            self._meta = self._f.metadata() or {}
        except (SafetensorError, OSError, ValueError) as e:
            raise ContainerError(f"not a readable .safetensors file ({e})") from None

    def names(self) -> list[str]:
        return self._keys

    def metadata(self) -> str | None:
        meta = self._meta.get("infotok")
        if meta is not None and len(meta) > MAX_METADATA_CHARS:
            raise ContainerError(f"metadata is longer than {MAX_METADATA_CHARS} characters")
        return meta

    def stored_bytes(self, name: str) -> int:
        sl = self._f.get_slice(name)
        return self._DTYPES.get(sl.get_dtype(), np.dtype(np.uint8)).itemsize * int(np.prod(sl.get_shape()))

    def read(self, name: str, kinds: str, shape: tuple[int, ...]) -> np.ndarray:
        try:
            sl = self._f.get_slice(name)
            dtype = self._DTYPES.get(sl.get_dtype())
            if dtype is None:
                raise ContainerError(f"array {name} has dtype {sl.get_dtype()}, expected integers or bool")
            _check_spec(name, dtype, tuple(sl.get_shape()), kinds, shape)
            return self._f.get_tensor(name)
        except self._error as e:
            raise ContainerError(f"array {name} is not readable ({e})") from None

    def close(self) -> None:
        self._f = None


def _check_spec(name: str, dtype: np.dtype, shape: tuple[int, ...], kinds: str, expected: tuple[int, ...]) -> None:
    if dtype.kind not in kinds or dtype.hasobject:
        want = {"b": "bool", "iu": "integers", "U": "a string"}.get(kinds, kinds)
        raise ContainerError(f"array {name} has dtype {dtype}, expected {want}")
    if shape != expected:
        raise ContainerError(f"array {name} has shape {list(shape)}, expected {list(expected)} (from the metadata)")


def _ratio(meta: dict, key: str, default: str | None = None) -> tuple[Any, Any]:
    value = meta.get(key, default)
    parts = value.split("/") if isinstance(value, str) else []
    if len(parts) != 2 or not all(p.strip().isdigit() and len(p.strip()) <= 20 for p in parts):
        raise ContainerError(f"metadata field '{key}' = {value!r} is not a ratio 'num/den'")
    return int(parts[0]), int(parts[1])


def header_from_metadata(meta: Any, pts: list[int]) -> Header:
    """The .itok header an export's metadata and timestamps describe (validated as a reader validates)."""
    if not isinstance(meta, dict):
        raise ContainerError("metadata is not a JSON object")
    if meta.get("format") != EXPORT_FORMAT:
        raise ContainerError(f"metadata format {meta.get('format')!r} is not {EXPORT_FORMAT!r}")
    keys = ("source_name", "width", "height", "num_frames", "rotation", "model_name", "weights_sha256", "window",
            "overlap", "beta", "strategy", "padded_width", "padded_height", "temporal_stride", "spatial_stride",
            "encoder_version")
    missing = [k for k in keys if k not in meta]
    if missing:
        raise ContainerError(f"metadata is missing field '{missing[0]}'")
    (fps_num, fps_den), (tb_num, tb_den) = _ratio(meta, "fps"), _ratio(meta, "time_base")
    sar_num, sar_den = _ratio(meta, "sar", "0/1")  # exports before 'sar' was recorded: unknown
    header = Header(**{k: meta[k] for k in keys}, fps_num=fps_num, fps_den=fps_den, time_base_num=tb_num,
                    time_base_den=tb_den, sar_num=sar_num, sar_den=sar_den, pts=pts, extra=meta.get("extra", {}))
    return pack_header(header)[1]


class ArraysReader:
    """An export (`.npz` or `.safetensors`) read like an .itok file: `header`, `windows` (index entries)
    and `read_window(i)`, so that everything that decodes or inspects .itok files takes exports too.

    Opening validates the metadata, the index arrays and every window (one at a time); `read_window`
    reads a window again. Sizes in `windows` are the arrays' stored bytes (codec -1: arrays, not coded).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.file_size = self.path.stat().st_size
        self.version = (0, 0)  # no .itok version: `format` names the export format
        self.format = EXPORT_FORMAT
        self._f: BinaryIO | None = None
        try:
            with open(self.path, "rb") as f:
                magic = f.read(4)
            if magic == _ZIP_MAGIC:
                self._f = open(self.path, "rb")
                self._src: _Npz | _Safetensors = _Npz(self._f)
            else:
                self._src = _Safetensors(self.path)
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        src = self._src
        text = src.metadata()
        if text is None:
            raise ContainerError("no infotok metadata: not a token export (write one with `infotok export`)")
        try:
            meta = json.loads(text)
        except ValueError as e:
            raise ContainerError(f"metadata is not valid JSON ({e})") from None
        n_frames = meta.get("num_frames") if isinstance(meta, dict) else None
        if not isinstance(n_frames, int) or not 1 <= n_frames <= MAX_FRAMES:
            raise ContainerError(f"metadata field 'num_frames' = {n_frames!r} is not an integer in 1..{MAX_FRAMES}")
        pts = self._required("pts", "iu", (n_frames,))
        self.header = header_from_metadata(meta, pts.astype(np.int64).tolist())
        n = meta.get("windows")
        if not isinstance(n, int) or not 1 <= n <= n_frames:
            raise ContainerError(f"metadata field 'windows' = {n!r} is not an integer in 1..{n_frames}")
        self._n = n
        for name in src.names():
            m = _WINDOW_KEY.fullmatch(name)
            if m and int(m.group(2)) >= n:
                raise ContainerError(f"array {name} is beyond the {n} windows the metadata declares")
        ranges = self._required("frame_ranges", "iu", (n, 2)).astype(np.int64)
        padded = self._required("padded_frames", "iu", (n,)).astype(np.int64)
        shapes = self._required("latent_shapes", "iu", (n, 3)).astype(np.int64)
        self.windows: list[WindowMeta] = []
        prev = None
        for i in range(n):
            start, count, pad = int(ranges[i, 0]), int(ranges[i, 1]), int(padded[i])
            shape = check_window_geometry(self.header, i, start, count, pad, prev)
            if tuple(shapes[i].tolist()) != shape:
                raise ContainerError(f"window {i}: latent_shapes says {shapes[i].tolist()}, the geometry gives "
                                     f"{list(shape)}")
            prev = WindowMeta(i, 0, start, count, pad, shape, [])
            keep, _ = self._load(prev)
            prev.kept_per_frame = keep.reshape(shape[0], -1).sum(axis=1).tolist()
            prev.mask_codec = prev.token_codec = -1
            prev.token_size = src.stored_bytes(f"tokens_{i:06d}")
            prev.mask_size = src.stored_bytes(f"keep_{i:06d}") if f"keep_{i:06d}" in self._names else 0
            self.windows.append(prev)
        if prev.frame_start + prev.frame_count != self.header.num_frames:
            raise ContainerError(f"windows end at frame {prev.frame_start + prev.frame_count}, but the video has "
                                 f"{self.header.num_frames} frames")

    @property
    def _names(self) -> set[str]:
        return set(self._src.names())

    def _required(self, name: str, kinds: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in self._names:
            raise ContainerError(f"no array {name}")
        return self._src.read(name, kinds, shape)

    def _load(self, meta: WindowMeta) -> tuple[np.ndarray, np.ndarray]:
        i, shape = meta.index, meta.latent_shape
        key = f"tokens_{i:06d}"
        if key not in self._names:
            raise ContainerError(f"window {i} is missing: no array {key} (the metadata declares {self._n} "
                                 f"windows)")
        tokens = self._src.read(key, "iu", shape)
        keep = self._src.read(f"keep_{i:06d}", "b", shape) if f"keep_{i:06d}" in self._names else None
        return window_arrays(i, shape, tokens, keep)

    def read_window(self, i: int) -> WindowRecord:
        """Window `i`'s keep mask and kept codes, read and validated again."""
        if not 0 <= i < len(self.windows):
            raise ContainerError(f"no window {i} (the file has {len(self.windows)})")
        keep, kept = self._load(self.windows[i])
        return WindowRecord(meta=self.windows[i], keep_mask=keep, tokens=kept)

    def iter_windows(self):
        for i in range(len(self.windows)):
            yield self.read_window(i)

    def read_skippable(self, chunk_type: int, max_body: int) -> bytes | None:
        return None  # an export carries no audio or quality chunk

    def skippable_chunks(self) -> list[tuple[int, int, int]]:
        return []

    def __len__(self) -> int:
        return len(self.windows)

    def close(self) -> None:
        if getattr(self, "_src", None) is not None:
            self._src.close()
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> ArraysReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_export(path: str | os.PathLike) -> bool:
    """Whether `path` holds exported arrays (a zip, or a safetensors header) rather than an .itok file."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == _ZIP_MAGIC:
        return True
    return len(head) == 9 and 2 <= struct.unpack("<Q", head[:8])[0] <= MAX_HEADER_BYTES and head[8:9] == b"{"


def open_tokens(path: str | os.PathLike) -> ItokReader | ArraysReader:
    """A reader of the token file `path`: an .itok file, or the arrays `export` writes (by content, not
    by name). Raises ContainerError for anything wrong with it."""
    return ArraysReader(path) if is_export(path) else ItokReader(path)


def read_header_and_index(path: str | os.PathLike) -> tuple[Header, list[WindowMeta], int]:
    """Header, window index and file size of an .itok file or an export."""
    with open_tokens(path) as r:
        return r.header, r.windows, r.file_size
