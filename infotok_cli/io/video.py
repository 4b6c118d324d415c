"""Streaming video I/O on top of PyAV (the FFmpeg libraries bundled with the ``av`` wheel).

* :func:`probe_video` reads a file's layout (size, exact frame count, timestamps, rotation, ...)
  by demuxing packets, which is much faster than decoding.
* :func:`iter_frames` decodes one frame at a time to uint8 RGB, so memory does not grow with length.
* :class:`~infotok_cli.io.video_writer.VideoWriter` (its own module) encodes RGB frames.

Every failure surfaces as :class:`VideoError` with a one-line message meant for end users.

Rotation convention: ``rotation`` is the counter-clockwise angle (0/90/180/270) by which the coded
frame must be turned for display, the same convention as PyAV's ``VideoFrame.rotation`` and
``VideoStream.set_display_rotation``; ``np.rot90(frame, rotation // 90)`` gives the upright
picture. (The legacy ``rotate`` metadata tag counts clockwise and is converted on read.)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import av
import numpy as np

from ..errors import VideoError, VideoExistsError, one_line

__all__ = ["VideoError", "VideoExistsError", "VideoInfo", "iter_frames", "probe_video"]

log = logging.getLogger(__name__)

def video_error(path: str | os.PathLike[str], problem: str) -> VideoError:
    return VideoError(one_line(f"{os.fspath(path)}: {problem}"))


def av_reason(exc: BaseException) -> str:
    """FFmpeg's own short reason (e.g. 'Invalid data found when processing input') without PyAV's
    errno/filename decoration."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return one_line(reason)


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
    # A selection (io/source.py): the frames are the source's from `first_frame` on, scaled from
    # source_width x source_height (0: not scaled); start_pts: the first frame's source time after the
    # source's first frame, in time_base ticks.
    first_frame: int = 0
    source_width: int = 0
    source_height: int = 0
    start_pts: int = 0

    @property
    def scaled(self) -> bool:
        """Whether frames are resampled from another (the source's) size."""
        return bool(self.source_width) and (self.source_width, self.source_height) != (self.width, self.height)

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
        raise video_error(path, "file does not exist")
    if not path.is_file():
        raise video_error(path, "not a regular file")
    if not os.access(path, os.R_OK):
        raise video_error(path, "file is not readable (permission denied)")
    if path.stat().st_size == 0:
        raise video_error(path, "file is empty (0 bytes), not a video")


def _open_input(path: Path) -> av.container.InputContainer:
    try:
        return av.open(os.fspath(path), mode="r")
    except av.error.InvalidDataError as exc:
        raise video_error(path, "not a recognised media file (or it is damaged or truncated)") from exc
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise video_error(path, f"cannot open as media file ({av_reason(exc)})") from exc


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    """First real video stream; cover-art pictures attached to audio files do not count."""
    attached_pic = int(av.stream.Disposition.attached_pic)
    for stream in container.streams.video:
        if not int(stream.disposition) & attached_pic:
            return stream
    raise video_error(path, "no video stream found (audio-only or data file?)")


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
        raise video_error(path, f"cannot read video ({av_reason(exc)})") from exc
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
        raise video_error(path, "video stream contains no frames")
    if first is None:
        reason = av_reason(decode_error) if decode_error else "no frame could be decoded"
        raise video_error(path, f"video stream cannot be decoded ({stream.codec_context.name}: {reason})")

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

    A selection's ``info`` (io/source.py) skips the frames before ``info.first_frame`` and resamples
    frames to ``info.width`` x ``info.height``: swscale's area filter when the picture shrinks (every
    source pixel counts, no aliasing, no ringing), bicubic (ffmpeg's default) when it grows.

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
    interpolation = None
    if info.scaled:
        shrinks = info.width <= info.source_width and info.height <= info.source_height
        interpolation = "AREA" if shrinks else "BICUBIC"
    try:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"  # frame threading: still in order, several times faster
        for index, frame in enumerate(_decode_tolerant(container, stream, path)):
            if index < info.first_frame:
                continue  # before the selection's start (decoded: frames depend on earlier ones)
            if produced >= info.num_frames:
                break  # the selection's end, or extra frames from the decoder: keep the contract
            if frame.width != info.width or frame.height != info.height or frame.format.name != "rgb24":
                frame = frame.reformat(width=info.width, height=info.height, format="rgb24",
                                       interpolation=interpolation)
            last = np.ascontiguousarray(frame.to_ndarray())
            produced += 1
            yield last
    except (av.FFmpegError, OSError, ValueError, MemoryError) as exc:
        raise video_error(path, f"error while decoding frame {produced} ({av_reason(exc)})") from exc
    finally:
        container.close()

    if produced < info.num_frames:
        if last is None:
            raise video_error(path, "no frame could be decoded")
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
