"""The `.itok` container: writes version 2, reads versions 1 and 2. The normative spec is docs/FORMAT.md.

Layout: preamble ("ITOK", major, minor), HEADER chunk (MessagePack map), one WINDOW chunk per
coding window (keep mask + tokens), INDEX chunk, fixed 32-byte TRAILER. Every chunk is
`u8 type | u32 body_size | body | u32 crc32`. All integers are little-endian. Version 2 stores each
window's mask and tokens entropy-coded (`entropy.py`) when that is smaller, and the coded sizes in the
index; version 1 stored packed mask bits and raw or zlib tokens.

Every file is treated as untrusted: sizes are bounded before anything is allocated or read, and
every problem with a file's contents surfaces as a `ContainerError` with a one-line message.
"""

from __future__ import annotations

import math
import numbers
import operator
import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import BinaryIO

import msgpack
import numpy as np

from . import entropy
from .atomic import AtomicFile, OutputExistsError

MAGIC = b"ITOK"
END_MAGIC = b"KOTI"
FORMAT_MAJOR = 2  # what the writer writes
FORMAT_MINOR = 0
READ_MAJORS = (1, 2)  # what the reader reads
CODEBOOK_SIZE = 64000

CHUNK_HEADER = 0x01
CHUNK_WINDOW = 0x02
CHUNK_INDEX = 0x03
CHUNK_SKIPPABLE_MIN = 0x80
# Skippable chunks of version 1.1 (docs/FORMAT.md section 4.3); their bodies are coded by the modules
# named here, the container only frames them.
CHUNK_QUALITY = 0x80  # per-window achieved PSNR of a --target-psnr run (infotok_cli/quality.py)
CHUNK_AUDIO = 0x81  # the source's compressed audio packets, as they were (infotok_cli/audio.py)
MINOR_FOR_CHUNK = {CHUNK_QUALITY: 1, CHUNK_AUDIO: 1}

# token_codec (version 1: codec) and mask_codec values (docs/FORMAT.md section 6)
CODEC_RAW = 0
CODEC_ZLIB = 1
CODEC_ENTROPY = 2  # version 2 only
MASK_PACKED = 0
MASK_ENTROPY = 1  # version 2 only

STRATEGIES = ("window", "global", "video")
TEMPORAL_STRIDE = 4
SPATIAL_STRIDE = 8

# Limits (docs/FORMAT.md section 10).
MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_DIM = 16384
MAX_FRAMES = 10_000_000
MAX_WINDOW = 1 + 4 * (MAX_FRAMES // 4)  # 10_000_001, the largest 1 + 4k not above MAX_FRAMES + 1
MAX_POSITIONS = 2**26
MAX_ENTRY_SIZE = 1024
MAX_RATIONAL = 2**31 - 1
MAX_SOURCE_NAME_BYTES = 4096
MAX_SHORT_STR_BYTES = 256

_PREAMBLE = struct.Struct("<4sBB")
_CHUNK_HEAD = struct.Struct("<BI")
_CRC = struct.Struct("<I")
# Version 1: window_index, frame_start, frame_count, t, h, w, padded_frames, codec, reserved, kept, payload_size
_WINDOW_FIXED = struct.Struct("<IIIIHHBBHII")
# Version 2: ..., padded_frames, mask_codec, token_codec, reserved, kept, mask_size, token_size
_WINDOW_FIXED_V2 = struct.Struct("<IIIIHHBBBBIII")
_INDEX_HEAD = struct.Struct("<II")
# Version 1: record_offset, record_size, frame_start, frame_count, t, h, w, padded_frames, reserved
_INDEX_ENTRY = struct.Struct("<QIIIIHHB3x")
# Version 2: ..., padded_frames, mask_codec, token_codec, reserved, mask_size, token_size
_INDEX_ENTRY_V2 = struct.Struct("<QIIIIHHBBBxII")
_TRAILER = struct.Struct("<QQII")  # index_offset, total_kept, window_count, index_size; then crc, magic
TRAILER_SIZE = _TRAILER.size + 8
CHUNK_OVERHEAD = _CHUNK_HEAD.size + _CRC.size  # 9 bytes of framing per chunk
_U32_MAX = 2**32 - 1
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_IO_BLOCK = 1 << 20

assert _PREAMBLE.size == 6 and _WINDOW_FIXED.size == 32 and _INDEX_ENTRY.size == 32 and TRAILER_SIZE == 32
assert _WINDOW_FIXED_V2.size == 36 and _INDEX_ENTRY_V2.size == 40


class ContainerError(Exception):
    """A problem with an .itok file (or with data handed to the writer), as a one-line, user-facing
    message, e.g. 'checksum mismatch in window 3'."""

    def __init__(self, message: str):
        # One line whatever the cause: wrapped library messages sometimes contain newlines.
        super().__init__(" ".join(str(message).split()))


class OutputExistsContainerError(ContainerError, FileExistsError):
    """The output .itok file exists (or another writer created it first) and overwriting was not asked for."""


# ----------------------------------------------------------------------------- data model


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


def _inflate_exact(data: bytes, size: int, what: str) -> bytes:
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
    raw = _inflate_exact(blob, 8 * num_frames, "header field 'pts'")
    with np.errstate(over="ignore"):
        return np.cumsum(np.frombuffer(raw, dtype="<i8"), dtype=np.int64).tolist()


def _pack_header(h: Header) -> tuple[bytes, Header]:
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
    return body, _header_from_map(_unpack_header_body(body))


def _unpack_header_body(body: bytes) -> dict:
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


def _header_from_map(m: dict) -> Header:
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


def _check_window_geometry(
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


# ----------------------------------------------------------------------------- chunks


def _chunk(chunk_type: int, body: bytes, prefix: bytes = b"") -> bytes:
    """Frame a chunk; `prefix` (the preamble, for HEADER) is covered by the CRC but not returned."""
    if len(body) > _U32_MAX:
        raise ContainerError(f"chunk of {len(body)} bytes is too large for the format")
    head = _CHUNK_HEAD.pack(chunk_type, len(body))
    crc = zlib.crc32(body, zlib.crc32(head, zlib.crc32(prefix)))
    return head + body + _CRC.pack(crc)


def _smallest(forms: list[tuple[int, bytes]]) -> tuple[int, bytes]:
    """The shortest (codec, data); the lowest codec number on a tie."""
    return min(forms, key=lambda f: (len(f[1]), f[0]))


def _code_window(keep_mask: np.ndarray, tokens: np.ndarray, kept_per_frame: list[int]) -> tuple[int, bytes, int, bytes]:
    """(mask_codec, mask, token_codec, tokens) of a version 2 window: the smallest form of each (section 6),
    entropy-coded streams only where they obey section 14.5."""
    shape = keep_mask.shape
    kept = int(tokens.size)
    packed_mask = np.packbits(keep_mask.reshape(-1), bitorder="little").tobytes()
    masks = [(MASK_PACKED, packed_mask)]
    coded = entropy.encode_mask(keep_mask)
    if entropy.min_mask_bytes(shape, kept_per_frame) <= len(coded) <= len(packed_mask):
        masks.append((MASK_ENTROPY, coded))
    raw = tokens.astype("<u2").tobytes()
    toks = [(CODEC_RAW, raw)]
    if raw:
        toks.append((CODEC_ZLIB, zlib.compress(raw, 6)))
        coded = entropy.encode_tokens(keep_mask, tokens)
        if entropy.min_token_bytes(kept, entropy.nonempty_wavefronts(keep_mask)) <= len(coded) <= len(raw):
            toks.append((CODEC_ENTROPY, coded))
    return (*_smallest(masks), *_smallest(toks))


def _record_size_bounds(shape: tuple[int, int, int], kept: int) -> tuple[int, int]:
    """Smallest and largest version 1 WINDOW chunk (section 7)."""
    base = CHUNK_OVERHEAD + _WINDOW_FIXED.size + (shape[0] * shape[1] * shape[2] + 7) // 8
    return base, base + 2 * kept


def _check_stream_sizes(m: WindowMeta) -> None:
    """A version 2 index entry's codecs and coded sizes against sections 6, 7 and 14.5: checked before
    the record is read, so they bound both the read and the decoding work."""
    what = f"window {m.index}"
    packed = (m.capacity + 7) // 8
    if m.mask_codec == MASK_PACKED:
        if m.mask_size != packed:
            raise ContainerError(f"{what}: packed mask of {m.mask_size} bytes, expected {packed}")
    elif m.mask_codec == MASK_ENTROPY:
        lo = entropy.min_mask_bytes(m.latent_shape, m.kept_per_frame)
        if not lo <= m.mask_size <= packed or m.mask_size % 4:
            raise ContainerError(
                f"{what}: coded mask of {m.mask_size} bytes is not a multiple of 4 in {lo}..{packed}"
            )
    else:
        raise ContainerError(f"{what} uses unsupported mask codec {m.mask_codec}")
    raw = 2 * m.kept
    if m.token_codec == CODEC_RAW:
        if m.token_size != raw:
            raise ContainerError(f"{what}: raw payload of {m.token_size} bytes for {m.kept} tokens")
    elif m.token_codec == CODEC_ZLIB:
        if m.token_size > raw:
            raise ContainerError(f"{what}: payload of {m.token_size} bytes is larger than {m.kept} raw tokens")
    elif m.token_codec == CODEC_ENTROPY:
        lo = entropy.min_token_bytes(m.kept)
        if not lo <= m.token_size <= raw or m.token_size % 4:
            raise ContainerError(
                f"{what}: coded tokens of {m.token_size} bytes are not a multiple of 4 in {lo}..{raw}"
            )
    else:
        raise ContainerError(f"{what} uses unsupported token codec {m.token_codec}")
    expected = CHUNK_OVERHEAD + _WINDOW_FIXED_V2.size + m.mask_size + m.token_size
    if m.record_size != expected:
        raise ContainerError(f"{what} record size {m.record_size} does not match its coded sizes ({expected})")


def _unpack_mask(data: bytes, m: WindowMeta, what: str) -> np.ndarray:
    """Packed mask bits -> bool [t, h, w], checked against the index's kept counts."""
    capacity = m.capacity
    raw = np.frombuffer(data, dtype=np.uint8)
    if capacity % 8 and int(raw[-1]) >> (capacity % 8):
        raise ContainerError(f"{what}: keep mask has non-zero padding bits")
    mask = np.unpackbits(raw, count=capacity, bitorder="little").astype(bool).reshape(m.latent_shape)
    if mask.reshape(m.latent_shape[0], -1).sum(axis=1).tolist() != m.kept_per_frame:
        raise ContainerError(f"{what}: keep mask does not match the kept counts in the index")
    return mask


def _check_tokens(tokens: np.ndarray, what: str) -> np.ndarray:
    if tokens.size and int(tokens.max()) >= CODEBOOK_SIZE:
        raise ContainerError(f"{what} holds token {int(tokens.max())}, above the codebook size {CODEBOOK_SIZE}")
    return tokens


# ----------------------------------------------------------------------------- writer


class ItokWriter:
    """Streaming, atomic writer: `with ItokWriter(path, header, overwrite=False) as w: w.write_window(...)`.

    Writes through `atomic.AtomicFile` (an unnamed file linked into place, or a locked named temporary):
    the file appears complete on successful exit, and on exception or a crash nothing is left and
    `path` is untouched. Raises ContainerError if path exists and not overwrite (also when another
    writer created it meanwhile), for an invalid header or window, and for I/O errors.
    """

    def __init__(self, path: str | os.PathLike, header: Header, *, overwrite: bool = False):
        self.path = os.fspath(path)
        self.overwrite = overwrite
        self.windows: list[WindowMeta] = []
        self._f: BinaryIO | None = None
        self._out: AtomicFile | None = None
        self._minor = FORMAT_MINOR
        # The decoded copy: plain Python types, and later changes to the caller's object do not matter.
        body, self.header = _pack_header(header)
        self._header_body = body
        preamble = _PREAMBLE.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR)
        try:
            self._out = AtomicFile(self.path, overwrite=overwrite)
            self._f = self._out.file
            self._pos = 0
            self._write(preamble + _chunk(CHUNK_HEADER, body, prefix=preamble))
        except OutputExistsError:
            raise OutputExistsContainerError(f"{self.path} already exists (use overwrite to replace it)") from None
        except OSError as e:
            self.abort()
            raise ContainerError(f"cannot write {self.path}: {e.strerror or e}") from None
        self._header_end = self._pos

    def _write(self, data: bytes) -> None:
        assert self._f is not None
        self._f.write(data)
        self._pos += len(data)

    def __enter__(self) -> ItokWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def write_window(
        self,
        frame_start: int,
        frame_count: int,
        padded_frames: int,
        keep_mask: np.ndarray,
        tokens: np.ndarray,
    ) -> WindowMeta:
        """Append the next window. `keep_mask` is bool [t, h, w]; `tokens` holds the tokens of the kept
        positions in raster (t, h, w) order, each < CODEBOOK_SIZE. Nothing is written if it is invalid."""
        if self._f is None:
            raise ContainerError("writer is closed")
        i = len(self.windows)
        try:
            frame_start, frame_count, padded_frames = map(
                operator.index, (frame_start, frame_count, padded_frames)
            )
        except TypeError:
            raise ContainerError("frame_start, frame_count and padded_frames must be integers") from None
        prev = self.windows[-1] if self.windows else None
        shape = _check_window_geometry(self.header, i, frame_start, frame_count, padded_frames, prev)
        if not isinstance(keep_mask, np.ndarray) or keep_mask.dtype != np.bool_ or keep_mask.shape != shape:
            got = (keep_mask.dtype, keep_mask.shape) if isinstance(keep_mask, np.ndarray) else type(keep_mask)
            raise ContainerError(f"window {i}: keep_mask must be a bool array of shape {shape}, got {got}")
        tokens = np.asarray(tokens)
        kept_per_frame = keep_mask.reshape(shape[0], -1).sum(axis=1)
        kept = int(kept_per_frame.sum())
        if tokens.ndim != 1 or tokens.size != kept or (tokens.size and tokens.dtype.kind not in "iu"):
            raise ContainerError(
                f"window {i}: tokens must be a 1-D integer array of {kept} values (one per kept position), "
                f"got {tokens.dtype} {tokens.shape}"
            )
        if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= CODEBOOK_SIZE):
            raise ContainerError(f"window {i}: token values must be in [0, {CODEBOOK_SIZE})")
        kpf = kept_per_frame.tolist()
        mask_codec, mask_data, token_codec, token_data = _code_window(keep_mask, tokens, kpf)
        t, h, w = shape
        fixed = _WINDOW_FIXED_V2.pack(
            i, frame_start, frame_count, t, h, w, padded_frames, mask_codec, token_codec, 0, kept,
            len(mask_data), len(token_data),
        )  # fmt: skip
        chunk = _chunk(CHUNK_WINDOW, fixed + mask_data + token_data)
        meta = WindowMeta(
            i, self._pos, frame_start, frame_count, padded_frames, shape, kpf, len(chunk),
            mask_codec, token_codec, len(mask_data), len(token_data),
        )  # fmt: skip
        try:
            self._write(chunk)
        except OSError as e:
            self.abort()  # a partly written chunk cannot be continued
            raise ContainerError(f"cannot write {self.path}: {e.strerror or e}") from None
        self.windows.append(meta)
        return meta

    def write_chunk(self, chunk_type: int, body: bytes) -> None:
        """Append a skippable chunk (type 0x80-0xFF) after the windows written so far; the file's minor
        version is raised to what the type needs (docs/FORMAT.md section 9)."""
        if self._f is None:
            raise ContainerError("writer is closed")
        if not CHUNK_SKIPPABLE_MIN <= chunk_type <= 0xFF:
            raise ContainerError(f"chunk type 0x{chunk_type:02x} is not a skippable type")
        chunk = _chunk(chunk_type, bytes(body))
        try:
            self._write(chunk)
        except OSError as e:
            self.abort()
            raise ContainerError(f"cannot write {self.path}: {e.strerror or e}") from None
        self._minor = max(self._minor, MINOR_FOR_CHUNK.get(chunk_type, FORMAT_MINOR))

    def _patch_minor(self) -> None:
        """Rewrite the preamble's minor version and the HEADER checksum that covers it."""
        assert self._f is not None
        preamble = _PREAMBLE.pack(MAGIC, FORMAT_MAJOR, self._minor)
        head = _CHUNK_HEAD.pack(CHUNK_HEADER, len(self._header_body))
        crc = zlib.crc32(self._header_body, zlib.crc32(head, zlib.crc32(preamble)))
        self._f.seek(0)
        self._f.write(preamble)
        self._f.seek(self._header_end - _CRC.size)
        self._f.write(_CRC.pack(crc))
        self._f.seek(self._pos)

    def _index_body(self) -> bytes:
        parts = [_INDEX_HEAD.pack(len(self.windows), _INDEX_ENTRY_V2.size)]
        for m in self.windows:
            t, h, w = m.latent_shape
            parts.append(
                _INDEX_ENTRY_V2.pack(
                    m.offset, m.record_size, m.frame_start, m.frame_count, t, h, w, m.padded_frames,
                    m.mask_codec, m.token_codec, m.mask_size, m.token_size,
                )  # fmt: skip
            )
            parts.append(np.asarray(m.kept_per_frame, dtype="<u4").tobytes())
        return b"".join(parts)

    def close(self) -> None:
        """Write index and trailer, fsync and move the file into place. Aborts (removing the temp file)
        and raises ContainerError if the windows do not cover the whole video or I/O fails."""
        if self._f is None:
            return
        try:
            last = self.windows[-1] if self.windows else None
            if last is None or last.frame_start + last.frame_count != self.header.num_frames:
                covered = 0 if last is None else last.frame_start + last.frame_count
                raise ContainerError(
                    f"windows cover frames 0..{covered - 1} but the video has {self.header.num_frames} frames"
                )
            index_offset = self._pos
            index = _chunk(CHUNK_INDEX, self._index_body())
            total_kept = sum(m.kept for m in self.windows)
            trailer = _TRAILER.pack(index_offset, total_kept, len(self.windows), len(index))
            self._write(index + trailer + _CRC.pack(zlib.crc32(trailer)) + END_MAGIC)
            if self._minor != FORMAT_MINOR:
                self._patch_minor()
            self._f = None
            assert self._out is not None
            self._out.commit()  # flush, fsync, link into place
            self._out = None
        except OutputExistsError:
            self.abort()
            raise OutputExistsContainerError(f"{self.path} already exists (use overwrite to replace it)") from None
        except OSError as e:
            self.abort()
            raise ContainerError(f"cannot write {self.path}: {e.strerror or e}") from None
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Discard everything written; `path` is left untouched. Safe to call more than once."""
        self._f = None
        if self._out is not None:
            self._out.abort()
            self._out = None


# ----------------------------------------------------------------------------- reader

# Exceptions that malformed input can raise inside parsing; converted to ContainerError at the API edge.
_PARSE_ERRORS = (
    struct.error,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    OverflowError,
    zlib.error,
    msgpack.UnpackException,
)


class ItokReader:
    """Opens and validates magic/version/header/trailer/index eagerly (cheap: never reads token payloads).

    `with ItokReader(path) as r:`; `r.header`, `r.windows` (list[WindowMeta]), `r.file_size`,
    `r.version` ((major, minor)), `r.read_window(i)` -> WindowRecord (verifies that record's checksum
    and its consistency with the index), `r.iter_windows()`, `r.verify()` (full integrity check).
    `source` is a path or a seekable binary file object (which the reader does not close).
    """

    def __init__(self, source: str | os.PathLike | BinaryIO):
        self._own = not hasattr(source, "read")
        self.name = os.fspath(source) if self._own else getattr(source, "name", "<stream>")
        try:
            self._f: BinaryIO | None = open(source, "rb") if self._own else source
        except OSError as e:
            raise ContainerError(f"cannot open {self.name}: {e.strerror or e}") from None
        try:
            self._guard(self._open)
        except BaseException:
            self.close()
            raise

    # -- plumbing

    def _guard(self, fn, *args):
        """Run a parsing step, turning anything malformed input can raise into ContainerError."""
        try:
            return fn(*args)
        except ContainerError:
            raise
        except OSError as e:
            raise ContainerError(f"cannot read {self.name}: {e.strerror or e}") from None
        except _PARSE_ERRORS as e:
            raise ContainerError(f"malformed .itok file ({type(e).__name__}: {e})") from None

    def _read_at(self, offset: int, size: int) -> bytes:
        """Read exactly `size` bytes at `offset`; callers have bounded `size` by the file size."""
        if self._f is None:
            raise ContainerError("reader is closed")
        if offset < 0 or size < 0 or offset + size > self.file_size:
            raise ContainerError("file truncated")
        self._f.seek(offset)
        data = self._f.read(size)
        if len(data) != size:
            raise ContainerError("file truncated")
        return data

    def _read_chunk(
        self,
        offset: int,
        expected_type: int,
        limit_end: int,
        what: str,
        max_body: int | None = None,
        prefix: bytes = b"",
    ) -> bytes:
        """Read, bound and checksum a chunk at `offset` that must end at or before `limit_end`."""
        head = self._read_at(offset, _CHUNK_HEAD.size)
        chunk_type, body_size = _CHUNK_HEAD.unpack(head)
        if chunk_type != expected_type:
            raise ContainerError(
                f"{what}: expected chunk type 0x{expected_type:02x}, found 0x{chunk_type:02x}"
            )
        if max_body is not None and body_size > max_body:
            raise ContainerError(f"{what} declares {body_size} bytes, above the limit of {max_body}")
        if offset + CHUNK_OVERHEAD + body_size > limit_end:
            raise ContainerError(f"file truncated ({what} extends past the end of its region)")
        rest = self._read_at(offset + _CHUNK_HEAD.size, body_size + _CRC.size)
        body = rest[:body_size]
        (crc,) = _CRC.unpack_from(rest, body_size)
        if zlib.crc32(body, zlib.crc32(head, zlib.crc32(prefix))) != crc:
            raise ContainerError(f"checksum mismatch in {what}")
        return body

    # -- opening

    def _open(self) -> None:
        assert self._f is not None
        self._f.seek(0, os.SEEK_END)
        self.file_size = self._f.tell()
        head = self._read_at(0, min(self.file_size, _PREAMBLE.size))
        if head[:4] != MAGIC[: len(head)] or not head:
            raise ContainerError("not an .itok file (bad magic)")
        if len(head) < _PREAMBLE.size:
            raise ContainerError("file truncated")
        _, major, minor = _PREAMBLE.unpack(head)
        if major not in READ_MAJORS:
            raise ContainerError(
                f"unsupported .itok version {major}.{minor} (this reader supports "
                f"{' and '.join(f'{v}.x' for v in READ_MAJORS)})"
            )
        self.version = (major, minor)
        data_end = self.file_size - TRAILER_SIZE  # chunks must end before the trailer
        body = self._read_chunk(
            _PREAMBLE.size, CHUNK_HEADER, data_end, "header", max_body=MAX_HEADER_BYTES, prefix=head
        )
        self.header = _header_from_map(_unpack_header_body(body))
        self._header_end = _PREAMBLE.size + CHUNK_OVERHEAD + len(body)

        trailer = self._read_at(data_end, TRAILER_SIZE)
        if trailer[-4:] != END_MAGIC:
            raise ContainerError("file truncated or not a complete .itok file (no trailer)")
        (crc,) = _CRC.unpack_from(trailer, _TRAILER.size)
        if zlib.crc32(trailer[: _TRAILER.size]) != crc:
            raise ContainerError("checksum mismatch in trailer")
        index_offset, total_kept, window_count, index_size = _TRAILER.unpack_from(trailer)
        if index_offset < self._header_end or index_offset + index_size != data_end:
            raise ContainerError(
                f"trailer places the index at {index_offset} (+{index_size} bytes), "
                f"which is not between the header and the trailer"
            )
        if not 1 <= window_count <= self.header.num_frames:
            raise ContainerError(f"file declares {window_count} windows for {self.header.num_frames} frames")
        self._index_offset = index_offset
        body = self._read_chunk(index_offset, CHUNK_INDEX, data_end, "index")
        if len(body) + CHUNK_OVERHEAD != index_size:
            raise ContainerError("index size in trailer does not match the index chunk")
        self.windows = self._parse_index(body, window_count)
        if sum(m.kept for m in self.windows) != total_kept:
            raise ContainerError("trailer's total kept count does not match the index")

    def _parse_index(self, body: bytes, window_count: int) -> list[WindowMeta]:
        if len(body) < _INDEX_HEAD.size:
            raise ContainerError("index is too short")
        count, entry_size = _INDEX_HEAD.unpack_from(body)
        if count != window_count:
            raise ContainerError(f"index lists {count} windows, trailer says {window_count}")
        v2 = self.version[0] >= 2
        entry = _INDEX_ENTRY_V2 if v2 else _INDEX_ENTRY
        if not entry.size <= entry_size <= MAX_ENTRY_SIZE:
            raise ContainerError(f"index entry size {entry_size} is outside {entry.size}..{MAX_ENTRY_SIZE}")
        if count > (len(body) - _INDEX_HEAD.size) // entry_size:
            raise ContainerError(f"index declares {count} windows, more than its {len(body)} bytes can hold")
        header = self.header
        lat_hw = header.latent_hw
        pos = _INDEX_HEAD.size
        prev: WindowMeta | None = None
        prev_end = self._header_end  # records lie between the header and the index, in order
        windows: list[WindowMeta] = []
        for i in range(count):
            if pos + entry_size > len(body):
                raise ContainerError("index is shorter than its entries")
            if v2:
                offset, size, fstart, fcount, t, h, w, padded, mcodec, tcodec, msize, tsize = (
                    _INDEX_ENTRY_V2.unpack_from(body, pos)
                )
            else:
                offset, size, fstart, fcount, t, h, w, padded = _INDEX_ENTRY.unpack_from(body, pos)
            shape = _check_window_geometry(header, i, fstart, fcount, padded, prev)
            if (t, h, w) != shape:
                raise ContainerError(
                    f"window {i} has latent shape {(t, h, w)}, expected {shape} "
                    f"(window length and padded size {lat_hw})"
                )
            pos += entry_size
            if pos + 4 * t > len(body):
                raise ContainerError("index is shorter than its entries")
            kpf = np.frombuffer(body, dtype="<u4", count=t, offset=pos)
            pos += 4 * t
            if int(kpf.max()) > h * w:
                raise ContainerError(
                    f"window {i} declares more kept tokens in a latent frame than it has positions"
                )
            meta = WindowMeta(i, offset, fstart, fcount, padded, shape, kpf.tolist(), size)
            if v2:
                meta.mask_codec, meta.token_codec, meta.mask_size, meta.token_size = mcodec, tcodec, msize, tsize
                _check_stream_sizes(meta)
            else:
                lo, hi = _record_size_bounds(shape, meta.kept)
                if not lo <= size <= hi:
                    raise ContainerError(f"window {i} record size {size} is outside {lo}..{hi} for its contents")
                meta.mask_size, meta.token_size = (meta.capacity + 7) // 8, size - lo
            if offset < prev_end or offset + size > self._index_offset:
                raise ContainerError(
                    f"window {i} record at {offset} (+{size} bytes) overlaps another chunk "
                    f"or lies outside the data region"
                )
            prev_end = offset + size
            windows.append(meta)
            prev = meta
        if pos != len(body):
            raise ContainerError(f"index has {len(body) - pos} unexpected trailing bytes")
        last = windows[-1]
        if last.frame_start + last.frame_count != header.num_frames:
            raise ContainerError(
                f"windows end at frame {last.frame_start + last.frame_count}, "
                f"but the video has {header.num_frames} frames"
            )
        return windows

    # -- windows

    def read_window(self, i: int) -> WindowRecord:
        """Read, verify and decode window `i` (0-based)."""
        try:
            i = operator.index(i)
        except TypeError:
            raise ContainerError(f"window number must be an integer, got {type(i).__name__}") from None
        if not 0 <= i < len(self.windows):
            raise ContainerError(f"no window {i} (the file has {len(self.windows)})")
        return self._guard(self._read_window, i)

    def _read_window(self, i: int) -> WindowRecord:
        meta = self.windows[i]
        what = f"window {i}"
        body = self._read_chunk(meta.offset, CHUNK_WINDOW, meta.offset + meta.record_size, what)
        if len(body) + CHUNK_OVERHEAD != meta.record_size:
            raise ContainerError(
                f"{what} is {len(body) + CHUNK_OVERHEAD} bytes, the index says {meta.record_size}"
            )
        if self.version[0] >= 2:
            return self._decode_window_v2(meta, body, what)
        idx, fstart, fcount, t, h, w, padded, codec, _reserved, kept, payload_size = (
            _WINDOW_FIXED.unpack_from(body)
        )
        if (idx, fstart, fcount, padded, (t, h, w)) != (
            i,
            meta.frame_start,
            meta.frame_count,
            meta.padded_frames,
            meta.latent_shape,
        ):
            raise ContainerError(f"{what} does not match its index entry")
        capacity = meta.capacity
        if kept > capacity:
            raise ContainerError(f"{what} declares {kept} tokens, above the limit of {capacity}")
        if kept != meta.kept:
            raise ContainerError(f"{what} declares {kept} tokens, the index says {meta.kept}")
        mask_bytes = (capacity + 7) // 8
        if _WINDOW_FIXED.size + mask_bytes + payload_size != len(body):
            raise ContainerError(f"{what}: payload size {payload_size} does not match the record size")
        if payload_size > 2 * kept:
            raise ContainerError(f"{what}: payload of {payload_size} bytes is larger than {kept} raw tokens")
        mask = _unpack_mask(body[_WINDOW_FIXED.size : _WINDOW_FIXED.size + mask_bytes], meta, what)
        payload = body[_WINDOW_FIXED.size + mask_bytes :]
        if codec == CODEC_RAW:
            if payload_size != 2 * kept:
                raise ContainerError(f"{what}: raw payload of {payload_size} bytes for {kept} tokens")
            raw = payload
        elif codec == CODEC_ZLIB:
            raw = _inflate_exact(payload, 2 * kept, what)
        else:
            raise ContainerError(f"{what} uses unsupported token codec {codec}")
        tokens = _check_tokens(np.frombuffer(raw, dtype="<u2").astype(np.uint16), what)
        return WindowRecord(meta=meta, keep_mask=mask, tokens=tokens)

    def _decode_window_v2(self, meta: WindowMeta, body: bytes, what: str) -> WindowRecord:
        """A version 2 WINDOW body whose size matches the index (sizes and codecs were checked there)."""
        idx, fstart, fcount, t, h, w, padded, mcodec, tcodec, _reserved, kept, msize, tsize = (
            _WINDOW_FIXED_V2.unpack_from(body)
        )
        if (idx, fstart, fcount, padded, (t, h, w), kept, mcodec, tcodec, msize, tsize) != (
            meta.index, meta.frame_start, meta.frame_count, meta.padded_frames, meta.latent_shape, meta.kept,
            meta.mask_codec, meta.token_codec, meta.mask_size, meta.token_size,
        ):  # fmt: skip
            raise ContainerError(f"{what} does not match its index entry")
        start = _WINDOW_FIXED_V2.size
        mask_data, token_data = body[start : start + msize], body[start + msize :]
        try:
            if mcodec == MASK_PACKED:
                mask = _unpack_mask(mask_data, meta, what)
            else:
                mask = entropy.decode_mask(mask_data, meta.latent_shape, meta.kept_per_frame)
            if tcodec == CODEC_ENTROPY:
                need = entropy.min_token_bytes(kept, entropy.nonempty_wavefronts(mask))
                if tsize < need:
                    raise ContainerError(f"{what}: coded tokens of {tsize} bytes, fewer than the {need} its "
                                         f"wavefronts need")
                tokens = entropy.decode_tokens(token_data, mask)
            else:
                raw = token_data if tcodec == CODEC_RAW else _inflate_exact(token_data, 2 * kept, what)
                tokens = _check_tokens(np.frombuffer(raw, dtype="<u2").astype(np.uint16), what)
        except entropy.EntropyError as e:
            raise ContainerError(f"{what}: {e}") from None
        return WindowRecord(meta=meta, keep_mask=mask, tokens=tokens)

    def iter_windows(self) -> Iterator[WindowRecord]:
        """Read every window in order."""
        for i in range(len(self.windows)):
            yield self.read_window(i)

    def verify(self) -> None:
        """Full integrity check: walk every chunk between header and index (no gaps, reserved chunk types
        rejected, skippable chunks' checksums verified) and decode every window."""
        self._guard(self._walk_chunks)
        for i in range(len(self.windows)):
            self.read_window(i)

    def _walk_chunks(self) -> None:
        pos, wi = self._header_end, 0
        while pos < self._index_offset:
            head = self._read_at(pos, _CHUNK_HEAD.size)
            chunk_type, body_size = _CHUNK_HEAD.unpack(head)
            end = pos + CHUNK_OVERHEAD + body_size
            if end > self._index_offset:
                raise ContainerError(f"chunk at {pos} extends into the index")
            if chunk_type == CHUNK_WINDOW:
                if wi >= len(self.windows) or self.windows[wi].offset != pos:
                    raise ContainerError(f"window chunk at {pos} is not in the index")
                wi += 1
            elif chunk_type >= CHUNK_SKIPPABLE_MIN:
                crc = zlib.crc32(head)
                for off in range(pos + _CHUNK_HEAD.size, end - _CRC.size, _IO_BLOCK):
                    crc = zlib.crc32(self._read_at(off, min(_IO_BLOCK, end - _CRC.size - off)), crc)
                if _CRC.unpack(self._read_at(end - _CRC.size, _CRC.size))[0] != crc:
                    raise ContainerError(f"checksum mismatch in skippable chunk at {pos}")
            else:
                raise ContainerError(f"unexpected chunk type 0x{chunk_type:02x} at offset {pos}")
            pos = end
        if wi != len(self.windows):
            raise ContainerError("index lists windows that are not in the chunk sequence")

    def skippable_chunks(self) -> list[tuple[int, int, int]]:
        """(type, offset, body size) of every skippable chunk, by walking the chunk heads between header
        and index (one 5-byte read per chunk, no payloads read)."""
        return self._guard(self._skippable_chunks)

    def _skippable_chunks(self) -> list[tuple[int, int, int]]:
        found, pos = [], self._header_end
        while pos < self._index_offset:
            chunk_type, body_size = _CHUNK_HEAD.unpack(self._read_at(pos, _CHUNK_HEAD.size))
            if pos + CHUNK_OVERHEAD + body_size > self._index_offset:
                raise ContainerError(f"chunk at {pos} extends into the index")
            if chunk_type >= CHUNK_SKIPPABLE_MIN:
                found.append((chunk_type, pos, body_size))
            pos += CHUNK_OVERHEAD + body_size
        return found

    def read_skippable(self, chunk_type: int, max_body: int) -> bytes | None:
        """Body of the first skippable chunk of `chunk_type` (size bounded by `max_body`, checksum
        verified), or None when the file has none."""
        for ctype, offset, _size in self.skippable_chunks():
            if ctype == chunk_type:
                what = f"chunk 0x{chunk_type:02x}"
                return self._guard(self._read_chunk, offset, chunk_type, self._index_offset, what, max_body)
        return None

    # -- lifecycle

    def __len__(self) -> int:
        return len(self.windows)

    def close(self) -> None:
        if self._f is not None and self._own:
            self._f.close()
        self._f = None

    def __enter__(self) -> ItokReader:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


def read_header_and_index(path: str | os.PathLike | BinaryIO) -> tuple[Header, list[WindowMeta], int]:
    """Header, window index and file size of an .itok file, without reading any token payload."""
    with ItokReader(path) as r:
        return r.header, r.windows, r.file_size
