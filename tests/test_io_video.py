"""Real files through real PyAV: every video here is encoded into tmp_path and probed/decoded back."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from infotok_cli.errors import VideoError
from infotok_cli.io.video import VideoInfo, iter_frames, probe_video
from infotok_cli.io.video_writer import VideoWriter


def smooth_frame(k: int, h: int, w: int) -> np.ndarray:
    """A gradient with a moving sine pattern: compressible, so crf 10 reproduces it closely."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 128 + 100 * np.sin((x + 3 * k) / 7.0)
    g = 255 * x / max(w - 1, 1)
    b = 255 * y / max(h - 1, 1)
    return np.stack([r, g, b], axis=-1).clip(0, 255).astype(np.uint8)


def noise_frames(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def write(path: Path, frames: list[np.ndarray], fps: Fraction = Fraction(30), **kwargs) -> Path:
    h, w = frames[0].shape[:2]
    with VideoWriter(path, w, h, fps, **kwargs) as writer:
        for frame in frames:
            writer.write(frame)
    return path


def seconds(info: VideoInfo) -> list[Fraction]:
    return [p * info.time_base for p in info.pts]


def assert_one_line_error(excinfo: pytest.ExceptionInfo[VideoError], name: str) -> None:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.strip() == msg
    assert name in msg


# ------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize(
    ("w", "h", "n", "fps"),
    [
        (33, 17, 1, Fraction(30)),
        (33, 17, 5, Fraction(30000, 1001)),
        (64, 48, 2, Fraction(24)),
        (64, 48, 17, Fraction(30000, 1001)),
        (250, 138, 5, Fraction(30)),
        (250, 138, 17, Fraction(24)),
    ],
)
def test_constant_rate_round_trip(tmp_path: Path, w: int, h: int, n: int, fps: Fraction) -> None:
    frames = [smooth_frame(k, h, w) for k in range(n)]
    path = write(tmp_path / "cfr.mp4", frames, fps)

    info = probe_video(path)
    assert (info.name, info.width, info.height, info.num_frames) == ("cfr.mp4", w, h, n)
    assert info.fps == fps and (info.fps_num, info.fps_den) == (fps.numerator, fps.denominator)
    assert len(info.pts) == n and info.pts == sorted(info.pts)
    half_tick = info.time_base / 2
    assert all(abs(t - seconds(info)[0] - k / fps) <= half_tick for k, t in enumerate(seconds(info)))
    assert not info.is_variable_frame_rate
    assert (info.rotation, info.sar, info.has_audio, info.bit_depth) == (0, 1, False, 8)

    decoded = list(iter_frames(path, info))
    assert len(decoded) == n
    for src, out in zip(frames, decoded, strict=True):
        assert out.shape == (h, w, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
        assert np.abs(out.astype(int) - src).mean() < 2.0  # crf 10 on yuv444p: near-lossless


@pytest.mark.parametrize(("ext", "tick"), [(".mp4", None), (".mov", None), (".mkv", Fraction(1, 1000))])
def test_variable_frame_rate_round_trip(tmp_path: Path, ext: str, tick: Fraction | None) -> None:
    time_base = Fraction(1, 90000)
    pts = [3003, 6006, 9009, 15015, 18018, 30030, 33033, 34034]  # uneven gaps, non-zero start
    fps = Fraction(len(pts)) / ((pts[-1] - pts[0] + 3003) * time_base)
    path = write(tmp_path / f"vfr{ext}", noise_frames(len(pts), 24, 32), fps, pts=pts, time_base=time_base)

    info = probe_video(path)
    assert info.num_frames == len(pts)
    if tick is None:
        assert info.fps == fps
    else:  # Matroska stores the rate as whole nanoseconds per frame: exact only for common rates
        assert abs(info.fps / fps - 1) < 1e-6
    assert info.is_variable_frame_rate
    # Same instants in seconds, within half a tick of the file (Matroska stores whole milliseconds).
    tolerance = (tick or time_base) / 2
    assert all(abs(a - p * time_base) <= tolerance for a, p in zip(seconds(info), pts, strict=True))
    assert len(list(iter_frames(path, info))) == len(pts)


@pytest.mark.parametrize("src_ext", [".mp4", ".mkv"])
def test_copy_timing_from_probe(tmp_path: Path, src_ext: str) -> None:
    """The pipeline's use: probe a source, re-encode with its pts/time_base/fps, probe again. A
    Matroska source has millisecond ticks, yet the mp4 copy still reports exactly 30000/1001."""
    src = write(tmp_path / f"src{src_ext}", noise_frames(6, 16, 16), Fraction(30000, 1001))
    a = probe_video(src)
    out = write(tmp_path / "copy.mp4", list(iter_frames(src, a)), a.fps, pts=a.pts, time_base=a.time_base)
    b = probe_video(out)
    assert (b.num_frames, b.fps) == (a.num_frames, Fraction(30000, 1001))
    assert seconds(b) == seconds(a)


def test_negative_start_is_shifted_not_dropped(tmp_path: Path) -> None:
    pts = [-2002, -1001, 0, 1001]
    path = write(tmp_path / "neg.mp4", noise_frames(4, 8, 8), Fraction(30000, 1001), pts=pts,
                 time_base=Fraction(1, 30000))  # fmt: skip
    info = probe_video(path)
    assert info.num_frames == 4
    assert [t - seconds(info)[0] for t in seconds(info)] == [Fraction(p + 2002, 30000) for p in pts]


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_and_sar_round_trip(tmp_path: Path, rotation: int) -> None:
    path = write(tmp_path / "rot.mp4", noise_frames(2, 17, 33), rotation=rotation, sar=Fraction(4, 3))
    info = probe_video(path)
    assert info.rotation == rotation
    assert (info.sar_num, info.sar_den) == (4, 3)
    assert (info.width, info.height) == (33, 17)  # coded size, rotation is metadata only
    assert next(iter_frames(path, info)).shape == (17, 33, 3)


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_lossless_is_bit_exact(tmp_path: Path, ext: str) -> None:
    frames = noise_frames(3, 17, 33, seed=1)
    path = write(tmp_path / f"ll{ext}", frames, lossless=True)
    decoded = list(iter_frames(path))
    assert len(decoded) == 3
    assert all(np.array_equal(a, b) for a, b in zip(frames, decoded, strict=True))


def test_ten_bit_input_decodes_to_uint8(tmp_path: Path) -> None:
    path = tmp_path / "ten.mp4"
    src = smooth_frame(0, 48, 64)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p10le"
        for k in range(3):
            frame = av.VideoFrame.from_ndarray(src, format="rgb24")
            frame.pts = k
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))

    info = probe_video(path)
    assert (info.bit_depth, info.pix_fmt, info.num_frames, info.fps) == (10, "yuv420p10le", 3, 24)
    frames = list(iter_frames(path, info))
    assert len(frames) == 3
    assert frames[0].dtype == np.uint8 and frames[0].shape == (48, 64, 3)
    assert np.abs(frames[0].astype(int) - src).mean() < 6.0  # 4:2:0 chroma loss, but same picture


def test_video_with_audio(tmp_path: Path) -> None:
    path = tmp_path / "av.mp4"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = 32, 24, "yuv420p"
        audio = container.add_stream("aac", rate=48000)
        for k in range(5):
            frame = av.VideoFrame.from_ndarray(smooth_frame(k, 24, 32), format="rgb24")
            frame.pts = k
            container.mux(video.encode(frame))
        samples = np.zeros((1, 48000 // 6), dtype=np.float32)
        chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = 48000, 0
        container.mux(audio.encode(chunk))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))

    info = probe_video(path)
    assert info.has_audio
    assert (info.num_frames, info.width, info.height, info.fps) == (5, 32, 24, 30)
    assert len(list(iter_frames(path, info))) == 5


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_b_frame_source_decodes_in_presentation_order(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"bframes{ext}"
    sources = [smooth_frame(3 * k, 24, 32) for k in range(12)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)  # x264 defaults: B-frames, reordering
        stream.width, stream.height = 32, 24
        for k, src in enumerate(sources):
            frame = av.VideoFrame.from_ndarray(src, format="rgb24")
            frame.pts = k
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    info = probe_video(path)
    assert (info.num_frames, info.fps) == (12, 25) and not info.is_variable_frame_rate
    decoded = list(iter_frames(path, info))
    best = [int(np.argmin([np.abs(f.astype(int) - s).mean() for s in sources])) for f in decoded]
    assert best == list(range(12))


def test_packets_without_timestamps_fall_back_to_decoding(tmp_path: Path) -> None:
    path = tmp_path / "raw.h264"  # an elementary stream: no container timestamps
    with av.open(str(path), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height = 32, 16
        for k in range(4):
            frame = av.VideoFrame.from_ndarray(smooth_frame(k, 16, 32), format="rgb24")
            frame.pts = k
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    info = probe_video(path)
    assert info.num_frames == 4 and len(info.pts) == 4 and info.pts == sorted(set(info.pts))
    assert len(list(iter_frames(path, info))) == 4


def test_variable_frame_rate_flag_tolerates_one_tick_jitter() -> None:
    def info(pts: list[int]) -> VideoInfo:
        return VideoInfo("x.mkv", 2, 2, len(pts), 30000, 1001, 1, 1000, pts)

    assert not info([0, 33, 67, 100, 133, 167]).is_variable_frame_rate  # 29.97 fps in milliseconds
    assert info([0, 33, 67, 133, 167]).is_variable_frame_rate
    assert not info([0]).is_variable_frame_rate


# ------------------------------------------------------------------------------------------ errors


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(VideoError) as excinfo:
        probe_video(tmp_path / "nope.mp4")
    assert_one_line_error(excinfo, "nope.mp4")
    assert "does not exist" in str(excinfo.value)


def test_text_file_renamed_mp4(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 20)
    with pytest.raises(VideoError) as excinfo:
        probe_video(path)
    assert_one_line_error(excinfo, "notes.mp4")


def test_audio_only_file(tmp_path: Path) -> None:
    path = tmp_path / "sound.m4a"
    with av.open(str(path), "w", format="mp4") as container:
        audio = container.add_stream("aac", rate=48000)
        chunk = av.AudioFrame.from_ndarray(np.zeros((1, 4800), np.float32), format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = 48000, 0
        container.mux(audio.encode(chunk))
        container.mux(audio.encode(None))
    with pytest.raises(VideoError) as excinfo:
        probe_video(path)
    assert_one_line_error(excinfo, "sound.m4a")
    assert "no video stream" in str(excinfo.value)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.touch()
    with pytest.raises(VideoError) as excinfo:
        probe_video(path)
    assert_one_line_error(excinfo, "empty.mp4")


def test_directory_is_not_a_video(tmp_path: Path) -> None:
    with pytest.raises(VideoError) as excinfo:
        list(iter_frames(tmp_path))
    assert_one_line_error(excinfo, tmp_path.name)


# ------------------------------------------------------------------------------------------ writer


def test_writer_refuses_to_overwrite(tmp_path: Path) -> None:
    path = write(tmp_path / "a.mp4", noise_frames(1, 8, 8))
    before = path.read_bytes()
    with pytest.raises(VideoError) as excinfo:
        VideoWriter(path, 8, 8, Fraction(30))
    assert_one_line_error(excinfo, "a.mp4")
    assert path.read_bytes() == before
    write(path, noise_frames(2, 8, 8), overwrite=True)
    assert probe_video(path).num_frames == 2


def test_writer_exception_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with VideoWriter(tmp_path / "partial.mp4", 16, 16, Fraction(30)) as writer:
            writer.write(noise_frames(1, 16, 16)[0])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_writer_bad_frame_is_a_video_error(tmp_path: Path) -> None:
    with pytest.raises(VideoError) as excinfo:
        with VideoWriter(tmp_path / "bad.mp4", 16, 16, Fraction(30)) as writer:
            writer.write(np.zeros((16, 15, 3), np.uint8))
    assert_one_line_error(excinfo, "bad.mp4")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("clip.avi", {}),  # unknown extension
        ("clip.mp4", {"rotation": 45}),
        ("clip.mp4", {"pts": [0, 2, 1]}),
        ("clip.mp4", {"pix_fmt": "yuv420p"}),  # 4:2:0 needs even sizes; 17x9 is odd
    ],
)
def test_writer_rejects_bad_settings(tmp_path: Path, name: str, kwargs: dict) -> None:
    with pytest.raises(VideoError) as excinfo:
        VideoWriter(tmp_path / name, 17, 9, Fraction(30), **kwargs)
    assert_one_line_error(excinfo, name)
    assert list(tmp_path.iterdir()) == []
