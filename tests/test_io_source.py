"""What part of an input is coded (io/source.py): ffmpeg's scale arithmetic, times, the frames and timestamps a
selection keeps on real clips, the audio cut to match, and stdin spooled to a temporary file."""

from __future__ import annotations

import io
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from test_io_audio import FPS, write_av

from infotok_cli.errors import OptionError, VideoError
from infotok_cli.io.audio import read_audio
from infotok_cli.io.source import InputOptions, parse_scale, parse_time, scaled_size, select, source_path, trim_audio
from infotok_cli.io.video import iter_frames, probe_video


def test_times_are_read_exactly_as_ffmpeg_writes_them() -> None:
    assert parse_time("12.5", "--start") == Fraction(25, 2)
    assert parse_time("0.1", "--start") == Fraction(1, 10)  # the decimal, not the nearest binary float
    assert parse_time(0.1, "--start") == Fraction(1, 10)
    assert parse_time("1500ms", "--start") == Fraction(3, 2)
    assert parse_time("250us", "--start") == Fraction(1, 4000)
    assert parse_time("1:02.5", "--start") == Fraction(125, 2)
    assert parse_time("01:00:03", "--start") == 3603
    for bad in ("-1", "abc", "1:75", "1.2.3", "", "inf", "1h"):
        with pytest.raises(OptionError, match="--start"):
            parse_time(bad, "--start")
    with pytest.raises(OptionError, match="negative"):
        parse_time(-0.5, "--start")


def test_scale_follows_ffmpegs_scale_filter() -> None:
    assert parse_scale("640:-2") == (640, -2) and parse_scale("320x240") == (320, 240)
    for bad in ("640", "a:b", "1:2:3", "640:", "99999:10"):
        with pytest.raises(OptionError, match="--scale"):
            parse_scale(bad)
    # the numbers ffmpeg -vf scale=W:H gives for a 1280x720 input
    assert scaled_size((640, -1), 1280, 720) == (640, 360)
    assert scaled_size((-2, 240), 1280, 720) == (426, 240)  # 426.67 -> 213.33 * 2 rounded
    assert scaled_size((-1, 240), 1280, 720) == (427, 240)
    assert scaled_size((-4, 100), 1280, 720) == (176, 100)
    assert scaled_size((0, 100), 1280, 720) == (1280, 100)
    assert scaled_size((-1, -2), 1280, 720) == (1280, 720)  # both follow the other: the input's size
    assert scaled_size((33, -2), 48, 32) == (33, 22)
    # W:H name the displayed picture: a portrait phone clip stored 1280x720 and turned by 90 degrees
    assert scaled_size((360, -2), 1280, 720, rotation=90) == (640, 360)
    with pytest.raises(OptionError, match="gives"):
        scaled_size((1, -1), 4000, 2)  # 1 x 0


def test_options_are_checked_before_any_input() -> None:
    assert not InputOptions.parse().trims
    opts = InputOptions.parse("64:-2", "0.2", 0.4)
    assert opts == InputOptions((64, -2), Fraction(1, 5), Fraction(2, 5)) and opts.trims
    with pytest.raises(OptionError, match="--duration must be above 0"):
        InputOptions.parse(duration="0")
    with pytest.raises(OptionError, match="--duration"):
        InputOptions.parse(duration="-3")
    for kwargs, fragment in (({"scale": "640"}, "--scale takes W:H"), ({"start": "-1"}, "must not be negative"),
                             ({"start": "soon"}, "--start takes")):
        with pytest.raises(OptionError, match=fragment):
            InputOptions.parse(**kwargs)


@pytest.fixture(scope="module")
def av_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real mp4: 20 frames of 48x32 H.264 at 25 fps (timestamps 512 ticks apart) and 1.3 s of AAC."""
    return write_av(tmp_path_factory.mktemp("source") / "av.mp4", "aac", 1, 1.3)


def test_selection_keeps_exact_timestamps_and_the_right_frames(av_clip: Path) -> None:
    info = probe_video(av_clip)
    step = info.pts[1] - info.pts[0]
    chosen, cut = select(info, InputOptions.parse(start="0.2", duration="0.4"))
    # frames at 0.20, 0.24, ..., 0.56 s (0.60 is the end, excluded); the first one at time 0
    assert chosen.num_frames == 10 and chosen.first_frame == 5
    assert chosen.pts == [k * step for k in range(10)]
    assert chosen.start_pts == 5 * step and chosen.time_base == info.time_base
    assert (cut.begin, cut.end, cut.shift) == (Fraction(1, 5), Fraction(3, 5), Fraction(1, 5))
    frames = list(iter_frames(av_clip, info))
    assert np.array_equal(np.stack(list(iter_frames(av_clip, chosen))), np.stack(frames[5:15]))
    # --duration alone keeps the timestamps as they are (ffmpeg's -t)
    head, cut = select(info, InputOptions.parse(duration="0.1"))
    assert head.pts == info.pts[:3] and cut.begin is None and cut.shift == 0
    # a start between two frames begins at the next one
    later, _ = select(info, InputOptions.parse(start="0.21"))
    assert later.first_frame == 6 and later.pts[0] == 0 and later.num_frames == 14
    with pytest.raises(OptionError, match="beyond the end"):
        select(info, InputOptions.parse(start="0.8"))
    with pytest.raises(OptionError, match="no frame starts"):
        select(info, InputOptions.parse(start="0.201", duration="0.01"))


def test_scaling_resamples_every_frame_and_keeps_the_shape(av_clip: Path) -> None:
    info = probe_video(av_clip)
    small, _ = select(info, InputOptions.parse(scale="24:-2", start="0.4"))
    assert (small.width, small.height, small.source_width, small.source_height) == (24, 16, 48, 32)
    assert small.sar == 1 and small.scaled
    frames = np.stack(list(iter_frames(av_clip, small)))
    assert frames.shape == (10, 16, 24, 3)
    full = np.stack(list(iter_frames(av_clip, info)))[10:].astype(np.float32)
    pooled = full.reshape(10, 16, 2, 24, 2, 3).mean(axis=(2, 4))  # area averaging at exactly half size, in RGB
    # swscale resamples the YUV planes, then converts: close to RGB pooling on green (mostly luma), and
    # area averaging keeps every frame's mean colour (point sampling is off by twice as much here)
    assert np.abs(frames - pooled)[..., 1].mean() < 3.5
    assert np.abs(frames.mean(axis=(1, 2)) - pooled.mean(axis=(1, 2))).max() < 3.5
    # an uneven scale is absorbed by the sample aspect ratio, as ffmpeg does: the displayed shape stays
    wide, _ = select(info, InputOptions.parse(scale="96:32"))
    assert wide.sar == Fraction(1, 2) and len(list(iter_frames(av_clip, wide))) == 20
    assert next(iter_frames(av_clip, wide)).shape == (32, 96, 3)


def test_audio_is_cut_at_packet_boundaries_and_moved_with_the_video(av_clip: Path) -> None:
    track = read_audio(av_clip)
    _, cut = select(probe_video(av_clip), InputOptions.parse(start="0.2", duration="0.4"))
    kept = trim_audio(track, cut)
    frame = Fraction(1024, 48000)
    starts = [Fraction(p.pts) * kept.time_base for p in kept.packets]
    assert 0 <= starts[0] < frame  # the first packet that begins at or after the first kept frame
    assert starts[-1] < Fraction(2, 5) <= starts[-1] + frame  # the last one that begins before the end
    originals = {p.data for p in track.packets}
    assert all(p.data in originals for p in kept.packets)  # as they were, never re-encoded
    assert trim_audio(track, cut.__class__(Fraction(5), None, Fraction(5))) is None


def test_stdin_is_spooled_to_a_temporary_file_and_removed(av_clip: Path) -> None:
    data = av_clip.read_bytes()
    with source_path("-", io.BytesIO(data)) as path:
        assert path.read_bytes() == data and probe_video(path).num_frames == 20
        spool = path
    assert not spool.exists()
    with source_path(av_clip) as path:
        assert path == av_clip
    before = set(os.listdir(tempfile.gettempdir()))
    with pytest.raises(VideoError, match="stdin is empty"), source_path("-", io.BytesIO(b"")):
        pass
    with pytest.raises(VideoError, match=r"^-: not a recognised"), source_path("-", io.BytesIO(data[:300])) as path:
        probe_video(path)  # messages name the input as given, not the spool
    assert set(os.listdir(tempfile.gettempdir())) == before


def test_a_stream_without_an_index_up_front_reads_from_stdin(tmp_path: Path, av_clip: Path) -> None:
    """NUT, as `ffmpeg ... -f nut -` writes it: video and audio come through the spool whole."""
    nut = tmp_path / "av.nut"
    with av.open(str(av_clip)) as src, av.open(str(nut), "w", format="nut") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    with source_path("-", io.BytesIO(nut.read_bytes())) as path:
        info = probe_video(path)
        assert info.num_frames == 20 and info.fps == FPS and read_audio(path) is not None
