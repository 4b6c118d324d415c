"""The skippable chunks of version 2.1 (docs/FORMAT.md section 4.3): their bodies' byte layouts.

* WINDOW-QUALITY (type 0x80): the target of a `--target-psnr` run and the PSNR each window's
  reconstruction reached, so that `inspect` can show them without decoding anything. Body,
  little-endian: `f32 target_psnr | f32 max_bpp16 (0 = none) | u32 window_count | window_count x f32
  psnr`. PSNR values are in dB over the window's own frames (before overlap blending); a window whose
  reconstruction is exact is stored as 100 dB.
* AUDIO (type 0x81): the source's compressed audio packets, kept as they are (`AudioTrack`), with the
  codec parameters as FFmpeg serialises them (`setup`: a minimal Matroska file holding the stream's
  header and first packet). `unpack_audio` treats the body as untrusted and bounds every size before
  using it. Reading and muxing the packets with PyAV is `io.audio`'s part.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field
from fractions import Fraction

import msgpack

from ..errors import AudioError, ContainerError
from .layout import CHUNK_AUDIO, CHUNK_QUALITY
from .reader import ItokReader

__all__ = ["CHUNK_AUDIO", "CHUNK_QUALITY", "PSNR_CAP", "AudioPacket", "AudioTrack", "WindowQuality", "pack_audio",
           "pack_quality", "read_audio_chunk", "read_quality", "unpack_audio", "unpack_quality"]

# ----------------------------------------------------------------------------- window quality

PSNR_CAP = 100.0  # stored for an exact reconstruction (PSNR +inf)
MAX_TARGET = 100.0
_QUALITY_HEAD = struct.Struct("<ffI")


@dataclass
class WindowQuality:
    """Target and achieved PSNR of a file coded with --target-psnr."""

    target_psnr: float
    max_bpp16: float | None
    psnr: list[float] = field(default_factory=list)  # one per window, in window order

    def short(self) -> int:
        """Windows whose reconstruction did not reach the target."""
        return sum(p < self.target_psnr for p in self.psnr)


def pack_quality(q: WindowQuality) -> bytes:
    values = [min(PSNR_CAP, float(p)) for p in q.psnr]
    return _QUALITY_HEAD.pack(q.target_psnr, q.max_bpp16 or 0.0, len(values)) + struct.pack(f"<{len(values)}f", *values)


def unpack_quality(body: bytes, window_count: int) -> WindowQuality:
    """Decode and validate a body read from an (untrusted) file with `window_count` windows."""
    if len(body) < _QUALITY_HEAD.size:
        raise ContainerError("window-quality chunk is too short")
    target, max_bpp16, count = _QUALITY_HEAD.unpack_from(body)
    if count != window_count:
        raise ContainerError(f"window-quality chunk lists {count} windows, the file has {window_count}")
    if len(body) != _QUALITY_HEAD.size + 4 * count:
        raise ContainerError(f"window-quality chunk is {len(body)} bytes, expected {_QUALITY_HEAD.size + 4 * count}")
    if not (math.isfinite(target) and 0 < target <= MAX_TARGET):
        raise ContainerError(f"window-quality chunk has target {target!r}, outside (0, {MAX_TARGET}]")
    if not (math.isfinite(max_bpp16) and 0 <= max_bpp16 <= 2):
        raise ContainerError(f"window-quality chunk has max_bpp16 {max_bpp16!r}, outside [0, 2]")
    psnr = list(struct.unpack_from(f"<{count}f", body, _QUALITY_HEAD.size))
    if any(not (math.isfinite(p) and 0 <= p <= PSNR_CAP) for p in psnr):
        raise ContainerError(f"window-quality chunk holds a PSNR outside [0, {PSNR_CAP:g}]")
    return WindowQuality(target, max_bpp16 or None, psnr)


def read_quality(reader: ItokReader) -> WindowQuality | None:
    """The file's window-quality chunk, or None if it has none."""
    body = reader.read_skippable(CHUNK_QUALITY, _QUALITY_HEAD.size + 4 * len(reader.windows))
    return None if body is None else unpack_quality(body, len(reader.windows))


# ----------------------------------------------------------------------------- audio

# Limits (docs/FORMAT.md section 10), checked before anything is allocated.
MAX_AUDIO_BYTES = 1 << 30  # whole AUDIO chunk body
MAX_AUDIO_PARAMS = 1 << 20  # the MessagePack parameter map, `setup` included
MAX_AUDIO_PACKETS = 1 << 24
MAX_AUDIO_PACKET = 1 << 20
MAX_SAMPLE_RATE = 768_000
MAX_CHANNELS = 64
MAX_RATIONAL = 2**31 - 1
NO_PTS = -(2**63)  # a packet without a timestamp

_LEN = struct.Struct("<I")
_ENTRY = struct.Struct("<qqIIB3x")  # pts, dts, duration, size, flags (bit 0: keyframe)
_CODEC_RE = re.compile(r"[a-z0-9_]{1,32}")


@dataclass
class AudioPacket:
    pts: int | None  # in the track's time base
    dts: int | None
    duration: int
    keyframe: bool
    data: bytes


@dataclass
class AudioTrack:
    """One compressed audio stream: its parameters and its packets, in decoding order."""

    codec: str
    sample_rate: int
    channels: int
    layout: str
    time_base: Fraction
    setup: bytes  # Matroska header + first packet: the codec parameters as FFmpeg serialises them
    packets: list[AudioPacket] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        """Compressed size of the packets."""
        return sum(len(p.data) for p in self.packets)

    def _times(self) -> list[int]:
        return [p.pts if p.pts is not None else p.dts for p in self.packets
                if p.pts is not None or p.dts is not None]

    @property
    def start(self) -> float:
        """Seconds of the first packet's timestamp (0 without timestamps)."""
        times = self._times()
        return float(min(times) * self.time_base) if times else 0.0

    @property
    def duration(self) -> float:
        """Seconds from the first packet's start to the last packet's end."""
        ends = [(p.pts if p.pts is not None else p.dts) + p.duration for p in self.packets
                if p.pts is not None or p.dts is not None]
        times = self._times()
        if not times:
            return float(sum(p.duration for p in self.packets) * self.time_base)
        return float((max(ends) - min(times)) * self.time_base)

    def summary(self) -> dict:
        """What `inspect` shows."""
        return {"codec": self.codec, "channels": self.channels, "layout": self.layout,
                "sample_rate": self.sample_rate, "duration_seconds": self.duration, "start_seconds": self.start,
                "packets": len(self.packets), "bytes": self.bytes}


def pack_audio(track: AudioTrack) -> bytes:
    """AUDIO chunk body of `track`."""
    params = msgpack.packb({
        "codec": track.codec, "sample_rate": track.sample_rate, "channels": track.channels,
        "layout": track.layout, "time_base_num": track.time_base.numerator,
        "time_base_den": track.time_base.denominator, "setup": track.setup,
    }, use_bin_type=True)
    parts = [_LEN.pack(len(params)), params, _LEN.pack(len(track.packets))]
    parts += [_ENTRY.pack(NO_PTS if p.pts is None else p.pts, NO_PTS if p.dts is None else p.dts,
                          p.duration, len(p.data), int(p.keyframe)) for p in track.packets]
    parts += [p.data for p in track.packets]
    body = b"".join(parts)
    if len(body) > MAX_AUDIO_BYTES:
        raise AudioError("the audio stream is larger than an .itok file can hold (1 GiB)")
    return body


def check_audio_params(codec: object, rate: object, channels: object, layout: object, tb: Fraction,
                  setup: object) -> None:
    if not isinstance(codec, str) or not _CODEC_RE.fullmatch(codec):
        raise AudioError(f"audio codec name {codec!r} is not 1-32 characters of [a-z0-9_]")
    for name, v, hi in (("sample_rate", rate, MAX_SAMPLE_RATE), ("channels", channels, MAX_CHANNELS)):
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= hi:
            raise AudioError(f"audio {name} {v!r} is outside 1..{hi}")
    if not isinstance(layout, str) or len(layout.encode()) > 64:
        raise AudioError("audio channel layout name is not a string of at most 64 bytes")
    if not (0 < tb.numerator <= MAX_RATIONAL and 0 < tb.denominator <= MAX_RATIONAL):
        raise AudioError(f"audio time base {tb} is outside 1/{MAX_RATIONAL}..{MAX_RATIONAL}")
    if not isinstance(setup, bytes) or not setup:
        raise AudioError("audio setup is missing")


def unpack_audio(body: bytes) -> AudioTrack:
    """Decode an AUDIO chunk body read from an untrusted file; every size is checked against the limits
    and the bytes that are there before it is used."""
    n = len(body)
    if n > MAX_AUDIO_BYTES:
        raise AudioError(f"audio chunk of {n} bytes is above the limit of {MAX_AUDIO_BYTES}")
    if n < _LEN.size:
        raise AudioError("audio chunk is truncated")
    (psize,) = _LEN.unpack_from(body)
    if psize > MAX_AUDIO_PARAMS or _LEN.size + psize + _LEN.size > n:
        raise AudioError(f"audio parameters of {psize} bytes exceed the limit or the chunk")
    try:
        m = msgpack.unpackb(body[_LEN.size:_LEN.size + psize], raw=False, strict_map_key=True,
                            max_str_len=psize, max_bin_len=psize, max_array_len=psize, max_map_len=psize,
                            max_ext_len=0)
    except (ValueError, msgpack.UnpackException) as e:
        raise AudioError(f"audio parameters are not valid MessagePack ({type(e).__name__})") from None
    if not isinstance(m, dict):
        raise AudioError("audio parameters are not a MessagePack map")
    keys = ("codec", "sample_rate", "channels", "layout", "time_base_num", "time_base_den", "setup")
    missing = [k for k in keys if k not in m]
    if missing:
        raise AudioError(f"audio parameters lack '{missing[0]}'")
    num, den = m["time_base_num"], m["time_base_den"]
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_RATIONAL for v in (num, den)):
        raise AudioError("audio time base is not two integers in 1..2^31-1")
    tb = Fraction(num, den)
    check_audio_params(m["codec"], m["sample_rate"], m["channels"], m["layout"], tb, m["setup"])
    pos = _LEN.size + psize
    (count,) = _LEN.unpack_from(body, pos)
    pos += _LEN.size
    if count > MAX_AUDIO_PACKETS or count * _ENTRY.size > n - pos:
        raise AudioError(f"audio chunk declares {count} packets, more than the limit or its bytes")
    if count == 0:
        raise AudioError("audio chunk holds no packets")
    data_pos = pos + count * _ENTRY.size
    sizes_total = 0
    entries = []
    for i in range(count):
        pts, dts, duration, size, flags = _ENTRY.unpack_from(body, pos + i * _ENTRY.size)
        if size > MAX_AUDIO_PACKET:
            raise AudioError(f"audio packet {i} of {size} bytes is above the limit of {MAX_AUDIO_PACKET}")
        sizes_total += size
        entries.append((pts, dts, duration, size, flags))
    if data_pos + sizes_total != n:
        raise AudioError("audio packet sizes do not add up to the chunk's size")
    packets = []
    off = data_pos
    for pts, dts, duration, size, flags in entries:
        packets.append(AudioPacket(None if pts == NO_PTS else pts, None if dts == NO_PTS else dts, duration,
                                   bool(flags & 1), body[off:off + size]))
        off += size
    return AudioTrack(m["codec"], m["sample_rate"], m["channels"], m["layout"], tb, m["setup"], packets)


def read_audio_chunk(reader: ItokReader) -> AudioTrack | None:
    """The audio track stored in an open .itok file, or None; a damaged chunk raises ContainerError."""
    body = reader.read_skippable(CHUNK_AUDIO, MAX_AUDIO_BYTES)
    if body is None:
        return None
    try:
        return unpack_audio(body)
    except AudioError as e:
        raise ContainerError(str(e)) from None
