"""Audio passthrough with PyAV: a source's compressed audio packets, kept as they are (never re-encoded on
the way in), and muxed back on decode. The AUDIO chunk's byte layout and the `AudioTrack` data type are
`format.chunks`'.

* `read_audio(path)` demuxes the first audio stream of a video file into an `AudioTrack`.
* `AudioMuxer` adds the track to an open PyAV output container and interleaves its packets with the
  video (used by `io.video_writer.VideoWriter`).

The codec parameters travel as FFmpeg's own serialisation of them: a minimal Matroska file holding the
stream's header and first packet (`setup`), which PyAV opens as the template of the output stream. So
any codec Matroska can carry (AAC, Opus, Vorbis, MP3, FLAC, AC-3, PCM, ...) round-trips with its exact
extradata. An output container that cannot hold the codec (e.g. Vorbis in .mp4) gets the audio
converted to AAC, with a notice (e.g. FLAC or Vorbis in .mov); .mkv holds them all.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av

from ..errors import AudioError
from ..format.chunks import (
    MAX_AUDIO_BYTES,
    MAX_AUDIO_PACKET,
    MAX_AUDIO_PACKETS,
    MAX_AUDIO_PARAMS,
    AudioPacket,
    AudioTrack,
    check_audio_params,
)

__all__ = ["AudioMuxer", "container_holds", "read_audio", "transcode_to_aac"]

_MIX_AHEAD = 0.5  # seconds of audio muxed ahead of the video written so far


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
    check_audio_params(track.codec, track.sample_rate, track.channels, track.layout, track.time_base, track.setup)
    return track


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
