"""The HEADER chunk and the index's window records: the data model of an .itok file, the header's
MessagePack codec (every field validated, docs/FORMAT.md section 5) and the window geometry rules that
writer and reader share (sections 6 and 7), and how a video is cut into windows (`plan_windows`).

Every file is treated as untrusted: sizes are bounded before anything is allocated, and every problem
surfaces as a `ContainerError` with a one-line message.
"""

from __future__ import annotations

import math
import numbers
import re
import zlib
from dataclasses import dataclass, field, fields

import msgpack
import numpy as np

from ..constants import SPATIAL_STRIDE, STRATEGIES, TEMPORAL_STRIDE
from ..errors import ContainerError, OptionError
from .layout import (
    MASK_PACKED,
    MAX_DIM,
    MAX_FRAMES,
    MAX_HEADER_BYTES,
    MAX_POSITIONS,
    MAX_RATIONAL,
    MAX_SHORT_STR_BYTES,
    MAX_SOURCE_NAME_BYTES,
    MAX_WINDOW,
)

_SHA_RE = re.compile(r"[0-9a-f]{64}")


@dataclass
class Header:
    """Everything about the source video and the coding run that a decoder needs (HEADER chunk)."""

    # source
    source_name: str
    width: int
    height: int
    num_frames: int
    fps_num: int
    fps_den: int
    time_base_num: int
    time_base_den: int
    pts: list[int]  # per-frame timestamps in time_base units, len num_frames
    rotation: int  # counter-clockwise display rotation (PyAV convention), one of 0, 90, 180, 270
    sar_num: int  # sample aspect ratio; 0 = unknown
    sar_den: int
    # coding parameters
    model_name: str
    weights_sha256: str  # 64 lowercase hex digits
    window: int  # coding window length, 1 + 4k frames (the longest window in the file)
    overlap: int
    beta: float
    strategy: str  # "window", "global" or "video"
    padded_width: int  # frame size after padding to the model stride (>= width/height)
    padded_height: int
    temporal_stride: int = TEMPORAL_STRIDE
    spatial_stride: int = SPATIAL_STRIDE
    encoder_version: str = ""  # infotok version that wrote the file
    extra: dict = field(default_factory=dict)  # forward-compatible free-form metadata (msgpack-able)

    @property
    def latent_hw(self) -> tuple[int, int]:
        """Latent grid height and width of every window."""
        return self.padded_height // self.spatial_stride, self.padded_width // self.spatial_stride


@dataclass
class WindowMeta:
    """One INDEX entry: enough for statistics without reading the window's tokens."""

    index: int
    offset: int  # file offset of the WINDOW chunk
    frame_start: int
    frame_count: int  # frames of the source covered (incl. overlap)
    padded_frames: int  # frames added at the end to reach 1+4k (removed on decode)
    latent_shape: tuple[int, int, int]  # (t, h, w)
    kept_per_frame: list[int]  # kept tokens per latent frame, len t
    record_size: int = 0  # size of the WINDOW chunk in bytes, framing included
    # How the mask and tokens are stored, and their sizes in bytes (version 1 files: the mask is always
    # packed, and the index does not say which token codec a window uses: -1).
    mask_codec: int = MASK_PACKED
    token_codec: int = -1
    mask_size: int = 0
    token_size: int = 0

    @property
    def kept(self) -> int:
        """Number of kept positions (= tokens) in the window."""
        return sum(self.kept_per_frame)

    @property
    def capacity(self) -> int:
        """Number of latent positions t*h*w."""
        t, h, w = self.latent_shape
        return t * h * w


@dataclass
class WindowRecord:
    """One decoded WINDOW chunk."""

    meta: WindowMeta
    keep_mask: np.ndarray  # bool [t, h, w]
    tokens: np.ndarray  # uint16 [kept], raster (t, h, w) order of the kept positions


def latent_shape(header: Header, frame_count: int, padded_frames: int) -> tuple[int, int, int]:
    """Latent grid (t, h, w) of a window of `frame_count + padded_frames` (= 1 + 4k) frames."""
    n = frame_count + padded_frames
    h, w = header.latent_hw
    return 1 + (n - 1) // header.temporal_stride, h, w


# ----------------------------------------------------------------------------- header codec


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _get_int(d: dict, key: str, lo: int, hi: int) -> int:
    v = d[key]
    if not _is_int(v):
        raise ContainerError(f"header field '{key}' must be an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise ContainerError(f"header field '{key}' = {v} is outside {lo}..{hi}")
    return int(v)


def _get_str(d: dict, key: str, min_bytes: int, max_bytes: int) -> str:
    v = d[key]
    if not isinstance(v, str):
        raise ContainerError(f"header field '{key}' must be a string, got {type(v).__name__}")
    n = len(v.encode("utf-8"))
    if not min_bytes <= n <= max_bytes:
        raise ContainerError(f"header field '{key}' is {n} bytes long, allowed {min_bytes}..{max_bytes}")
    return v


def inflate_exact(data: bytes, size: int, what: str) -> bytes:
    """Inflate a zlib stream that must produce exactly `size` bytes; never produces more."""
    d = zlib.decompressobj()
    try:
        # max_length 0 means "unbounded" to zlib, so ask for at least one byte to detect excess.
        out = d.decompress(data, max(size, 1))
    except zlib.error as e:
        raise ContainerError(f"{what}: corrupt zlib data ({e})") from None
    if len(out) != size or not d.eof or d.unconsumed_tail or d.unused_data:
        raise ContainerError(f"{what}: compressed data does not inflate to exactly {size} bytes")
    return out


def _encode_pts(pts: list[int]) -> bytes:
    arr = np.asarray(pts, dtype=np.int64)
    deltas = np.diff(arr, prepend=np.int64(0))  # int64 arithmetic wraps, as the spec requires
    return zlib.compress(deltas.astype("<i8").tobytes(), 9)


def _decode_pts(blob: bytes, num_frames: int) -> list[int]:
    raw = inflate_exact(blob, 8 * num_frames, "header field 'pts'")
    with np.errstate(over="ignore"):
        return np.cumsum(np.frombuffer(raw, dtype="<i8"), dtype=np.int64).tolist()


def pack_header(h: Header) -> tuple[bytes, Header]:
    """HEADER body for `h` and the Header a reader will see, validated by decoding the body exactly as a
    reader would: whatever the writer accepts, a reader can read."""
    if not isinstance(h, Header):
        raise ContainerError("header must be a Header")
    m = {f.name: getattr(h, f.name) for f in fields(h)}
    # NumPy scalars (e.g. from a probe) are accepted and stored as plain MessagePack ints / floats.
    for f in fields(h):
        v = m[f.name]
        if f.type == "int" and isinstance(v, np.integer):
            m[f.name] = int(v)
    if isinstance(m["beta"], numbers.Real) and not isinstance(m["beta"], (bool, np.bool_)):
        m["beta"] = float(m["beta"])  # the format stores beta as a float, even when it is 1
    pts = h.pts.tolist() if isinstance(h.pts, np.ndarray) else h.pts
    if not isinstance(pts, (list, tuple)):
        raise ContainerError("header field 'pts' must be a list of integers")
    pts = [int(p) if isinstance(p, np.integer) else p for p in pts]
    if any(not _is_int(p) for p in pts):
        raise ContainerError("header field 'pts' must be a list of integers")
    if len(pts) != h.num_frames:
        raise ContainerError(f"header field 'pts' has {len(pts)} timestamps for {h.num_frames} frames")
    if any(not -(2**63) <= p < 2**63 for p in pts):
        raise ContainerError("header field 'pts' holds a value outside the signed 64-bit range")
    m["pts"] = _encode_pts(pts)
    try:
        body = msgpack.packb(m, use_bin_type=True)
    except (TypeError, ValueError, OverflowError, msgpack.PackException) as e:
        raise ContainerError(f"header cannot be stored as MessagePack ({e})") from None
    if len(body) > MAX_HEADER_BYTES:
        raise ContainerError(f"header is {len(body)} bytes, above the limit of {MAX_HEADER_BYTES}")
    return body, header_from_map(unpack_header_body(body))


def unpack_header_body(body: bytes) -> dict:
    n = len(body)
    try:
        obj = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=n,
            max_bin_len=n,
            max_array_len=n,
            max_map_len=n,
            max_ext_len=0,
        )
    except (ValueError, msgpack.UnpackException) as e:  # incl. ExtraData, StackError, UnicodeDecodeError
        raise ContainerError(f"header is not valid MessagePack ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise ContainerError("header is not a MessagePack map")
    return obj


def header_from_map(m: dict) -> Header:
    """Validate a decoded HEADER map (docs/FORMAT.md section 5) and build the Header."""
    missing = [f.name for f in fields(Header) if f.name not in m]
    if missing:
        raise ContainerError(f"header is missing field '{missing[0]}'")
    kw: dict = {}
    kw["source_name"] = _get_str(m, "source_name", 0, MAX_SOURCE_NAME_BYTES)
    kw["width"] = _get_int(m, "width", 1, MAX_DIM)
    kw["height"] = _get_int(m, "height", 1, MAX_DIM)
    kw["num_frames"] = _get_int(m, "num_frames", 1, MAX_FRAMES)
    for key in ("fps_num", "fps_den", "time_base_num", "time_base_den", "sar_den"):
        kw[key] = _get_int(m, key, 1, MAX_RATIONAL)
    kw["sar_num"] = _get_int(m, "sar_num", 0, MAX_RATIONAL)
    kw["rotation"] = _get_int(m, "rotation", 0, 270)
    if kw["rotation"] % 90:
        raise ContainerError(f"header field 'rotation' = {kw['rotation']} is not one of 0, 90, 180, 270")
    if not isinstance(m["pts"], bytes):
        raise ContainerError("header field 'pts' must be binary (zlib-compressed timestamp deltas)")
    kw["pts"] = _decode_pts(m["pts"], kw["num_frames"])
    kw["model_name"] = _get_str(m, "model_name", 1, MAX_SHORT_STR_BYTES)
    sha = _get_str(m, "weights_sha256", 64, 64)
    if not _SHA_RE.fullmatch(sha):
        raise ContainerError("header field 'weights_sha256' is not 64 lowercase hex digits")
    kw["weights_sha256"] = sha
    kw["temporal_stride"] = _get_int(m, "temporal_stride", 0, 2**32)
    kw["spatial_stride"] = _get_int(m, "spatial_stride", 0, 2**32)
    if (kw["temporal_stride"], kw["spatial_stride"]) != (TEMPORAL_STRIDE, SPATIAL_STRIDE):
        raise ContainerError(
            f"unsupported strides {kw['temporal_stride']}x{kw['spatial_stride']} "
            f"(version 1 requires {TEMPORAL_STRIDE}x{SPATIAL_STRIDE})"
        )
    kw["window"] = _get_int(m, "window", 1, MAX_WINDOW)
    if (kw["window"] - 1) % TEMPORAL_STRIDE:
        raise ContainerError(f"header field 'window' = {kw['window']} is not 1 + 4k")
    kw["overlap"] = _get_int(m, "overlap", 0, kw["window"] - 1)
    beta = m["beta"]
    if not isinstance(beta, float) or not (math.isfinite(beta) and 0.0 < beta <= 1.0):
        raise ContainerError(f"header field 'beta' = {beta!r} is not a float in (0, 1]")
    kw["beta"] = beta
    strategy = m["strategy"]
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ContainerError(f"header field 'strategy' = {strategy!r} is not one of {', '.join(STRATEGIES)}")
    kw["strategy"] = strategy
    for key, src in (("padded_width", "width"), ("padded_height", "height")):
        v = _get_int(m, key, kw[src], MAX_DIM)
        if v % SPATIAL_STRIDE:
            raise ContainerError(f"header field '{key}' = {v} is not a multiple of {SPATIAL_STRIDE}")
        kw[key] = v
    kw["encoder_version"] = _get_str(m, "encoder_version", 0, MAX_SHORT_STR_BYTES)
    if not isinstance(m["extra"], dict) or any(not isinstance(k, str) for k in m["extra"]):
        raise ContainerError("header field 'extra' must be a map with string keys")
    kw["extra"] = m["extra"]
    header = Header(**kw)
    t_max = latent_shape(header, header.window, 0)[0]
    lat_h, lat_w = header.latent_hw
    if t_max * lat_h * lat_w > MAX_POSITIONS:
        raise ContainerError(
            f"a {header.window}-frame window of {header.padded_width}x{header.padded_height} has "
            f"{t_max * lat_h * lat_w} latent positions, above the limit of {MAX_POSITIONS}"
        )
    return header


def check_window_geometry(
    header: Header,
    i: int,
    frame_start: int,
    frame_count: int,
    padded_frames: int,
    prev: WindowMeta | None,
) -> tuple[int, int, int]:
    """Rules shared by writer and reader (sections 6 and 7): geometry and coverage of window i."""
    if frame_count < 1:
        raise ContainerError(f"window {i} covers no frames")
    if not 0 <= padded_frames <= TEMPORAL_STRIDE - 1:
        raise ContainerError(f"window {i} has {padded_frames} padding frames, allowed 0..3")
    n = frame_count + padded_frames
    if (n - 1) % TEMPORAL_STRIDE or n > header.window:
        raise ContainerError(
            f"window {i} is {n} frames long with padding: not 1 + 4k, or above the window of {header.window}"
        )
    if frame_start < 0 or frame_start + frame_count > header.num_frames:
        raise ContainerError(
            f"window {i} covers frames {frame_start}..{frame_start + frame_count - 1}, "
            f"outside the video's {header.num_frames} frames"
        )
    if prev is None:
        if frame_start != 0:
            raise ContainerError(
                f"window {i} starts at frame {frame_start}, the first window must start at 0"
            )
    else:
        prev_end = prev.frame_start + prev.frame_count
        if not prev.frame_start < frame_start <= prev_end or frame_start + frame_count <= prev_end:
            raise ContainerError(
                f"window {i} (frames {frame_start}..{frame_start + frame_count - 1}) does not follow "
                f"window {i - 1} (frames {prev.frame_start}..{prev_end - 1}) in order without a gap"
            )
    return latent_shape(header, frame_count, padded_frames)


# ----------------------------------------------------------------------------- window plan


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


def check_window(window: int, overlap: int) -> None:
    """The coding window's length (1 + 4k frames) and overlap (at most half of it)."""
    if window < 1 or (window - 1) % TEMPORAL_STRIDE:
        raise OptionError(f"--window must be 1 + 4k frames (e.g. 17, 33), got {window}")
    if not 0 <= overlap < window or (window > 1 and overlap > (window - 1) // 2):
        raise OptionError(f"--overlap must be between 0 and half the window, got {overlap}")
