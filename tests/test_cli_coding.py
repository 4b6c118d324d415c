"""compress / decompress as ffmpeg users expect them, in real subprocesses on real clips: --scale, --start and
--duration; a video piped into `compress -`; `decompress ... -` streaming a container to stdout. Bad values
are one `error:` line with exit 2, before any output exists."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import pytest
from test_cli_app import ENV, assert_fails, infotok
from test_io_audio import write_av

from infotok_cli.format.reader import read_header_and_index
from infotok_cli.io.audio import read_audio
from infotok_cli.io.video import probe_video


def infotok_bytes(*args: object, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """The command with binary stdin and stdout (a pipe at both ends)."""
    return subprocess.run([sys.executable, "-m", "infotok_cli", *map(str, args)], input=stdin, capture_output=True,
                          env=ENV, timeout=300)


def to_nut(src: Path) -> bytes:
    """`ffmpeg -i src -c copy -f nut -`: the clip's packets in a stream format with no index."""
    buf = io.BytesIO()
    with av.open(str(src)) as inp, av.open(buf, "w", format="nut") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    return buf.getvalue()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 frames of 48x32 H.264 at 25 fps with 1.3 s of AAC."""
    return write_av(tmp_path_factory.mktemp("coding") / "av.mp4", "aac", 1, 1.3)


def test_scale_start_and_duration_end_to_end(tmp_path: Path, clip: Path, tiny_weights: Path) -> None:
    itok, video = tmp_path / "cut.itok", tmp_path / "cut.mp4"
    proc = infotok("compress", clip, itok, "-m", tiny_weights, "--scale", "24:-2", "--start", "0.2",
                   "--duration", "400ms", "--window", "9", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["frames"], report["width"], report["height"]) == (10, 24, 16)
    assert (report["source_width"], report["source_height"], report["start_seconds"]) == (48, 32, 0.2)
    header = read_header_and_index(itok)[0]
    assert (header.width, header.height, header.num_frames) == (24, 16, 10)
    assert header.pts[0] == 0 and header.extra["source_size"] == [48, 32]
    source = probe_video(clip)
    assert header.pts == [p - source.pts[5] for p in source.pts[5:15]]  # exact, from 0

    # inspect shows both sizes and where the file starts in the source
    shown = infotok("inspect", itok)
    assert shown.returncode == 0 and "24x16, scaled from 48x32, 10 frames from 0.200 s" in shown.stdout
    insp = json.loads(infotok("inspect", itok, "--json").stdout)["summary"]
    assert (insp["source_width"], insp["source_height"], insp["start_seconds"]) == (48, 32, 0.2)

    proc = infotok("decompress", itok, video, "-m", tiny_weights)
    assert proc.returncode == 0, proc.stderr
    out = probe_video(video)
    assert (out.width, out.height, out.num_frames, out.fps) == (24, 16, 10, 25)
    assert float(out.pts[0] * out.time_base) == 0 and out.duration == pytest.approx(0.4)
    audio = read_audio(video)
    assert 0 <= audio.start < 1024 / 48000 and audio.duration == pytest.approx(0.4, abs=1024 / 48000)


def test_a_piped_video_in_and_a_stream_out(tmp_path: Path, clip: Path, tiny_weights: Path) -> None:
    """ffmpeg ... -f nut - | infotok compress - out.itok; infotok decompress out.itok - --format nut | ffplay -"""
    itok = tmp_path / "piped.itok"
    proc = infotok_bytes("compress", "-", itok, "-m", tiny_weights, "--window", "9", stdin=to_nut(clip))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"" and b"stdin -> piped.itok" in proc.stderr  # messages on stderr only
    header = read_header_and_index(itok)[0]
    assert header.source_name == "stdin" and header.num_frames == 20

    for fmt, demuxer in (("nut", "nut"), ("mp4", "mp4"), ("mkv", "matroska")):
        proc = infotok_bytes("decompress", itok, "-", "--format", fmt, "-m", tiny_weights, "-q")
        assert proc.returncode == 0, proc.stderr
        with av.open(io.BytesIO(proc.stdout), format=demuxer) as c:
            assert c.streams.video[0].codec_context.width == 48 and c.streams.audio
            assert sum(1 for _ in c.decode(video=0)) == 20
    proc = infotok_bytes("decompress", itok, "-", "--format", "nut", "-m", tiny_weights)
    assert b"piped.itok -> stdout" in proc.stderr and proc.stdout.startswith(b"nut/multimedia")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["piped.itok"]


def test_bad_values_are_one_line_and_exit_2(tmp_path: Path, clip: Path, tiny_weights: Path) -> None:
    out = tmp_path / "x.itok"
    # the command for one value of each kind (each run starts torch); test_io_source checks the parsing of the rest
    for args, fragment in ((("--scale", "640"), "--scale takes W:H"), (("--scale", "-1:16384"), "gives 24576x16384"),
                           (("--start", "0.8"), "beyond the end")):
        assert_fails(infotok("compress", clip, out, "-m", tiny_weights, *args), 2, fragment)
    assert_fails(infotok("compress", clip, "-", "-m", tiny_weights), 2, "cannot go to stdout")
    proc = infotok_bytes("compress", "-", out, "-m", tiny_weights, "--start", "9", stdin=to_nut(clip))
    assert proc.returncode == 2 and proc.stderr.decode() == (
        "error: stdin: --start 9 s is at or beyond the end of the video (0.800 s)\n")
    proc = infotok_bytes("compress", "-", out, "-m", tiny_weights)
    assert proc.returncode == 3 and b"stdin is empty" in proc.stderr
    itok = tmp_path / "ok.itok"
    assert infotok("compress", clip, itok, "-m", tiny_weights, "--window", "9").returncode == 0
    assert_fails(infotok("decompress", itok, "-"), 2, "needs --format")
    assert_fails(infotok("decompress", itok, "-", "--format", "nut", "--json"), 2, "--json")
    assert_fails(infotok("decompress", itok, tmp_path / "v.mp4", "--format", "mkv"), 2, "--format")
    assert_fails(infotok("decompress", itok, "-", "--format", "avi"), 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.itok"]


def test_the_source_clock_is_the_first_frame(tmp_path: Path, make_video, tiny_weights: Path) -> None:
    """A source whose first frame is at 1 s: --start counts from that frame, as ffmpeg's -ss does."""
    src = make_video(32, 24, 12, "late.mkv", pts=list(range(1000, 1000 + 12 * 40, 40)), time_base=Fraction(1, 1000),
                     fps=Fraction(25))
    itok = tmp_path / "late.itok"
    proc = infotok("compress", src, itok, "-m", tiny_weights, "--start", "0.1", "--window", "9", "--json")
    assert proc.returncode == 0, proc.stderr
    header = read_header_and_index(itok)[0]
    assert header.pts == list(range(0, 9 * 40, 40)) and header.extra["source_start_pts"] == 120
