"""Streaming video I/O on top of PyAV (the FFmpeg libraries bundled with the ``av`` wheel).

* :func:`probe_video` reads a file's layout (size, exact frame count, timestamps, rotation, ...)
  by demuxing packets, which is much faster than decoding.
* :func:`iter_frames` decodes one frame at a time to uint8 RGB, so memory does not grow with length.
* :class:`VideoWriter` encodes RGB frames, restoring the timing/rotation/aspect of a source, muxes a
  kept audio track (:mod:`infotok_cli.audio`) back in sync, and only makes the output visible
  (:mod:`infotok_cli.atomic`) once it was written completely.

Every failure surfaces as :class:`VideoError` with a one-line message meant for end users.

Rotation convention: ``rotation`` is the counter-clockwise angle (0/90/180/270) by which the coded
frame must be turned for display, the same convention as PyAV's ``VideoFrame.rotation`` and
``VideoStream.set_display_rotation``; ``np.rot90(frame, rotation // 90)`` gives the upright
picture. (The legacy ``rotate`` metadata tag counts clockwise and is converted on read.)
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from .atomic import AtomicFile, OutputExistsError
from .audio import AudioError, AudioMuxer, AudioTrack, container_holds, transcode_to_aac

__all__ = ["VideoError", "VideoInfo", "VideoWriter", "iter_frames", "probe_video"]

log = logging.getLogger(__name__)

# Extension -> (FFmpeg muxer name). All three take H.264 (also libx264rgb's RGB flavour).
_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}

# libx264's RGB variant at qp 0 is mathematically lossless on rgb24 input and decodes back to
# planar GBR, which converts to rgb24 by a pure byte shuffle, so frames round-trip bit-exactly.
LOSSLESS_CODEC = "libx264rgb"


class VideoError(Exception):
    """A user-facing video problem; ``str(err)`` is a single line naming the file."""


class VideoExistsError(VideoError, FileExistsError):
    """The output video exists (or another writer created it first) and overwriting was not asked for."""


def _one_line(text: object) -> str:
    """Collapse whitespace so messages (which embed paths and FFmpeg text) stay on one line."""
    return " ".join(str(text).split())


def _err(path: str | os.PathLike[str], problem: str) -> VideoError:
    return VideoError(_one_line(f"{os.fspath(path)}: {problem}"))


def _av_reason(exc: BaseException) -> str:
    """FFmpeg's own short reason (e.g. 'Invalid data found when processing input') without PyAV's
    errno/filename decoration."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return _one_line(reason)


@dataclass
class VideoInfo:
    """What :func:`probe_video` learned about the first video stream of a file."""

    name: str
    width: int
    height: int
    num_frames: int
    fps_num: int
    fps_den: int
    time_base_num: int
    time_base_den: int
    pts: list[int] = field(repr=False)
    rotation: int = 0
    sar_num: int = 1
    sar_den: int = 1
    has_audio: bool = False
    bit_depth: int = 8
    pix_fmt: str = "yuv420p"

    @property
    def fps(self) -> Fraction:
        """Average frame rate as an exact fraction."""
        return Fraction(self.fps_num, self.fps_den)

    @property
    def time_base(self) -> Fraction:
        """Unit of :attr:`pts`, in seconds."""
        return Fraction(self.time_base_num, self.time_base_den)

    @property
    def sar(self) -> Fraction:
        """Sample (pixel) aspect ratio."""
        return Fraction(self.sar_num, self.sar_den)

    @property
    def duration(self) -> float:
        """Seconds from the first frame to the end of the last one (last frame lasts 1/fps)."""
        if not self.pts:
            return 0.0
        span = (self.pts[-1] - self.pts[0]) * self.time_base
        return float(span + 1 / self.fps)

    @property
    def is_variable_frame_rate(self) -> bool:
        """True when frame spacing varies by more than one tick (muxers round timestamps)."""
        deltas = [b - a for a, b in pairwise(self.pts)]
        # Each delta may be off by +-1 tick from rounding, so constant-rate deltas span at most 2.
        return bool(deltas) and max(deltas) - min(deltas) > 2


# --------------------------------------------------------------------------------------------- reading


def _check_path(path: Path) -> None:
    """Turn the usual filesystem problems into clear messages before FFmpeg sees the file."""
    if not path.exists():
        raise _err(path, "file does not exist")
    if not path.is_file():
        raise _err(path, "not a regular file")
    if not os.access(path, os.R_OK):
        raise _err(path, "file is not readable (permission denied)")
    if path.stat().st_size == 0:
        raise _err(path, "file is empty (0 bytes), not a video")


def _open_input(path: Path) -> av.container.InputContainer:
    try:
        return av.open(os.fspath(path), mode="r")
    except av.error.InvalidDataError as exc:
        raise _err(path, "not a recognised media file (or it is damaged or truncated)") from exc
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise _err(path, f"cannot open as media file ({_av_reason(exc)})") from exc


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    """First real video stream; cover-art pictures attached to audio files do not count."""
    attached_pic = int(av.stream.Disposition.attached_pic)
    for stream in container.streams.video:
        if not int(stream.disposition) & attached_pic:
            return stream
    raise _err(path, "no video stream found (audio-only or data file?)")


def _rotation_from_tag(stream: av.video.stream.VideoStream) -> int | None:
    tag = stream.metadata.get("rotate")
    try:
        return (-round(float(tag))) % 360 if tag is not None else None  # tag is clockwise
    except (ValueError, OverflowError):  # junk such as "abc" or "inf"
        return None


def _normalize_rotation(degrees: float) -> int:
    """Snap to the nearest quarter turn in [0, 360); display matrices carry float noise."""
    return (round(degrees / 90) * 90) % 360


def _bit_depth(pix_fmt: str) -> int:
    try:
        return max(c.bits for c in av.VideoFormat(pix_fmt).components)
    except (ValueError, av.FFmpegError):
        return 8


def _fraction_or_none(value: object) -> Fraction | None:
    if value is None:
        return None
    frac = Fraction(value)  # type: ignore[arg-type]
    return frac if frac > 0 else None


def probe_video(path: str | Path) -> VideoInfo:
    """Describe the first video stream of ``path``.

    Frames are counted and their timestamps collected by demuxing packets (no decoding), except the
    first frame, which is decoded to learn the rotation (FFmpeg attaches the container's display
    matrix to decoded frames) and to prove the stream is decodable. Files whose packets carry no
    timestamps (raw elementary streams) fall back to decoding everything.

    Raises:
        VideoError: the path does not exist / is not a readable file / is empty / is not a media
            file, has no video stream, or has no video frames.
    """
    path = Path(path)
    _check_path(path)
    container = _open_input(path)
    try:
        return _probe_open(container, path)
    except (av.FFmpegError, OSError, ValueError, MemoryError) as exc:
        raise _err(path, f"cannot read video ({_av_reason(exc)})") from exc
    finally:
        container.close()


def _probe_open(container: av.container.InputContainer, path: Path) -> VideoInfo:
    stream = _video_stream(container, path)
    stream.thread_type = "AUTO"
    has_audio = len(container.streams.audio) > 0

    pts: list[int] = []
    missing_pts = False
    first: av.VideoFrame | None = None
    decode_error: BaseException | None = None
    for packet in container.demux(stream):
        if packet.size == 0 and packet.pts is None:
            # PyAV ends demuxing with an empty packet; decoding it flushes the decoder, which
            # matters when the file is shorter than the decoder's delay.
            if first is None:
                first, decode_error = _first_frame(stream, None, decode_error)
            continue
        if packet.is_discard:
            continue  # dropped by an edit list: the decoder will not output it either
        if packet.pts is None:
            missing_pts = True
        else:
            pts.append(packet.pts)
        if first is None:
            first, decode_error = _first_frame(stream, packet, decode_error)

    if missing_pts or not pts:
        # Raw elementary streams (.h264 etc.) have no packet timestamps: decode to count.
        # Reopen rather than seek: raw streams are often not seekable.
        with _open_input(path) as again:
            pts, first = _pts_by_decoding(again, _video_stream(again, path))

    if not pts:
        raise _err(path, "video stream contains no frames")
    if first is None:
        reason = _av_reason(decode_error) if decode_error else "no frame could be decoded"
        raise _err(path, f"video stream cannot be decoded ({stream.codec_context.name}: {reason})")

    pts = _strictly_increasing(sorted(pts))
    time_base = stream.time_base or Fraction(1, 90000)
    fps = _average_rate(stream, pts, time_base)

    rotation = _normalize_rotation(first.rotation)
    if rotation == 0:
        rotation = _rotation_from_tag(stream) or 0

    sar = _fraction_or_none(stream.sample_aspect_ratio) or _fraction_or_none(
        stream.codec_context.sample_aspect_ratio
    )
    sar = sar or Fraction(1, 1)
    pix_fmt = stream.codec_context.pix_fmt or first.format.name
    width = stream.codec_context.width or first.width
    height = stream.codec_context.height or first.height

    return VideoInfo(
        name=path.name,
        width=int(width),
        height=int(height),
        num_frames=len(pts),
        fps_num=fps.numerator,
        fps_den=fps.denominator,
        time_base_num=time_base.numerator,
        time_base_den=time_base.denominator,
        pts=pts,
        rotation=rotation,
        sar_num=sar.numerator,
        sar_den=sar.denominator,
        has_audio=has_audio,
        bit_depth=_bit_depth(pix_fmt),
        pix_fmt=pix_fmt,
    )


def _strictly_increasing(pts: list[int]) -> list[int]:
    """Nudge repeated timestamps (seen in damaged or badly muxed files) one tick apart, so every
    frame keeps a distinct time and the list can be written back as is."""
    for i in range(1, len(pts)):
        if pts[i] <= pts[i - 1]:
            pts[i] = pts[i - 1] + 1
    return pts


def _first_frame(
    stream: av.video.stream.VideoStream, packet: av.Packet | None, error: BaseException | None
) -> tuple[av.VideoFrame | None, BaseException | None]:
    """Feed one packet (None: flush) to the decoder; a corrupt packet is remembered, not fatal,
    since later packets may still decode."""
    try:
        frames = stream.decode(packet)
    except av.error.InvalidDataError as exc:
        return None, exc
    return (frames[0] if frames else None), error


def _pts_by_decoding(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> tuple[list[int], av.VideoFrame | None]:
    """Count frames by decoding; synthesize timestamps on the stream's time base where missing."""
    stream.thread_type = "AUTO"
    rate = _fraction_or_none(stream.average_rate) or _fraction_or_none(stream.guessed_rate) or Fraction(30)
    tb = stream.time_base or Fraction(1, 90000)
    step = max(1, round(1 / (rate * tb)))
    pts: list[int] = []
    first: av.VideoFrame | None = None
    for frame in container.decode(stream):
        if first is None:
            first = frame
        # Keep the frame object's timestamp when present, else continue the regular grid.
        if frame.pts is not None and (not pts or frame.pts > pts[-1]):
            pts.append(int(frame.pts))
        else:
            pts.append(pts[-1] + step if pts else 0)
    return pts, first


def _average_rate(stream: av.video.stream.VideoStream, pts: list[int], time_base: Fraction) -> Fraction:
    """The container's average rate (exact fraction), else one derived from the timestamps."""
    rate = _fraction_or_none(stream.average_rate) or _fraction_or_none(stream.guessed_rate)
    if rate is not None:
        return rate
    if len(pts) >= 2 and pts[-1] > pts[0]:
        return (Fraction(len(pts) - 1) / ((pts[-1] - pts[0]) * time_base)).limit_denominator(1001)
    return Fraction(30)  # a single frame with no rate information: any rate is as good


def iter_frames(path: str | Path, info: VideoInfo | None = None) -> Iterator[np.ndarray]:
    """Yield the frames of ``path`` one at a time as C-contiguous uint8 RGB arrays ``[H, W, 3]``.

    High-bit-depth input is converted to 8-bit rgb24 (by swscale, honouring the frame's colour
    matrix and range tags). Exactly ``info.num_frames`` frames are produced in presentation order,
    at the coded size (rotation is *not* applied): if a damaged stream decodes to fewer frames, the
    last good frame is repeated (with a logged warning) so callers can rely on the count matching
    ``info.pts``.

    Problems with the path itself raise :class:`VideoError` at the call; decoding problems raise
    it while iterating.
    """
    path = Path(path)
    if info is None:
        info = probe_video(path)
    _check_path(path)
    return _frames(path, info)


def _frames(path: Path, info: VideoInfo) -> Iterator[np.ndarray]:
    container = _open_input(path)
    produced = 0
    last: np.ndarray | None = None
    try:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"  # frame threading: still in order, several times faster
        for frame in _decode_tolerant(container, stream, path):
            if produced >= info.num_frames:
                break  # decoder produced extra frames (should not happen): keep the contract
            if frame.width != info.width or frame.height != info.height or frame.format.name != "rgb24":
                frame = frame.reformat(width=info.width, height=info.height, format="rgb24")
            last = np.ascontiguousarray(frame.to_ndarray())
            produced += 1
            yield last
    except (av.FFmpegError, OSError, ValueError, MemoryError) as exc:
        raise _err(path, f"error while decoding frame {produced} ({_av_reason(exc)})") from exc
    finally:
        container.close()

    if produced < info.num_frames:
        if last is None:
            raise _err(path, "no frame could be decoded")
        log.warning(
            "%s: decoded %d of %d frames; repeating the last frame", path.name, produced, info.num_frames
        )
        for _ in range(info.num_frames - produced):
            yield last.copy()


def _decode_tolerant(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: Path
) -> Iterator[av.VideoFrame]:
    """Decode, skipping packets FFmpeg rejects as corrupt instead of aborting the whole video."""
    for packet in container.demux(stream):
        if packet.is_discard:
            continue
        try:
            frames = stream.decode(packet)
        except av.error.InvalidDataError:
            log.warning("%s: skipping a corrupt packet", path.name)
            continue
        yield from frames


# --------------------------------------------------------------------------------------------- writing


class VideoWriter:
    """Encode uint8 RGB frames to ``path`` (.mp4 / .m4v / .mov / .mkv), atomically.

    Frames go to an :class:`~infotok_cli.atomic.AtomicFile` (an unnamed file where the file system
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
    ) -> None:
        self.path = Path(path)
        self.notices: list[str] = []
        self.width, self.height = int(width), int(height)
        self.fps = Fraction(fps)
        self.time_base = Fraction(time_base) if time_base is not None else 1 / self.fps
        self.pts = [int(p) for p in pts] if pts is not None else None
        self.overwrite = overwrite
        self._validate(rotation, sar, lossless, crf, pix_fmt)

        self._format = _CONTAINERS[self.path.suffix.lower()]
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
            self._out = AtomicFile(self.path, overwrite=self.overwrite)
        except OutputExistsError:
            raise VideoExistsError(_one_line(f"{self.path}: output file already exists (pass overwrite=True "
                                             "to replace it)")) from None
        except OSError as exc:
            raise _err(self.path, f"cannot create output file ({exc.strerror or exc})") from exc
        try:
            self._container = av.open(
                self._out.file, mode="w", format=self._format, options=self._muxer_options()
            )
        except (av.FFmpegError, OSError) as exc:
            self._out.abort()
            raise _err(self.path, f"cannot create output file ({_av_reason(exc)})") from exc
        try:
            self._stream = self._add_stream(rotation, Fraction(sar), lossless, crf, pix_fmt)
            if audio is not None:
                self._audio = self._add_audio(audio, shift)
        except (av.FFmpegError, OSError, ValueError, AudioError) as exc:
            self._abort()
            raise _err(self.path, f"cannot set up the encoder ({_av_reason(exc)})") from exc

    def _validate(self, rotation: int, sar: Fraction, lossless: bool, crf: int, pix_fmt: str | None) -> None:
        if self.path.suffix.lower() not in _CONTAINERS:
            known = ", ".join(sorted(_CONTAINERS))
            raise _err(self.path, f"unsupported output extension {self.path.suffix!r} (use {known})")
        if self.path.exists() and not self.overwrite:
            raise VideoExistsError(_one_line(f"{self.path}: output file already exists (pass overwrite=True "
                                             "to replace it)"))
        if not self.path.parent.is_dir():
            raise _err(self.path, "output directory does not exist")
        if self.width <= 0 or self.height <= 0:
            raise _err(self.path, f"invalid frame size {self.width}x{self.height}")
        if self.fps <= 0 or self.time_base <= 0:
            raise _err(self.path, f"invalid frame rate {self.fps} / time base {self.time_base}")
        if rotation % 90 != 0:
            raise _err(self.path, f"rotation must be a multiple of 90 degrees, got {rotation}")
        if Fraction(sar) <= 0:
            raise _err(self.path, f"invalid sample aspect ratio {sar}")
        if not 0 <= crf <= 51:
            raise _err(self.path, f"crf must be in 0..51, got {crf}")
        if lossless and pix_fmt not in (None, "rgb24"):
            raise _err(self.path, "lossless mode always encodes rgb24; do not pass pix_fmt")
        if pix_fmt is not None and not lossless:
            if pix_fmt not in {f.name for f in av.Codec("libx264", "w").video_formats or ()}:
                raise _err(self.path, f"libx264 cannot encode pixel format {pix_fmt!r}")
            if _chroma_subsampled(pix_fmt) and (self.width % 2 or self.height % 2):
                raise _err(
                    self.path, f"{pix_fmt} needs even width and height, got {self.width}x{self.height}"
                )
        if self.pts is not None:
            if any(b <= a for a, b in pairwise(self.pts)):
                raise _err(self.path, "pts must be strictly increasing")

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
        if self._format not in ("mp4", "mov") or self._tick.numerator != 1:
            return {}
        scale = str(self._tick.denominator)
        return {"movie_timescale": scale, "video_track_timescale": scale}

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
            raise _err(self.path, "write() after the writer was closed")
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
            raise _err(self.path, "frames must be uint8 numpy arrays")
        if frame.shape != (self.height, self.width, 3):
            raise _err(
                self.path,
                f"frame {self._count} has shape {frame.shape}, expected ({self.height}, {self.width}, 3)",
            )
        if self.pts is not None and self._count >= len(self.pts):
            raise _err(self.path, f"more frames written than the {len(self.pts)} timestamps given")
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
            raise _err(self.path, f"encoding failed at frame {self._count} ({_av_reason(exc)})") from exc

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
            raise _err(self.path, "no frames were written")
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
            raise VideoExistsError(_one_line(f"{self.path}: output file already exists (another writer finished "
                                             "first)")) from None
        except (av.FFmpegError, OSError, ValueError) as exc:
            self._abort()
            raise _err(self.path, f"cannot finish writing ({_av_reason(exc)})") from exc

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


def _chroma_subsampled(pix_fmt: str) -> bool:
    """True for 4:2:0 / 4:2:2 style formats, which require even frame dimensions in libx264."""
    fmt = av.VideoFormat(pix_fmt)
    return fmt.chroma_width(2) != 2 or fmt.chroma_height(2) != 2
