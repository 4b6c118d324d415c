"""Encoding videos with PyAV: `VideoWriter` writes uint8 RGB frames to .mp4 / .m4v / .mov / .mkv,
restoring a source's timing, rotation and aspect, muxes a kept audio track (`io.audio`) back in sync,
and makes the output visible (`io.atomic`) only once it was written completely.

Every failure surfaces as a `VideoError` with a one-line message meant for end users.
"""

from __future__ import annotations

import math
import sys
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import av
import numpy as np

from ..constants import STREAM_FORMATS, VIDEO_CONTAINERS
from ..errors import AudioError, VideoExistsError, one_line
from ..format.chunks import AudioTrack
from .atomic import AtomicFile, OutputExistsError
from .audio import AudioMuxer, container_holds, transcode_to_aac
from .video import av_reason, video_error

__all__ = ["LOSSLESS_CODEC", "STDOUT", "VideoWriter"]

STDOUT = "-"  # the output path that means the standard output

# libx264's RGB variant at qp 0 is mathematically lossless on rgb24 input and decodes back to
# planar GBR, which converts to rgb24 by a pure byte shuffle, so frames round-trip bit-exactly.
LOSSLESS_CODEC = "libx264rgb"


class VideoWriter:
    """Encode uint8 RGB frames to ``path`` (.mp4 / .m4v / .mov / .mkv), atomically.

    Frames go to an :class:`~infotok_cli.io.atomic.AtomicFile` (an unnamed file where the file system
    allows it, else a locked hidden temporary that later writers clean up), which becomes ``path``
    when the ``with`` block ends normally and is discarded if it ends with an exception: neither an
    error nor ``kill -9`` leaves a truncated video behind.

    ``audio``: a compressed audio track to mux in as it is, its timestamps shifted with the video's
    (see below). When the output container cannot hold its codec (e.g. FLAC in .mov) it is
    converted to AAC and a line is added to :attr:`notices`; .mkv holds every codec.

    Encoding:
        * default: libx264 ``crf`` (10 = visually lossless) in ``pix_fmt`` (default yuv444p,
          which, unlike 4:2:0, works for odd widths/heights);
        * ``lossless=True``: libx264rgb at qp 0 on rgb24, bit-exact RGB round trip.

    Timing: without ``pts`` frames are spaced exactly 1/``fps``. With ``pts`` (in units of
    ``time_base``, default 1/``fps``) every frame gets exactly that timestamp, so variable frame
    rate survives. Either way the file's average frame rate reads back as ``fps``: the last
    frame's duration is chosen to make the total duration ``n / fps`` (when that is possible).
    B-frames are disabled so that no frame reordering (and no pts/dts offset) is involved.

    A timeline starting before 0 is shifted to start at 0 (frames before 0 would be dropped).

    Matroska limits: it stores timestamps in whole milliseconds and the rate as whole nanoseconds
    per frame, so .mkv keeps times only to +-0.5 ms and the rate exactly only for common values
    (30000/1001, 24, ...); .mp4/.mov keep both exactly.

    ``rotation`` (counter-clockwise degrees, multiple of 90) is stored as the container's display
    matrix, ``sar`` as the sample aspect ratio of the stream and the H.264 bitstream.

    ``pix_fmt`` (an addition to the original interface) selects the libx264 pixel format, e.g.
    yuv420p for small files; 4:2:0/4:2:2 need even sizes.

    ``path`` ``-`` writes to the standard output in the container ``container`` (a `STREAM_FORMATS`
    name: mkv, mp4, mov or nut), for a pipe (``| ffplay -``). MP4/MOV are written fragmented there (a
    pipe cannot be rewound to write the index). A stream cannot be taken back: on an error it ends early
    (and the error is raised) instead of leaving nothing.
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: Fraction,
        *,
        pts: list[int] | None = None,
        time_base: Fraction | None = None,
        rotation: int = 0,
        sar: Fraction = Fraction(1, 1),
        lossless: bool = False,
        crf: int = 10,
        overwrite: bool = False,
        pix_fmt: str | None = None,
        audio: AudioTrack | None = None,
        container: str | None = None,
    ) -> None:
        self.to_stdout = str(path) == STDOUT
        self.path = Path(path)
        self.container = container
        self.notices: list[str] = []
        self.width, self.height = int(width), int(height)
        self.fps = Fraction(fps)
        self.time_base = Fraction(time_base) if time_base is not None else 1 / self.fps
        self.pts = [int(p) for p in pts] if pts is not None else None
        self.overwrite = overwrite
        self._validate(rotation, sar, lossless, crf, pix_fmt)

        self._format = STREAM_FORMATS[container] if container else VIDEO_CONTAINERS[self.path.suffix.lower()]
        self._tick = self._encoder_time_base()
        # Given timestamps in encoder ticks (exact: the tick divides time_base), and the nominal
        # frame spacing in ticks, used for constant-rate output when no pts are given.
        scale = self.time_base / self._tick
        self._ticks = [int(p * scale) for p in self.pts] if self.pts is not None else None
        shift = Fraction(0)
        if self._ticks and self._ticks[0] < 0:
            # Containers treat frames before time 0 as pre-roll and players (and probe_video) drop
            # them, so shift the whole timeline: relative timing is kept, the offset is not.
            shift = -self._ticks[0] * self._tick
            self._ticks = [t - self._ticks[0] for t in self._ticks]
        self._step = 1 / (self.fps * self._tick)
        self._count = 0
        self._pending: av.VideoFrame | None = None  # held back until its duration is known
        self._durations: dict[int, int] = {}
        self._closed = False
        self._audio: AudioMuxer | None = None
        try:
            self._out = StdoutSink() if self.to_stdout else AtomicFile(self.path, overwrite=self.overwrite)
        except OutputExistsError:
            raise VideoExistsError(one_line(f"{self.path}: output file already exists (pass overwrite=True "
                                             "to replace it)")) from None
        except OSError as exc:
            raise video_error(self.path, f"cannot create output file ({exc.strerror or exc})") from exc
        try:
            self._container = av.open(
                self._out.file, mode="w", format=self._format, options=self._muxer_options()
            )
        except (av.FFmpegError, OSError) as exc:
            self._out.abort()
            raise video_error(self.path, f"cannot create output file ({av_reason(exc)})") from exc
        try:
            self._stream = self._add_stream(rotation, Fraction(sar), lossless, crf, pix_fmt)
            if audio is not None:
                self._audio = self._add_audio(audio, shift)
        except (av.FFmpegError, OSError, ValueError, AudioError) as exc:
            self._abort()
            raise video_error(self.path, f"cannot set up the encoder ({av_reason(exc)})") from exc

    def _validate(self, rotation: int, sar: Fraction, lossless: bool, crf: int, pix_fmt: str | None) -> None:
        if self.container is not None and self.container not in STREAM_FORMATS:
            raise video_error(self.path, f"unknown container {self.container!r} (use {', '.join(STREAM_FORMATS)})")
        if self.to_stdout:
            if self.container is None:
                raise video_error(self.path, f"writing to stdout needs a container ({', '.join(STREAM_FORMATS)})")
        elif self.path.suffix.lower() not in VIDEO_CONTAINERS:
            known = ", ".join(sorted(VIDEO_CONTAINERS))
            raise video_error(self.path, f"unsupported output extension {self.path.suffix!r} (use {known})")
        elif self.path.exists() and not self.overwrite:
            raise VideoExistsError(one_line(f"{self.path}: output file already exists (pass overwrite=True "
                                             "to replace it)"))
        elif not self.path.parent.is_dir():
            raise video_error(self.path, "output directory does not exist")
        if self.width <= 0 or self.height <= 0:
            raise video_error(self.path, f"invalid frame size {self.width}x{self.height}")
        if self.fps <= 0 or self.time_base <= 0:
            raise video_error(self.path, f"invalid frame rate {self.fps} / time base {self.time_base}")
        if rotation % 90 != 0:
            raise video_error(self.path, f"rotation must be a multiple of 90 degrees, got {rotation}")
        if Fraction(sar) <= 0:
            raise video_error(self.path, f"invalid sample aspect ratio {sar}")
        if not 0 <= crf <= 51:
            raise video_error(self.path, f"crf must be in 0..51, got {crf}")
        if lossless and pix_fmt not in (None, "rgb24"):
            raise video_error(self.path, "lossless mode always encodes rgb24; do not pass pix_fmt")
        if pix_fmt is not None and not lossless:
            if pix_fmt not in {f.name for f in av.Codec("libx264", "w").video_formats or ()}:
                raise video_error(self.path, f"libx264 cannot encode pixel format {pix_fmt!r}")
            if _chroma_subsampled(pix_fmt) and (self.width % 2 or self.height % 2):
                raise video_error(
                    self.path, f"{pix_fmt} needs even width and height, got {self.width}x{self.height}"
                )
        if self.pts is not None:
            if any(b <= a for a, b in pairwise(self.pts)):
                raise video_error(self.path, "pts must be strictly increasing")

    def _encoder_time_base(self) -> Fraction:
        """The tick of the encoded stream.

        MP4/MOV take any timescale, so pick 1/T with T a multiple of both the time base's
        denominator (every given pts stays an exact integer) and of fps's numerator (the duration
        n / fps that makes the average rate read back exactly as fps is a whole number of ticks),
        e.g. a 1/1000 source at 30000/1001 fps is written with T = 30000. Matroska always stores
        milliseconds, so there the given time base is passed through."""
        if self._format in ("mp4", "mov"):
            den = self.time_base.denominator
            for scale in (math.lcm(den, self.fps.numerator), den):
                while scale < 10000:  # the refinement movenc itself applies to video timescales
                    scale *= 2
                if scale <= 2**31 - 1:
                    return Fraction(1, scale)
        return self.time_base

    def _muxer_options(self) -> dict[str, str]:
        """MP4/MOV: fix the track timescale to our tick, and give the movie header the same one: its
        default (1000) would round the edit list that encodes a non-zero first timestamp to whole
        milliseconds, shifting every timestamp on read."""
        if self._format not in ("mp4", "mov"):
            return {}
        options = {"movflags": "frag_keyframe+empty_moov+default_base_moof"} if self.to_stdout else {}
        if self._tick.numerator == 1:
            scale = str(self._tick.denominator)
            options.update(movie_timescale=scale, video_track_timescale=scale)
        return options

    def _add_stream(
        self, rotation: int, sar: Fraction, lossless: bool, crf: int, pix_fmt: str | None
    ) -> av.video.stream.VideoStream:
        if lossless:
            stream = self._container.add_stream(LOSSLESS_CODEC, rate=self.fps)
            stream.pix_fmt = "rgb24"
            stream.options = {"qp": "0", "preset": "medium"}
        else:
            stream = self._container.add_stream("libx264", rate=self.fps)
            stream.pix_fmt = pix_fmt or "yuv444p"
            stream.options = {"crf": str(crf), "preset": "medium"}
        stream.width, stream.height = self.width, self.height
        # No B-frames: packets leave the encoder in presentation order, pts == dts, no ctts/offset.
        stream.codec_context.max_b_frames = 0
        stream.codec_context.time_base = self._tick
        stream.time_base = self._tick
        stream.codec_context.sample_aspect_ratio = sar
        stream.sample_aspect_ratio = sar
        if rotation % 360:
            stream.set_display_rotation(rotation % 360)
        return stream

    def _add_audio(self, track: AudioTrack, shift: Fraction) -> AudioMuxer:
        if not container_holds(self._format, track):
            converted = transcode_to_aac(track)
            self.notices.append(f"{track.codec} audio cannot go into {self.path.suffix.lower()}; "
                                "converted to AAC (an .mkv output keeps it as it is)")
            track = converted
        return AudioMuxer(self._container, track, float(shift))

    # -- context manager -------------------------------------------------------------------------

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()

    # -- writing ---------------------------------------------------------------------------------

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 ``[height, width, 3]`` RGB frame."""
        if self._closed:
            raise video_error(self.path, "write() after the writer was closed")
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
            raise video_error(self.path, "frames must be uint8 numpy arrays")
        if frame.shape != (self.height, self.width, 3):
            raise video_error(
                self.path,
                f"frame {self._count} has shape {frame.shape}, expected ({self.height}, {self.width}, 3)",
            )
        if self.pts is not None and self._count >= len(self.pts):
            raise video_error(self.path, f"more frames written than the {len(self.pts)} timestamps given")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self._ticks[self._count] if self._ticks is not None else round(self._count * self._step)
        vf.time_base = self._tick
        self._count += 1
        # A frame's duration is the gap to the next one, so encode each frame once its successor
        # arrives; the very last one gets its duration in close().
        if self._pending is not None:
            self._encode(self._pending, vf.pts - self._pending.pts)
        self._pending = vf

    def _encode(self, vf: av.VideoFrame | None, duration: int = 0) -> None:
        try:
            if vf is not None:
                # Encoders drop frame durations (PyAV's pixel-format conversion does not copy them),
                # so remember them by pts and put them on the packets: the muxer needs the last
                # frame's duration to get the file's total duration, hence its average rate, right.
                self._durations[int(vf.pts)] = duration
            for packet in self._stream.encode(vf):
                ticks = self._durations.pop(packet.pts, 0) if packet.pts is not None else 0
                packet.duration = round(ticks * self._tick / packet.time_base)
                self._container.mux(packet)
                if self._audio is not None and packet.dts is not None:
                    self._audio.mux_until(float(packet.dts * packet.time_base))
        except (av.FFmpegError, OSError, ValueError) as exc:
            self._abort()
            raise video_error(self.path, f"encoding failed at frame {self._count} ({av_reason(exc)})") from exc

    def _last_duration(self) -> int:
        """Duration of the final frame so that the average rate n / total_duration equals fps."""
        assert self._pending is not None
        first = self._ticks[0] if self._ticks is not None else 0
        total = self._count * self._step
        last = round(total - (self._pending.pts - first))  # exact unless fps does not fit the ticks
        if last > 0:
            return last
        # fps is inconsistent with the timestamps (they span more than n / fps): one nominal frame
        return max(1, round(self._step))

    def close(self) -> None:
        """Flush the encoder and move the finished file onto ``path``."""
        if self._closed:
            return
        if self._count == 0:
            self._abort()
            raise video_error(self.path, "no frames were written")
        self._encode(self._pending, self._last_duration())
        self._pending = None
        self._encode(None)  # drain the encoder's look-ahead
        try:
            if self._audio is not None:
                self._audio.finish()
            self._container.close()
            self._closed = True
            self._out.commit()
        except OutputExistsError:
            self._abort()
            raise VideoExistsError(one_line(f"{self.path}: output file already exists (another writer finished "
                                             "first)")) from None
        except (av.FFmpegError, OSError, ValueError) as exc:
            self._abort()
            raise video_error(self.path, f"cannot finish writing ({av_reason(exc)})") from exc

    @property
    def bytes_written(self) -> int:
        """The size of the finished video (0 before close)."""
        if not self._closed:
            return 0
        return self._out.bytes if isinstance(self._out, StdoutSink) else self.path.stat().st_size

    def _abort(self) -> None:
        """Drop the partial output; never raises (we are usually already handling an error)."""
        if not self._closed:
            self._closed = True
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the file is deleted anyway
                pass
        if self._audio is not None:
            self._audio.close()
        self._out.abort()


class StdoutSink:
    """The standard output in place of an AtomicFile: the same `file` / `commit` / `abort`, nothing to undo.
    Only `write` is offered to FFmpeg, which then treats it as the pipe it is (no seeking back)."""

    def __init__(self, stream: BinaryIO | None = None):
        self._stream = stream or sys.stdout.buffer
        self.bytes = 0
        self.file = self

    def write(self, data: bytes) -> int:
        self.bytes += len(data)
        return self._stream.write(data)

    def commit(self) -> None:
        self._stream.flush()

    def abort(self) -> None:
        try:
            self._stream.flush()
        except OSError:  # the reader went away: nothing more to tell it
            pass


def _chroma_subsampled(pix_fmt: str) -> bool:
    """True for 4:2:0 / 4:2:2 style formats, which require even frame dimensions in libx264."""
    fmt = av.VideoFormat(pix_fmt)
    return fmt.chroma_width(2) != 2 or fmt.chroma_height(2) != 2
