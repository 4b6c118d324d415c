"""The byte layout of an .itok file: magic, versions, chunk types and codecs, the fixed-size structures
of versions 1 and 2, limits, and chunk framing. The normative spec is docs/FORMAT.md.

Layout: preamble ("ITOK", major, minor), HEADER chunk (MessagePack map), one WINDOW chunk per
coding window (keep mask + tokens), INDEX chunk, fixed 32-byte TRAILER. Every chunk is
`u8 type | u32 body_size | body | u32 crc32`. All integers are little-endian. Version 2 stores each
window's mask and tokens entropy-coded (`entropy.py`) when that is smaller, and the coded sizes in the
index; version 1 stored packed mask bits and raw or zlib tokens.
"""

from __future__ import annotations

import struct
import zlib

from ..constants import CODEBOOK_SIZE, SPATIAL_STRIDE, STRATEGIES, TEMPORAL_STRIDE  # noqa: F401 (format facts)
from ..errors import ContainerError

MAGIC = b"ITOK"
END_MAGIC = b"KOTI"
FORMAT_MAJOR = 2  # what the writer writes
FORMAT_MINOR = 0
READ_MAJORS = (1, 2)  # what the reader reads

CHUNK_HEADER = 0x01
CHUNK_WINDOW = 0x02
CHUNK_INDEX = 0x03
CHUNK_SKIPPABLE_MIN = 0x80
# Skippable chunks of version 2.1 (docs/FORMAT.md section 4.3; 1.1 in version 1 files); their bodies are
# coded in chunks.py, the container only frames them.
CHUNK_QUALITY = 0x80  # per-window achieved PSNR of a --target-psnr run (format/chunks.py)
CHUNK_AUDIO = 0x81  # the source's compressed audio packets, as they were (format/chunks.py)
MINOR_FOR_CHUNK = {CHUNK_QUALITY: 1, CHUNK_AUDIO: 1}

# token_codec (version 1: codec) and mask_codec values (docs/FORMAT.md section 6). Mask codec 0 is the keep
# mask's bits packed with numpy.packbits(bitorder="little") in raster (t, h, w) order.
CODEC_RAW = 0
CODEC_ZLIB = 1
CODEC_ENTROPY = 2  # version 2 only
MASK_PACKED = 0
MASK_ENTROPY = 1  # version 2 only

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

PREAMBLE = struct.Struct("<4sBB")
CHUNK_HEAD = struct.Struct("<BI")
CRC = struct.Struct("<I")
# Version 1: window_index, frame_start, frame_count, t, h, w, padded_frames, codec, reserved, kept, payload_size
WINDOW_FIXED = struct.Struct("<IIIIHHBBHII")
# Version 2: ..., padded_frames, mask_codec, token_codec, reserved, kept, mask_size, token_size
WINDOW_FIXED_V2 = struct.Struct("<IIIIHHBBBBIII")
INDEX_HEAD = struct.Struct("<II")
# Version 1: record_offset, record_size, frame_start, frame_count, t, h, w, padded_frames, reserved
INDEX_ENTRY = struct.Struct("<QIIIIHHB3x")
# Version 2: ..., padded_frames, mask_codec, token_codec, reserved, mask_size, token_size
INDEX_ENTRY_V2 = struct.Struct("<QIIIIHHBBBxII")
TRAILER = struct.Struct("<QQII")  # index_offset, total_kept, window_count, index_size; then crc, magic
TRAILER_SIZE = TRAILER.size + 8
CHUNK_OVERHEAD = CHUNK_HEAD.size + CRC.size  # 9 bytes of framing per chunk
U32_MAX = 2**32 - 1
IO_BLOCK = 1 << 20

assert PREAMBLE.size == 6 and WINDOW_FIXED.size == 32 and INDEX_ENTRY.size == 32 and TRAILER_SIZE == 32
assert WINDOW_FIXED_V2.size == 36 and INDEX_ENTRY_V2.size == 40


def frame_chunk(chunk_type: int, body: bytes, prefix: bytes = b"") -> bytes:
    """Frame a chunk; `prefix` (the preamble, for HEADER) is covered by the CRC but not returned."""
    if len(body) > U32_MAX:
        raise ContainerError(f"chunk of {len(body)} bytes is too large for the format")
    head = CHUNK_HEAD.pack(chunk_type, len(body))
    crc = zlib.crc32(body, zlib.crc32(head, zlib.crc32(prefix)))
    return head + body + CRC.pack(crc)


def record_size_bounds(shape: tuple[int, int, int], kept: int) -> tuple[int, int]:
    """Smallest and largest version 1 WINDOW chunk (docs/FORMAT.md Appendix A.2)."""
    base = CHUNK_OVERHEAD + WINDOW_FIXED.size + (shape[0] * shape[1] * shape[2] + 7) // 8
    return base, base + 2 * kept


def v1_record_size(capacity: int, token_bytes: int) -> int:
    """Size of a version 1 WINDOW chunk (packed mask, `token_bytes` of raw or zlib tokens) for a window of
    `capacity` positions."""
    return CHUNK_OVERHEAD + WINDOW_FIXED.size + (capacity + 7) // 8 + token_bytes


# Bytes a version 2 index entry has beyond a version 1 entry (the codecs and coded sizes).
V2_INDEX_ENTRY_EXTRA = INDEX_ENTRY_V2.size - INDEX_ENTRY.size
