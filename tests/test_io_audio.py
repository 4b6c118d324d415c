"""Audio passthrough on real files: sources with AAC or Opus audio (mono, stereo, longer or shorter than
the video) written by PyAV, compressed and decompressed by the real code and the real command."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import msgpack
import numpy as np
import pytest
from conftest import synth_frame

from infotok_cli.coding.compress import compress_video
from infotok_cli.coding.decompress import decompress_video
from infotok_cli.coding.tokenizer import Tokenizer
from infotok_cli.errors import AudioError, ContainerError
from infotok_cli.format.chunks import MAX_AUDIO_PACKET, AudioPacket, AudioTrack, pack_audio, unpack_audio
from infotok_cli.format.layout import CHUNK_AUDIO
from infotok_cli.format.reader import ItokReader
from infotok_cli.io.audio import read_audio
from infotok_cli.io.files import itok_writer
from infotok_cli.io.video import probe_video

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
ENV.pop("INFOTOK_DEBUG", None)
FPS = 25
FRAMES = 20  # 0.8 s of video


def write_av(path: Path, acodec: str, channels: int, audio_seconds: float, *, rate: int = 48000) -> Path:
    """A real file: a moving 48x32 H.264 video and a noise-like audio track of the given length."""
    rng = np.random.default_rng(channels)
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = 48, 32, "yuv420p"
        aus = out.add_stream(acodec, rate=rate, layout=layout)
        if acodec == "vorbis":
            aus.codec_context.options = {"strict": "-2"}
        for k in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(synth_frame("moving", k, 32, 48, rng), format="rgb24")
            frame.pts = k
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        fmt = aus.codec_context.format
        step = aus.codec_context.frame_size or 1024
        total = round(audio_seconds * rate)
        t = np.arange(total) / rate
        signal = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(total)
        for s in range(0, total, step):
            chunk = np.tile(signal[s:s + step][None], (channels, 1)).astype(np.float32)
            if not fmt.is_planar:
                chunk = chunk.T.reshape(1, -1)
            if fmt.name.startswith("s16"):
                chunk = (chunk * 20000).astype(np.int16)
            af = av.AudioFrame.from_ndarray(chunk, format=fmt.name, layout=layout)
            af.sample_rate, af.pts = rate, s
            out.mux(aus.encode(af))
        out.mux(aus.encode(None))
    return path


def frame_seconds(track: AudioTrack) -> float:
    """One audio frame: 1024 samples for AAC, 20 ms for Opus."""
    return (1024 if track.codec == "aac" else 960) / track.sample_rate


def decoded_samples(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(f.samples for f in c.decode(audio=0))


def video_start(path: Path) -> float:
    info = probe_video(path)
    return float(info.pts[0] * info.time_base)


SOURCES = [  # codec, channels, audio seconds (video: 0.8 s), source container
    ("aac", 1, 1.3, "mp4"),
    ("aac", 2, 0.4, "mkv"),
    ("libopus", 1, 0.4, "mp4"),
    ("libopus", 2, 1.3, "mkv"),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audio")


@pytest.mark.parametrize(("acodec", "channels", "seconds", "ext"), SOURCES)
def test_round_trip_keeps_the_packets_in_sync(folder: Path, tokenizer: Tokenizer, acodec: str, channels: int,
                                              seconds: float, ext: str) -> None:
    src = write_av(folder / f"{acodec}{channels}_{seconds}.{ext}", acodec, channels, seconds)
    source = read_audio(src)
    assert source is not None and source.channels == channels
    itok = src.with_suffix(".itok")
    result = compress_video(src, itok, tokenizer, window=9, overlap=1, overwrite=True)
    assert result.audio["codec"] == source.codec and result.audio["bytes"] == source.bytes
    assert not any("audio" in n for n in result.notices)
    with ItokReader(itok) as r:
        r.verify()
        assert r.version[1] == 1  # the audio chunk is a minor-version 1 feature
    sync_src = source.start - video_start(src)
    for out_ext in (".mp4", ".mkv"):
        out = folder / f"{src.stem}_{ext}_out{out_ext}"
        dec = decompress_video(itok, out, tokenizer, overwrite=True)
        assert dec.notices == [] and dec.audio["packets"] == len(source.packets)
        back = read_audio(out)
        assert back is not None
        assert [p.data for p in back.packets] == [p.data for p in source.packets]  # not re-encoded
        assert (back.codec, back.channels, back.sample_rate) == (source.codec, channels, source.sample_rate)
        one = frame_seconds(source)
        assert abs(back.duration - source.duration) <= one
        assert abs(decoded_samples(out) - decoded_samples(src)) <= one * source.sample_rate
        sync_out = back.start - video_start(out)
        assert abs(sync_out - sync_src) <= 1 / FPS, (sync_src, sync_out)
        assert probe_video(out).num_frames == FRAMES


def test_no_audio_and_inspect_through_the_command(folder: Path, tiny_weights: Path) -> None:
    src = write_av(folder / "cli.mp4", "aac", 2, 1.0)

    def infotok(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "infotok_cli", *map(str, args)], capture_output=True,
                              text=True, env=ENV, timeout=300)

    itok = folder / "cli.itok"
    proc = infotok("compress", src, itok, "--model", tiny_weights, "--window", "9", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["audio"]["channels"] == 2
    proc = infotok("inspect", itok, "--json")
    assert proc.returncode == 0, proc.stderr
    audio = json.loads(proc.stdout)["summary"]["audio"]
    track = read_audio(src)
    assert audio == {**track.summary(), "duration_seconds": pytest.approx(track.duration),
                     "start_seconds": pytest.approx(track.start)}
    proc = infotok("inspect", itok)
    assert "aac, 2 ch (stereo), 48000 Hz" in proc.stdout

    out = folder / "cli_silent.mkv"
    proc = infotok("decompress", itok, out, "--model", tiny_weights, "--no-audio", "-q")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert read_audio(out) is None and probe_video(out).num_frames == FRAMES

    batch_dir = folder / "batch_silent"  # batch mode honours --no-audio as well
    proc = infotok("decompress", itok, "-o", batch_dir, "--model", tiny_weights, "--no-audio", "-q")
    assert proc.returncode == 0, proc.stderr
    assert read_audio(batch_dir / "cli.mp4") is None and probe_video(batch_dir / "cli.mp4").num_frames == FRAMES
    proc = infotok("decompress", itok, "-o", folder / "batch_sound", "--model", tiny_weights, "-q")
    assert proc.returncode == 0 and read_audio(folder / "batch_sound" / "cli.mp4") is not None, proc.stderr

    silent = folder / "cli_silent.itok"
    proc = infotok("compress", src, silent, "--model", tiny_weights, "--window", "9", "--no-audio")
    assert proc.returncode == 0 and "not kept (--no-audio)" in proc.stderr
    with ItokReader(silent) as r:
        assert r.skippable_chunks() == [] and r.version[1] == 0
    assert json.loads(infotok("inspect", silent, "--json").stdout)["summary"]["audio"] is None


def test_codec_the_output_cannot_hold_is_converted_with_a_notice(folder: Path, tokenizer: Tokenizer) -> None:
    """FLAC cannot go into .mov: converted to AAC (with a notice); .mkv keeps it as it is."""
    src = write_av(folder / "flac.mkv", "flac", 2, 0.6)
    itok = folder / "flac.itok"
    compress_video(src, itok, tokenizer, window=9, overwrite=True)
    source = read_audio(src)
    kept = decompress_video(itok, folder / "flac_out.mkv", tokenizer, overwrite=True)
    assert kept.notices == []
    assert [p.data for p in read_audio(folder / "flac_out.mkv").packets] == [p.data for p in source.packets]
    conv = decompress_video(itok, folder / "flac_out.mov", tokenizer, overwrite=True)
    assert conv.notices == ["flac audio cannot go into .mov; converted to AAC (an .mkv output keeps it as it is)"]
    back = read_audio(folder / "flac_out.mov")
    assert back.codec == "aac" and back.channels == 2
    assert abs(decoded_samples(folder / "flac_out.mov") - decoded_samples(src)) <= 1024


# ----------------------------------------------------------------------------- the chunk as untrusted input


def sample_track() -> AudioTrack:
    packets = [AudioPacket(i * 1024, i * 1024, 1024, True, bytes([i]) * (10 + i)) for i in range(5)]
    return AudioTrack("aac", 48000, 2, "stereo", Fraction(1, 48000), b"setup", packets)


def test_chunk_body_round_trips() -> None:
    track = sample_track()
    assert unpack_audio(pack_audio(track)) == track
    track.packets[0].pts = None  # a packet without a timestamp survives too
    assert unpack_audio(pack_audio(track)).packets[0].pts is None


def corrupt(body: bytes, offset: int, fmt: str, value: int) -> bytes:
    b = bytearray(body)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def test_hostile_chunk_bodies_are_rejected_before_allocating() -> None:
    body = pack_audio(sample_track())
    (psize,) = struct.unpack_from("<I", body)
    count_at = 4 + psize
    table = count_at + 4
    cases = {
        "truncated": body[:3],
        "huge parameter size": corrupt(body, 0, "<I", 2**32 - 1),
        "huge packet count": corrupt(body, count_at, "<I", 2**32 - 1),
        "no packets": body[:count_at] + struct.pack("<I", 0),
        "huge packet": corrupt(body, table + 20, "<I", MAX_AUDIO_PACKET + 1),
        "sizes do not add up": corrupt(body, table + 20, "<I", 11),
        "trailing bytes": body + b"\0",
    }
    for what, bad in cases.items():
        with pytest.raises(AudioError):
            unpack_audio(bad)
            pytest.fail(f"accepted: {what}")
    bad_params = [{"codec": "../x"}, {"sample_rate": 0}, {"channels": 10**6}, {"time_base_den": 0},
                  {"setup": b""}, {"layout": "x" * 100}]
    base = msgpack.unpackb(body[4:4 + psize])
    for change in bad_params:
        params = msgpack.packb({**base, **change}, use_bin_type=True)
        with pytest.raises(AudioError):
            unpack_audio(struct.pack("<I", len(params)) + params + body[4 + psize:])


def test_damaged_audio_chunk_fails_decompress_cleanly(folder: Path, tokenizer: Tokenizer, moving_video: Path
                                                      ) -> None:
    """A file whose audio chunk has a valid checksum but a lying packet table: one-line ContainerError,
    no output."""
    good = folder / "plain.itok"
    compress_video(moving_video, good, tokenizer, window=17, overwrite=True)
    hostile = folder / "hostile.itok"
    body = pack_audio(sample_track())
    (psize,) = struct.unpack_from("<I", body)
    bad = corrupt(body, 4 + psize, "<I", 10**6)
    with ItokReader(good) as r:
        with itok_writer(hostile, r.header, overwrite=True) as w:
            for rec in r.iter_windows():
                m = rec.meta
                w.write_window(m.frame_start, m.frame_count, m.padded_frames, rec.keep_mask, rec.tokens)
            w.write_chunk(CHUNK_AUDIO, bad)
    out = folder / "hostile.mp4"
    with pytest.raises(ContainerError, match="packets"):
        decompress_video(hostile, out, tokenizer)
    assert not out.exists()
    assert decompress_video(hostile, out, tokenizer, audio=False).audio is None  # --no-audio still decodes
