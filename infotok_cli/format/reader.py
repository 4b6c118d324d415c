"""Reading .itok files (versions 1 and 2): `ItokReader` opens and validates the preamble, header,
trailer and index eagerly (never a token payload) and reads, verifies and decodes windows on demand.

Every file is treated as untrusted: sizes are bounded before anything is allocated or read, and
every problem with a file's contents surfaces as a `ContainerError` with a one-line message. Decoding a
window holds its mask (1 byte per position) and two grids of the entropy decoder (5 bytes per position):
at most 384 MiB at the limit of 2^26 positions (docs/FORMAT.md section 10).
"""

from __future__ import annotations

import operator
import os
import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import msgpack
import numpy as np

from ..constants import CODEBOOK_SIZE
from ..errors import ContainerError
from . import entropy
from .header import (
    Header,
    WindowMeta,
    WindowRecord,
    check_window_geometry,
    header_from_map,
    inflate_exact,
    unpack_header_body,
)
from .layout import (
    CHUNK_HEAD,
    CHUNK_HEADER,
    CHUNK_INDEX,
    CHUNK_OVERHEAD,
    CHUNK_SKIPPABLE_MIN,
    CHUNK_WINDOW,
    CODEC_ENTROPY,
    CODEC_RAW,
    CODEC_ZLIB,
    CRC,
    END_MAGIC,
    INDEX_ENTRY,
    INDEX_ENTRY_V2,
    INDEX_HEAD,
    IO_BLOCK,
    MAGIC,
    MASK_ENTROPY,
    MASK_PACKED,
    MAX_ENTRY_SIZE,
    MAX_HEADER_BYTES,
    PREAMBLE,
    READ_MAJORS,
    TRAILER,
    TRAILER_SIZE,
    WINDOW_FIXED,
    WINDOW_FIXED_V2,
    record_size_bounds,
)


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
    expected = CHUNK_OVERHEAD + WINDOW_FIXED_V2.size + m.mask_size + m.token_size
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
        head = self._read_at(offset, CHUNK_HEAD.size)
        chunk_type, body_size = CHUNK_HEAD.unpack(head)
        if chunk_type != expected_type:
            raise ContainerError(
                f"{what}: expected chunk type 0x{expected_type:02x}, found 0x{chunk_type:02x}"
            )
        if max_body is not None and body_size > max_body:
            raise ContainerError(f"{what} declares {body_size} bytes, above the limit of {max_body}")
        if offset + CHUNK_OVERHEAD + body_size > limit_end:
            raise ContainerError(f"file truncated ({what} extends past the end of its region)")
        rest = self._read_at(offset + CHUNK_HEAD.size, body_size + CRC.size)
        body = rest[:body_size]
        (crc,) = CRC.unpack_from(rest, body_size)
        if zlib.crc32(body, zlib.crc32(head, zlib.crc32(prefix))) != crc:
            raise ContainerError(f"checksum mismatch in {what}")
        return body

    # -- opening

    def _open(self) -> None:
        assert self._f is not None
        self._f.seek(0, os.SEEK_END)
        self.file_size = self._f.tell()
        head = self._read_at(0, min(self.file_size, PREAMBLE.size))
        if head[:4] != MAGIC[: len(head)] or not head:
            raise ContainerError("not an .itok file (bad magic)")
        if len(head) < PREAMBLE.size:
            raise ContainerError("file truncated")
        _, major, minor = PREAMBLE.unpack(head)
        if major not in READ_MAJORS:
            raise ContainerError(
                f"unsupported .itok version {major}.{minor} (this reader supports "
                f"{' and '.join(f'{v}.x' for v in READ_MAJORS)})"
            )
        self.version = (major, minor)
        data_end = self.file_size - TRAILER_SIZE  # chunks must end before the trailer
        body = self._read_chunk(
            PREAMBLE.size, CHUNK_HEADER, data_end, "header", max_body=MAX_HEADER_BYTES, prefix=head
        )
        self.header = header_from_map(unpack_header_body(body))
        self._header_end = PREAMBLE.size + CHUNK_OVERHEAD + len(body)

        trailer = self._read_at(data_end, TRAILER_SIZE)
        if trailer[-4:] != END_MAGIC:
            raise ContainerError("file truncated or not a complete .itok file (no trailer)")
        (crc,) = CRC.unpack_from(trailer, TRAILER.size)
        if zlib.crc32(trailer[: TRAILER.size]) != crc:
            raise ContainerError("checksum mismatch in trailer")
        index_offset, total_kept, window_count, index_size = TRAILER.unpack_from(trailer)
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
        if len(body) < INDEX_HEAD.size:
            raise ContainerError("index is too short")
        count, entry_size = INDEX_HEAD.unpack_from(body)
        if count != window_count:
            raise ContainerError(f"index lists {count} windows, trailer says {window_count}")
        v2 = self.version[0] >= 2
        entry = INDEX_ENTRY_V2 if v2 else INDEX_ENTRY
        if not entry.size <= entry_size <= MAX_ENTRY_SIZE:
            raise ContainerError(f"index entry size {entry_size} is outside {entry.size}..{MAX_ENTRY_SIZE}")
        if count > (len(body) - INDEX_HEAD.size) // entry_size:
            raise ContainerError(f"index declares {count} windows, more than its {len(body)} bytes can hold")
        header = self.header
        lat_hw = header.latent_hw
        pos = INDEX_HEAD.size
        prev: WindowMeta | None = None
        prev_end = self._header_end  # records lie between the header and the index, in order
        windows: list[WindowMeta] = []
        for i in range(count):
            if pos + entry_size > len(body):
                raise ContainerError("index is shorter than its entries")
            if v2:
                offset, size, fstart, fcount, t, h, w, padded, mcodec, tcodec, msize, tsize = (
                    INDEX_ENTRY_V2.unpack_from(body, pos)
                )
            else:
                offset, size, fstart, fcount, t, h, w, padded = INDEX_ENTRY.unpack_from(body, pos)
            shape = check_window_geometry(header, i, fstart, fcount, padded, prev)
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
                lo, hi = record_size_bounds(shape, meta.kept)
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
            WINDOW_FIXED.unpack_from(body)
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
        if WINDOW_FIXED.size + mask_bytes + payload_size != len(body):
            raise ContainerError(f"{what}: payload size {payload_size} does not match the record size")
        if payload_size > 2 * kept:
            raise ContainerError(f"{what}: payload of {payload_size} bytes is larger than {kept} raw tokens")
        mask = _unpack_mask(body[WINDOW_FIXED.size : WINDOW_FIXED.size + mask_bytes], meta, what)
        payload = body[WINDOW_FIXED.size + mask_bytes :]
        if codec == CODEC_RAW:
            if payload_size != 2 * kept:
                raise ContainerError(f"{what}: raw payload of {payload_size} bytes for {kept} tokens")
            raw = payload
        elif codec == CODEC_ZLIB:
            raw = inflate_exact(payload, 2 * kept, what)
        else:
            raise ContainerError(f"{what} uses unsupported token codec {codec}")
        tokens = _check_tokens(np.frombuffer(raw, dtype="<u2").astype(np.uint16), what)
        return WindowRecord(meta=meta, keep_mask=mask, tokens=tokens)

    def _decode_window_v2(self, meta: WindowMeta, body: bytes, what: str) -> WindowRecord:
        """A version 2 WINDOW body whose size matches the index (sizes and codecs were checked there)."""
        idx, fstart, fcount, t, h, w, padded, mcodec, tcodec, _reserved, kept, msize, tsize = (
            WINDOW_FIXED_V2.unpack_from(body)
        )
        if (idx, fstart, fcount, padded, (t, h, w), kept, mcodec, tcodec, msize, tsize) != (
            meta.index, meta.frame_start, meta.frame_count, meta.padded_frames, meta.latent_shape, meta.kept,
            meta.mask_codec, meta.token_codec, meta.mask_size, meta.token_size,
        ):  # fmt: skip
            raise ContainerError(f"{what} does not match its index entry")
        start = WINDOW_FIXED_V2.size
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
                raw = token_data if tcodec == CODEC_RAW else inflate_exact(token_data, 2 * kept, what)
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
            head = self._read_at(pos, CHUNK_HEAD.size)
            chunk_type, body_size = CHUNK_HEAD.unpack(head)
            end = pos + CHUNK_OVERHEAD + body_size
            if end > self._index_offset:
                raise ContainerError(f"chunk at {pos} extends into the index")
            if chunk_type == CHUNK_WINDOW:
                if wi >= len(self.windows) or self.windows[wi].offset != pos:
                    raise ContainerError(f"window chunk at {pos} is not in the index")
                wi += 1
            elif chunk_type >= CHUNK_SKIPPABLE_MIN:
                crc = zlib.crc32(head)
                for off in range(pos + CHUNK_HEAD.size, end - CRC.size, IO_BLOCK):
                    crc = zlib.crc32(self._read_at(off, min(IO_BLOCK, end - CRC.size - off)), crc)
                if CRC.unpack(self._read_at(end - CRC.size, CRC.size))[0] != crc:
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
            chunk_type, body_size = CHUNK_HEAD.unpack(self._read_at(pos, CHUNK_HEAD.size))
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
