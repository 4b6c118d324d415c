"""What part of an input video is coded, with ffmpeg's meaning: `--scale W:H`, `--start`, `--duration`, and
`-` for a video read from stdin.

* `InputOptions.parse(scale, start, duration)` checks the options before any input is read (OptionError:
  a usage error).
* `select(info, options)` turns a probed `VideoInfo` into the one the coder sees: the frames in
  [start, start + duration), their timestamps, and the coded (scaled) size; `iter_frames` then decodes
  exactly those frames at that size.
* `trim_audio(track, cut)` keeps the audio packets of the same interval, shifted as the video is.
* `source_path(src)` gives a path to read: the file itself, or stdin spooled to a temporary file (the
  coder reads its input several times: probe, audio, frames; and FFmpeg cannot demux every container,
  e.g. an MP4 whose index is at the end, from a pipe).

Timing follows ffmpeg's `-ss` given before `-i`: times count from the video's first frame; with `--start`
the first kept frame gets timestamp 0 (every later frame keeps its exact distance from it); with
`--duration` alone the timestamps are kept as they are. Frames are kept whose time t satisfies
start <= t < start + duration.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

from ..errors import AudioError, OptionError, VideoError
from ..format.chunks import AudioTrack
from ..format.layout import MAX_DIM, MAX_RATIONAL
from .video import VideoInfo

__all__ = ["STDIN", "STDIN_NAME", "Cut", "InputOptions", "parse_scale", "parse_time", "select", "source_path",
           "trim_audio"]

STDIN = "-"  # the input (or output) name that means the standard stream
STDIN_NAME = "stdin"  # the source name recorded for a video read from stdin
_TIME = re.compile(r"(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)|(\d+(?:\.\d*)?|\.\d+)(s|ms|us)?")


def parse_time(text: str | float | int | Fraction, option: str) -> Fraction:
    """Seconds as ffmpeg writes them: `12.5`, `1500ms`, `250us`, `MM:SS[.frac]` or `HH:MM:SS[.frac]`;
    an exact fraction (a decimal is read as written, not as a binary float). Negative times are refused."""
    if isinstance(text, (int, float, Fraction)) and not isinstance(text, bool):
        if isinstance(text, float) and not math.isfinite(text):
            raise OptionError(f"{option} must be a finite number of seconds, got {text}")
        value = Fraction(str(text)) if isinstance(text, float) else Fraction(text)
        if value < 0:
            raise OptionError(f"{option} must not be negative, got {text}")
        return value
    s = str(text).strip()
    if s.startswith("-"):
        raise OptionError(f"{option} must not be negative, got {s}")
    m = _TIME.fullmatch(s)
    if m is None:
        raise OptionError(f"{option} takes seconds (e.g. 12.5, 1500ms or 1:02.5), got {str(text)!r}")
    if m.group(4) is not None:
        unit = {None: 1, "s": 1, "ms": Fraction(1, 1000), "us": Fraction(1, 10**6)}[m.group(5)]
        return Fraction(m.group(4)) * unit
    hours, minutes, seconds = int(m.group(1) or 0), int(m.group(2)), Fraction(m.group(3))
    if minutes >= 60 and m.group(1) is not None or seconds >= 60:
        raise OptionError(f"{option}: minutes and seconds of {s!r} must be below 60")
    return 3600 * hours + 60 * minutes + seconds


def parse_scale(text: str | tuple[int, int]) -> tuple[int, int]:
    """`W:H` (or `WxH`) as in ffmpeg's scale filter: a size in pixels, `0` for the input's, `-1` to follow
    the other side's aspect ratio, `-n` (n >= 2) to follow it rounded to a multiple of n (`-2`: even)."""
    if isinstance(text, tuple):
        parts = list(text)
    else:
        parts = re.split(r"[:x]", str(text).strip())
    try:
        w, h = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise OptionError(f"--scale takes W:H (e.g. 640:-2), got {text!r}") from None
    for side in (w, h):
        if side > MAX_DIM:
            raise OptionError(f"--scale {w}:{h}: a side is above the limit of {MAX_DIM} pixels")
    return w, h


def _rescale(a: int, b: int, c: int) -> int:
    """a * b / c rounded to the nearest integer, halves away from zero (FFmpeg's av_rescale)."""
    return math.floor(Fraction(a * b, c) + Fraction(1, 2))


def scaled_size(request: tuple[int, int], width: int, height: int, rotation: int = 0) -> tuple[int, int]:
    """The coded size of a `width` x `height` frame scaled as `request` asks, computed as ffmpeg's scale
    filter does. W:H name the displayed picture, as in ffmpeg (which turns a rotated video upright before
    scaling): for a quarter-turned video they apply to the other sides of the coded frame."""
    turned = rotation % 180 == 90
    in_w, in_h = (height, width) if turned else (width, height)
    w, h = request
    factor_w, factor_h = (-w if w < -1 else 1), (-h if h < -1 else 1)
    w, h = (w or in_w), (h or in_h)
    if w < 0 and h < 0:  # both follow the other: the input size
        w, h = in_w, in_h
    if w < 0:
        w = _rescale(h, in_w, in_h * factor_w) * factor_w
    if h < 0:
        h = _rescale(w, in_h, in_w * factor_h) * factor_h
    if not (1 <= w <= MAX_DIM and 1 <= h <= MAX_DIM):
        raise OptionError(f"--scale {request[0]}:{request[1]} gives {w}x{h} for a {in_w}x{in_h} video; "
                          f"each side must be 1..{MAX_DIM}")
    return (h, w) if turned else (w, h)


@dataclass(frozen=True)
class InputOptions:
    """The part of the input to code: a scale request (None: the source size) and a time interval."""

    scale: tuple[int, int] | None = None
    start: Fraction | None = None  # seconds from the first frame; None: from the first frame, timestamps kept
    duration: Fraction | None = None  # seconds; None: to the end

    @classmethod
    def parse(cls, scale: str | tuple[int, int] | None = None, start: str | float | None = None,
              duration: str | float | None = None) -> InputOptions:
        """Checked options (OptionError names the bad one), before any input is read."""
        d = None if duration is None else parse_time(duration, "--duration")
        if d is not None and d <= 0:
            raise OptionError(f"--duration must be above 0 seconds, got {duration}")
        return cls(None if scale is None else parse_scale(scale),
                   None if start is None else parse_time(start, "--start"), d)

    @property
    def trims(self) -> bool:
        return self.start is not None or self.duration is not None


@dataclass(frozen=True)
class Cut:
    """The source interval a selection keeps, in seconds of the source's timeline: audio packets starting
    in [begin, end) are kept (None: no bound) and every timestamp moves by -shift."""

    begin: Fraction | None
    end: Fraction | None
    shift: Fraction


def _seconds(x: Fraction) -> str:
    return f"{float(x):g} s"


def select(info: VideoInfo, options: InputOptions) -> tuple[VideoInfo, Cut]:
    """The frames and size that `options` keep of the probed video `info`, and the matching audio cut.

    Raises OptionError (a usage error) when no frame lies in the interval, e.g. a start beyond the end."""
    tb = info.time_base
    origin = info.pts[0]
    lo = options.start or Fraction(0)
    hi = None if options.duration is None else lo + options.duration
    keep = [i for i, p in enumerate(info.pts)
            if (p - origin) * tb >= lo and (hi is None or (p - origin) * tb < hi)]
    if not keep:
        if lo > (info.pts[-1] - origin) * tb:  # after the last frame begins
            raise OptionError(f"{info.name}: --start {_seconds(lo)} is at or beyond the end of the video "
                              f"({info.duration:.3f} s)")
        raise OptionError(f"{info.name}: no frame starts between {_seconds(lo)} and {_seconds(hi or lo)}")
    first, count = keep[0], len(keep)
    shift = info.pts[first] if options.start is not None else 0
    width, height, sar = info.width, info.height, info.sar
    if options.scale is not None:
        width, height = scaled_size(options.scale, info.width, info.height, info.rotation)
        # ffmpeg keeps the displayed shape: the sample aspect ratio absorbs an uneven scale
        sar = sar * Fraction(height * info.width, width * info.height)
        if sar.numerator > MAX_RATIONAL or sar.denominator > MAX_RATIONAL:
            sar = sar.limit_denominator(MAX_RATIONAL // max(1, math.ceil(sar)))
    chosen = replace(info, width=width, height=height, num_frames=count,
                     pts=[p - shift for p in info.pts[first:first + count]], sar_num=sar.numerator,
                     sar_den=sar.denominator, first_frame=info.first_frame + first,
                     source_width=info.source_width or info.width, source_height=info.source_height or info.height,
                     start_pts=info.start_pts + info.pts[first] - origin if options.start is not None else 0)
    cut = Cut(begin=info.pts[first] * tb if options.start is not None else None,
              end=None if hi is None else origin * tb + hi, shift=shift * tb)
    return chosen, cut


def trim_audio(track: AudioTrack, cut: Cut) -> AudioTrack | None:
    """The packets of `track` that start in the cut's interval, their timestamps moved with the video's.

    Compressed audio is kept as it is, never re-encoded, so it is cut at packet boundaries: it starts at
    the first packet that begins at or after the first kept frame (within one packet, e.g. 21 ms of
    48 kHz AAC) and ends with the last packet that begins before the end. None when no packet is left."""
    tb = track.time_base
    shift = round(cut.shift / tb)

    def inside(t: int | None) -> bool:
        if t is None:
            return cut.begin is None
        return (cut.begin is None or t * tb >= cut.begin) and (cut.end is None or t * tb < cut.end)

    packets = [replace(p, pts=None if p.pts is None else p.pts - shift, dts=None if p.dts is None else p.dts - shift)
               for p in track.packets if inside(p.pts if p.pts is not None else p.dts)]
    return replace(track, packets=packets) if packets else None


@contextmanager
def source_path(src: str | os.PathLike[str], stdin: BinaryIO | None = None) -> Iterator[Path]:
    """A path to read `src` from: itself, or for `-` the standard input copied to a temporary file (in
    TMPDIR, so bounded by that disk; deleted afterwards)."""
    if os.fspath(src) != STDIN:
        yield Path(src)
        return
    stream = stdin or sys.stdin.buffer
    if stream.isatty():
        raise OptionError("the input is - (stdin), but stdin is a terminal; pipe a video into it")
    fd, name = tempfile.mkstemp(prefix="infotok-stdin-")
    try:
        with os.fdopen(fd, "wb") as spool:
            try:
                shutil.copyfileobj(stream, spool, 1 << 20)
            except OSError as exc:
                raise VideoError(f"-: cannot read the video from stdin ({exc.strerror or exc})") from None
            if spool.tell() == 0:
                raise VideoError("-: stdin is empty (0 bytes), no video was piped in")
        try:
            yield Path(name)
        except (VideoError, AudioError, OptionError) as exc:  # name the input as the user gave it, not the spool
            text = str(exc).replace(name, STDIN).replace(os.path.basename(name), STDIN_NAME)
            raise type(exc)(text) from exc
    finally:
        os.unlink(name)
