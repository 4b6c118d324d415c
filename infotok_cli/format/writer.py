"""Writing .itok files (version 2): the HEADER, one WINDOW chunk per coding window (each stream in its
smallest form: packed or entropy-coded mask, raw, zlib or entropy-coded tokens), INDEX and TRAILER.

The writer writes to a stream it is given; making a file appear atomically on disk is `io.files`'. A writer
that adds skippable chunks raises the minor version: it rewrites the preamble and the HEADER checksum that
covers it before the output is committed.
"""

from __future__ import annotations

import operator
import zlib
from typing import BinaryIO, Protocol

import numpy as np

from ..constants import CODEBOOK_SIZE
from ..errors import ContainerError, OutputExistsContainerError
from . import entropy
from .header import Header, WindowMeta, check_window_geometry, pack_header
from .layout import (
    CHUNK_HEAD,
    CHUNK_HEADER,
    CHUNK_INDEX,
    CHUNK_SKIPPABLE_MIN,
    CHUNK_WINDOW,
    CODEC_ENTROPY,
    CODEC_RAW,
    CODEC_ZLIB,
    CRC,
    END_MAGIC,
    FORMAT_MAJOR,
    FORMAT_MINOR,
    INDEX_ENTRY_V2,
    INDEX_HEAD,
    MAGIC,
    MASK_ENTROPY,
    MASK_PACKED,
    MINOR_FOR_CHUNK,
    PREAMBLE,
    TRAILER,
    WINDOW_FIXED_V2,
    frame_chunk,
)


class Output(Protocol):
    """An output that appears only when committed (io.atomic.AtomicFile)."""

    file: BinaryIO

    def commit(self) -> None: ...

    def abort(self) -> None: ...


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


class ItokWriter:
    """Streaming writer of an .itok file: `with ItokWriter(out, header) as w: w.write_window(...)`.

    `out` is a seekable binary file, or an output with `file`, `commit()` and `abort()` (an
    `io.atomic.AtomicFile`; `io.files.itok_writer(path, header)` opens one): it is committed when the
    writer closes, so the file appears complete, and aborted on an exception. Where the bytes go and
    how a file appears on disk is the caller's business, not the format's. Raises ContainerError for an
    invalid header or window and for I/O errors (OutputExistsContainerError when the output turned out
    to exist at commit).
    """

    def __init__(self, out: BinaryIO | Output, header: Header, *, name: str | None = None):
        self.windows: list[WindowMeta] = []
        self._minor = FORMAT_MINOR
        # The decoded copy: plain Python types, and later changes to the caller's object do not matter.
        body, self.header = pack_header(header)
        self._header_body = body
        self._out: Output | None = out if hasattr(out, "commit") else None  # type: ignore[assignment]
        self._f: BinaryIO | None = self._out.file if self._out is not None else out  # type: ignore[union-attr]
        self.path = name if name is not None else str(getattr(self._f, "name", "<stream>"))
        self._pos = 0
        preamble = PREAMBLE.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR)
        try:
            self._write(preamble + frame_chunk(CHUNK_HEADER, body, prefix=preamble))
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
        shape = check_window_geometry(self.header, i, frame_start, frame_count, padded_frames, prev)
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
        fixed = WINDOW_FIXED_V2.pack(
            i, frame_start, frame_count, t, h, w, padded_frames, mask_codec, token_codec, 0, kept,
            len(mask_data), len(token_data),
        )  # fmt: skip
        chunk = frame_chunk(CHUNK_WINDOW, fixed + mask_data + token_data)
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
        chunk = frame_chunk(chunk_type, bytes(body))
        try:
            self._write(chunk)
        except OSError as e:
            self.abort()
            raise ContainerError(f"cannot write {self.path}: {e.strerror or e}") from None
        self._minor = max(self._minor, MINOR_FOR_CHUNK.get(chunk_type, FORMAT_MINOR))

    def _patch_minor(self) -> None:
        """Rewrite the preamble's minor version and the HEADER checksum that covers it."""
        assert self._f is not None
        preamble = PREAMBLE.pack(MAGIC, FORMAT_MAJOR, self._minor)
        head = CHUNK_HEAD.pack(CHUNK_HEADER, len(self._header_body))
        crc = zlib.crc32(self._header_body, zlib.crc32(head, zlib.crc32(preamble)))
        self._f.seek(0)
        self._f.write(preamble)
        self._f.seek(self._header_end - CRC.size)
        self._f.write(CRC.pack(crc))
        self._f.seek(self._pos)

    def _index_body(self) -> bytes:
        parts = [INDEX_HEAD.pack(len(self.windows), INDEX_ENTRY_V2.size)]
        for m in self.windows:
            t, h, w = m.latent_shape
            parts.append(
                INDEX_ENTRY_V2.pack(
                    m.offset, m.record_size, m.frame_start, m.frame_count, t, h, w, m.padded_frames,
                    m.mask_codec, m.token_codec, m.mask_size, m.token_size,
                )  # fmt: skip
            )
            parts.append(np.asarray(m.kept_per_frame, dtype="<u4").tobytes())
        return b"".join(parts)

    def close(self) -> None:
        """Write index and trailer and commit the output. Aborts (discarding what was written) and raises
        ContainerError if the windows do not cover the whole video or I/O fails."""
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
            index = frame_chunk(CHUNK_INDEX, self._index_body())
            total_kept = sum(m.kept for m in self.windows)
            trailer = TRAILER.pack(index_offset, total_kept, len(self.windows), len(index))
            self._write(index + trailer + CRC.pack(zlib.crc32(trailer)) + END_MAGIC)
            if self._minor != FORMAT_MINOR:
                self._patch_minor()
            self._f.flush()
            self._f = None
            if self._out is not None:
                self._out.commit()  # e.g. flush, fsync, link into place
                self._out = None
        except FileExistsError:  # another writer created the output first
            self.abort()
            raise OutputExistsContainerError(f"{self.path} already exists (use overwrite to replace it)") from None
        except OSError as e:
            self.abort()
            raise ContainerError(f"cannot write {self.path}: {e.strerror or e}") from None
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Stop writing and abort the output (an `AtomicFile` discards everything written; a plain stream is
        left as it is, to its owner). Safe to call more than once."""
        self._f = None
        if self._out is not None:
            self._out.abort()
            self._out = None
