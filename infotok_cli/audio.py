"""Audio passthrough: a source's compressed audio packets, kept as they are (never re-encoded on the way
in), stored in the AUDIO chunk of an .itok file (type 0x81, format 1.1) and muxed back on decode.

* `read_audio(path)` demuxes the first audio stream of a video file into an `AudioTrack`.
* `pack_audio` / `unpack_audio` code the chunk body (docs/FORMAT.md section 4.3); `unpack_audio`
  treats the body as untrusted and bounds every size before using it (the limits below).
* `AudioMuxer` adds the track to an open PyAV output container and interleaves its packets with the
  video (used by `video_io.VideoWriter`).

The codec parameters travel as FFmpeg's own serialisation of them: a minimal Matroska file holding the
stream's header and first packet (`setup`), which PyAV opens as the template of the output stream. So
any codec Matroska can carry (AAC, Opus, Vorbis, MP3, FLAC, AC-3, PCM, ...) round-trips with its exact
extradata. An output container that cannot hold the codec (e.g. Vorbis in .mp4) gets the audio
converted to AAC, with a notice (e.g. FLAC or Vorbis in .mov); .mkv holds them all.
"""

from __future__ import annotations

import io
import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import msgpack

__all__ = ["AudioError", "AudioMuxer", "AudioPacket", "AudioTrack", "pack_audio", "read_audio", "unpack_audio"]

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
_MIX_AHEAD = 0.5  # seconds of audio muxed ahead of the video written so far


class AudioError(Exception):
    """A one-line, user-facing problem with an audio stream or an AUDIO chunk."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


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


# --------------------------------------------------------------------------------------------- reading


def _audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream | None:
    return container.streams.audio[0] if container.streams.audio else None


def _mux_first(out: av.container.OutputContainer, stream, first: bytes) -> None:
    """Mux `first` as the stream's packet at time 0 (what a setup blob holds)."""
    p = av.Packet(first)
    p.pts = p.dts = 0
    p.time_base = stream.time_base
    p.stream = stream
    out.mux(p)


def _setup_blob(stream: av.audio.stream.AudioStream, first: bytes) -> bytes:
    """A tiny Matroska file with the stream's header and first packet (the demuxer wants one)."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="matroska") as out:
        _mux_first(out, out.add_stream_from_template(stream), first)
    return buf.getvalue()


def read_audio(path: str | Path) -> AudioTrack | None:
    """The first audio stream of `path` with all its packets, or None when there is none.

    Raises AudioError when the stream cannot be kept (above the format's limits, no packets, or a codec
    Matroska cannot carry)."""
    try:
        with av.open(str(path), mode="r") as container:
            stream = _audio_stream(container)
            if stream is None:
                return None
            packets: list[AudioPacket] = []
            total = 0
            for p in container.demux(stream):
                if p.size == 0:
                    continue  # the demuxer's final flush packet
                if p.size > MAX_AUDIO_PACKET:
                    raise AudioError(f"an audio packet of {p.size} bytes is above the limit of {MAX_AUDIO_PACKET}")
                total += p.size
                if total > MAX_AUDIO_BYTES - MAX_AUDIO_PARAMS or len(packets) >= MAX_AUDIO_PACKETS:
                    raise AudioError("the audio stream is larger than an .itok file can hold (1 GiB)")
                packets.append(AudioPacket(p.pts, p.dts, int(p.duration or 0), bool(p.is_keyframe), bytes(p)))
            if not packets:
                raise AudioError("the audio stream has no packets")
            ctx = stream.codec_context
            track = AudioTrack(
                codec=ctx.name, sample_rate=int(stream.sample_rate or ctx.sample_rate or 0),
                channels=int(stream.channels or 0), layout=ctx.layout.name if ctx.layout else "",
                time_base=Fraction(stream.time_base), setup=_setup_blob(stream, packets[0].data),
                packets=packets)
    except AudioError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise AudioError(f"cannot read the audio stream of {Path(path).name} ({e})") from None
    _check_params(track.codec, track.sample_rate, track.channels, track.layout, track.time_base, track.setup)
    return track


# --------------------------------------------------------------------------------------------- chunk body


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


def _check_params(codec: object, rate: object, channels: object, layout: object, tb: Fraction,
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
    _check_params(m["codec"], m["sample_rate"], m["channels"], m["layout"], tb, m["setup"])
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


# --------------------------------------------------------------------------------------------- muxing


def _template(track: AudioTrack) -> tuple[av.container.InputContainer, av.audio.stream.AudioStream]:
    try:
        container = av.open(io.BytesIO(track.setup), mode="r", format="matroska")
    except (av.FFmpegError, OSError, ValueError) as e:
        raise AudioError(f"the stored audio parameters cannot be read ({e})") from None
    stream = _audio_stream(container)
    if stream is None or stream.codec_context.name != track.codec:
        container.close()
        raise AudioError("the stored audio parameters do not describe the stored codec")
    return container, stream


def container_holds(fmt: str, track: AudioTrack) -> bool:
    """Whether the muxer `fmt` accepts the track's codec as it is (tried on an empty in-memory file)."""
    tmpl, stream = _template(track)
    try:
        with av.open(io.BytesIO(), mode="w", format=fmt) as out:
            out.add_stream_from_template(stream)
            out.start_encoding()
        return True
    except (av.FFmpegError, ValueError):
        return False
    finally:
        tmpl.close()


def transcode_to_aac(track: AudioTrack) -> AudioTrack:
    """Decode `track` and encode it as AAC (used only for outputs that cannot hold the original)."""
    tmpl, stream = _template(track)
    try:
        dec = stream.codec_context  # the template's decoder, with the stored extradata
        channels = min(track.channels, 2)  # the native AAC encoder: mono or stereo here
        layout = "mono" if channels == 1 else "stereo"
        enc = av.CodecContext.create("aac", "w")
        enc.sample_rate, enc.layout, enc.format = track.sample_rate, layout, "fltp"
        enc.bit_rate = 96_000 * channels
        enc.time_base = Fraction(1, track.sample_rate)
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=track.sample_rate)
        packets: list[AudioPacket] = []
        start = round(track.start * track.sample_rate)
        next_pts = start

        def frames() -> Iterator[av.AudioFrame]:
            for p in track.packets:
                pkt = av.Packet(p.data)
                pkt.pts, pkt.dts, pkt.time_base = p.pts, p.dts, track.time_base
                yield from dec.decode(pkt)
            yield from dec.decode(None)

        def take(pkts) -> None:
            for q in pkts:
                packets.append(AudioPacket(q.pts, q.dts, int(q.duration or 0), bool(q.is_keyframe), bytes(q)))

        for frame in frames():
            for f in resampler.resample(frame):
                f.pts, f.time_base = next_pts, enc.time_base
                next_pts += f.samples
                take(enc.encode(f))
        for f in resampler.resample(None):
            f.pts, f.time_base = next_pts, enc.time_base
            next_pts += f.samples
            take(enc.encode(f))
        take(enc.encode(None))
        if not packets:
            raise AudioError("the audio decoded to no samples")
        return AudioTrack("aac", track.sample_rate, channels, layout, Fraction(1, track.sample_rate),
                          _setup_from_context(enc, packets[0].data), packets)
    except (av.FFmpegError, ValueError) as e:
        raise AudioError(f"cannot convert the {track.codec} audio to AAC ({e})") from None
    finally:
        tmpl.close()


def _setup_from_context(enc: av.CodecContext, first: bytes) -> bytes:
    """Setup blob for an encoder's output (an encoder context, not a demuxed stream)."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="matroska") as out:
        s = out.add_stream(enc.name, rate=enc.sample_rate, layout=enc.layout.name)
        s.codec_context.extradata = enc.extradata
        s.time_base = enc.time_base
        _mux_first(out, s, first)
    return buf.getvalue()


class AudioMuxer:
    """Adds `track` to the output container `out` (before its header is written) and muxes its packets
    in step with the video: `mux_until(seconds)` after each video packet, `finish()` at the end.

    `shift` (seconds) is added to every timestamp, the same shift the video gets."""

    def __init__(self, out: av.container.OutputContainer, track: AudioTrack, shift: float = 0.0):
        self.track = track
        self._tmpl, template = _template(track)
        try:
            self.stream = out.add_stream_from_template(template)
        except (av.FFmpegError, ValueError) as e:
            self._tmpl.close()
            raise AudioError(f"the output cannot hold {track.codec} audio ({e})") from None
        self._out = out
        self._shift = round(Fraction(shift) / track.time_base) if shift else 0
        self._next = 0

    def _time(self, p: AudioPacket) -> float:
        t = p.dts if p.dts is not None else p.pts
        return -math.inf if t is None else float((t + self._shift) * self.track.time_base)

    def mux_until(self, seconds: float) -> None:
        """Mux the packets that start before `seconds` + a short lead."""
        packets = self.track.packets
        while self._next < len(packets) and self._time(packets[self._next]) <= seconds + _MIX_AHEAD:
            self._mux(packets[self._next])
            self._next += 1

    def finish(self) -> None:
        self.mux_until(math.inf)
        self.close()

    def close(self) -> None:
        """Release the template (safe to call more than once)."""
        self._tmpl.close()

    def _mux(self, p: AudioPacket) -> None:
        pkt = av.Packet(p.data)
        pkt.pts = None if p.pts is None else p.pts + self._shift
        pkt.dts = None if p.dts is None else p.dts + self._shift
        pkt.duration = p.duration
        pkt.time_base = self.track.time_base
        pkt.is_keyframe = p.keyframe
        pkt.stream = self.stream
        self._out.mux(pkt)
