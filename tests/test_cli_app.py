"""The `infotok` command line as users run it: real subprocesses on real files.

Every failure must be one `error: ...` line on stderr (no traceback), with the documented exit code,
no output file and no temporary file left behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infotok_cli import __version__
from infotok_cli.format.reader import read_header_and_index
from infotok_cli.io.video import probe_video

# One OpenMP thread: see conftest.py (tiny tensors; avoids thread thrashing on a busy machine).
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "100"}
ENV.pop("INFOTOK_DEBUG", None)


def infotok(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infotok_cli", *map(str, args)], capture_output=True,
                          text=True, env=ENV, cwd=cwd, timeout=300)


def assert_fails(proc: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    """Exit `code`, nothing on stdout, no traceback; our own errors are exactly one `error:` line."""
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    if code != 2:  # exit 2 also comes from Typer's own usage errors, which have their own layout
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def compressed(work: Path, moving_video: Path, tiny_weights: Path) -> tuple[Path, dict]:
    """moving.mp4 (21 frames, 48x32) compressed once through the CLI; (file, its --json output)."""
    out = work / "moving.itok"
    proc = infotok("compress", moving_video, out, "--model", tiny_weights, "--window", "17", "--beta", "0.4",
                   "--strategy", "window", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return out, json.loads(proc.stdout)


# ----------------------------------------------------------------------------- success paths


def test_version_and_help() -> None:
    proc = infotok("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"infotok {__version__}"
    proc = infotok("--help")
    assert proc.returncode == 0
    for word in ("compress", "decompress", "inspect", "train", "Exit codes"):
        assert word in proc.stdout


def test_compress_json(compressed: tuple[Path, dict]) -> None:
    path, report = compressed
    expected = {"input", "output", "frames", "width", "height", "windows", "tokens_kept", "tokens_max",
                "keep_rate", "bpp16", "file_bytes", "bits_per_pixel", "seconds", "frames_per_second",
                "window_rates", "notices"}
    assert expected <= set(report)
    header, windows, size = read_header_and_index(path)
    assert (report["frames"], report["width"], report["height"]) == (21, 48, 32)
    assert report["windows"] == len(windows) == 2
    assert report["tokens_kept"] == sum(w.kept for w in windows)
    assert report["tokens_max"] == sum(w.capacity for w in windows)
    assert report["file_bytes"] == size == path.stat().st_size
    assert header.strategy == "window" and header.beta == 0.4


def test_compress_placement_option(work: Path, moving_video: Path, tiny_weights: Path,
                                   compressed: tuple[Path, dict]) -> None:
    """--placement error keeps the same number of tokens in other places; a bad value is a usage error."""
    out = work / "moving-error.itok"
    proc = infotok("compress", moving_video, out, "--model", tiny_weights, "--window", "17", "--beta", "0.4",
                   "--strategy", "window", "--placement", "error", "--json")
    assert proc.returncode == 0, proc.stderr
    default_windows, error_windows = read_header_and_index(compressed[0])[1], read_header_and_index(out)[1]
    assert [w.kept for w in error_windows] == [w.kept for w in default_windows]
    assert out.read_bytes() != compressed[0].read_bytes()
    bad = work / "bad-placement.itok"
    assert_fails(infotok("compress", moving_video, bad, "--model", tiny_weights, "--placement", "best"), 2,
                 "placement")
    assert not bad.exists()


def test_precision_is_chosen_recorded_and_checked(work: Path, moving_video: Path, tiny_weights: Path,
                                                  compressed: tuple[Path, dict]) -> None:
    """auto picks a precision this CPU runs natively and the file records it; fp32 can be forced; fp16 has
    no CPU kernels worth using and is a usage error there."""
    from infotok_cli.coding.precision import choose_precision

    auto = choose_precision("auto", "cpu").name
    assert compressed[1]["precision"] == auto
    assert read_header_and_index(compressed[0])[0].extra["precision"] == auto
    out = work / "moving-fp32.itok"
    proc = infotok("compress", moving_video, out, "--model", tiny_weights, "--window", "17", "--precision", "fp32",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["precision"] == "fp32"
    summary = json.loads(infotok("inspect", out, "--json").stdout)["summary"]
    assert summary["precision"] == "fp32"
    bad = work / "moving-fp16.itok"
    assert_fails(infotok("compress", moving_video, bad, "--model", tiny_weights, "--precision", "fp16"), 2,
                 "--precision fp16 needs a CUDA device")
    assert not bad.exists()


def test_doctor_reports_the_machine() -> None:
    from infotok_cli.coding.precision import cpu_info

    proc = infotok("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    env = json.loads(proc.stdout)
    assert set(env) == {"infotok", "python", "platform", "torch", "video", "cpu", "devices", "precision",
                        "environment", "models"}
    assert env["infotok"] == __version__ and env["python"] == sys.version.split()[0]
    assert {"version", "threads", "interop_threads", "cuda_build"} <= set(env["torch"])
    assert env["video"]["encoders"]["libx264"] is True and env["video"]["pyav"]
    assert env["cpu"]["bf16_native"] == cpu_info().bf16_native
    assert env["cpu"]["vector_extensions"] == list(cpu_info().flags)
    assert env["devices"][0]["device"] == "cpu"
    assert env["precision"]["cpu"]["precision"] == ("bf16" if cpu_info().bf16_native else "fp32")
    assert env["precision"]["cpu"]["reason"]
    assert "infotok-m" in env["models"]["shipped"] and env["models"]["default"] == "infotok-m"
    proc = infotok("doctor")
    assert proc.returncode == 0 and "precision auto (cpu)" in proc.stdout, proc.stderr


def test_inspect_json_matches_container(compressed: tuple[Path, dict]) -> None:
    path, _ = compressed
    proc = infotok("inspect", path, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert set(report) == {"summary", "windows", "frames", "token_entropy"}
    header, windows, size = read_header_and_index(path)
    s = report["summary"]
    assert (s["frames"], s["width"], s["height"], s["file_bytes"]) == (21, 48, 32, size)
    assert s["placement"] == header.extra["placement"] == "probe-gain"  # the tiny weights carry no router head
    assert s["tokens_kept"] == sum(w.kept for w in windows)
    assert [w["tokens_kept"] for w in report["windows"]] == [w.kept for w in windows]
    assert [f["frame"] for f in report["frames"]] == list(range(21))


def test_inspect_csv_to_stdout(compressed: tuple[Path, dict], moving_video: Path) -> None:
    path, _ = compressed
    proc = infotok("inspect", path, "--csv", "-")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    header, windows, _ = read_header_and_index(path)
    assert len(rows) == header.num_frames == 21
    positions = header.latent_hw[0] * header.latent_hw[1]
    info = probe_video(moving_video)
    for i, row in enumerate(rows):
        w, lat = int(row["window"]), int(row["latent_frame"])
        assert int(row["frame"]) == i
        assert windows[w].frame_start <= i < windows[w].frame_start + windows[w].frame_count
        assert int(row["tokens_kept"]) == windows[w].kept_per_frame[lat]
        assert int(row["tokens_possible"]) == positions
        assert float(row["keep_fraction"]) == pytest.approx(int(row["tokens_kept"]) / positions)
        assert float(row["timestamp"]) == pytest.approx(float((info.pts[i] - info.pts[0]) * info.time_base),
                                                         abs=1e-6)
    # Frames shared by two windows belong to the earlier one: each latent frame's count appears in full.
    assert [int(r["window"]) for r in rows] == [0] * 17 + [1] * 4


def test_inspect_report_plot_and_csv_file(compressed: tuple[Path, dict], work: Path) -> None:
    path, _ = compressed
    png, table = work / "usage.png", work / "usage.csv"
    proc = infotok("inspect", path, "--plot", png, "--csv", table, "--frames")
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(table.read_text().splitlines()) == 1 + 21
    for text in ("keep rate", "BPP16", "windows", "frames", "usage per frame"):
        assert text in proc.stdout
    assert any(ch in proc.stdout for ch in "▁▂▃▄▅▆▇█")
    before = (png.read_bytes(), table.read_bytes())
    assert_fails(infotok("inspect", path, "--plot", png), 5, "--force")
    assert_fails(infotok("inspect", path, "--csv", table), 5, "--force")
    assert (png.read_bytes(), table.read_bytes()) == before
    assert infotok("inspect", path, "--plot", png, "--csv", table, "--force").returncode == 0


def test_decompress_restores_layout(compressed: tuple[Path, dict], work: Path, moving_video: Path,
                                    tiny_weights: Path) -> None:
    path, _ = compressed
    out = work / "restored.mp4"
    proc = infotok("decompress", path, out, "--model", tiny_weights, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert {"input", "output", "frames", "width", "height", "seconds", "lossless"} <= set(report)
    a, b = probe_video(moving_video), probe_video(out)
    assert (b.num_frames, b.width, b.height, b.fps) == (a.num_frames, a.width, a.height, a.fps) == (
        21, 48, 32, a.fps)
    assert [p * b.time_base for p in b.pts] == [p * a.time_base for p in a.pts]


def test_force_overwrites(tmp_path: Path, static_video: Path, tiny_weights: Path) -> None:
    out = tmp_path / "s.itok"
    common = ("-m", tiny_weights, "--strategy", "window")
    assert infotok("compress", static_video, out, *common, "--beta", "1", "-q").returncode == 0
    first = out.read_bytes()
    assert_fails(infotok("compress", static_video, out, *common, "--beta", "0.1"), 5, "--force")
    assert out.read_bytes() == first  # untouched
    proc = infotok("compress", static_video, out, *common, "--beta", "0.1", "--force", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["keep_rate"] < 0.2
    assert read_header_and_index(out)[0].beta == 0.1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.itok"]


# ----------------------------------------------------------------------------- failures


def test_missing_and_non_video_inputs_exit_3(tmp_path: Path, tiny_weights: Path) -> None:
    assert_fails(infotok("compress", tmp_path / "missing.mp4", tmp_path / "x.itok", "-m", tiny_weights), 3,
                 "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    assert_fails(infotok("compress", text, tmp_path / "x.itok", "-m", tiny_weights), 3, "notes.mp4")
    assert_fails(infotok("decompress", tmp_path / "missing.itok", tmp_path / "x.mp4"), 3, "missing.itok")
    assert_fails(infotok("inspect", tmp_path / "missing.itok"), 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.mp4"]


def test_corrupt_itok_exits_4_without_partial_output(tmp_path: Path, compressed: tuple[Path, dict],
                                                    tiny_weights: Path) -> None:
    good, _ = compressed
    data = good.read_bytes()
    truncated = tmp_path / "truncated.itok"
    truncated.write_bytes(data[: len(data) // 2])
    assert_fails(infotok("inspect", truncated), 4)
    garbage = tmp_path / "garbage.itok"
    garbage.write_bytes(b"not an itok file at all" * 10)
    assert_fails(infotok("inspect", garbage, "--json"), 4, "magic")
    # A flipped byte inside the second window's tokens: header and index are intact, so inspect still
    # works, but decoding fails half-way, after the first window was already written to the video.
    _, windows, _ = read_header_and_index(good)
    damaged = tmp_path / "damaged.itok"
    pos = windows[1].offset + windows[1].record_size - 6
    damaged.write_bytes(data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:])
    assert infotok("inspect", damaged, "--json").returncode == 0
    out = tmp_path / "out.mp4"
    assert_fails(infotok("decompress", damaged, out, "-m", tiny_weights), 4, "window 1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.itok", "garbage.itok", "truncated.itok"]


def test_existing_output_exits_5_untouched(tmp_path: Path, compressed: tuple[Path, dict], moving_video: Path,
                                          tiny_weights: Path) -> None:
    path, _ = compressed
    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"precious")
    assert_fails(infotok("decompress", path, existing, "-m", tiny_weights), 5, "exists.mp4", "--force")
    existing_itok = tmp_path / "exists.itok"
    existing_itok.write_bytes(b"precious too")
    assert_fails(infotok("compress", moving_video, existing_itok, "-m", tiny_weights, "--json"), 5)
    assert existing.read_bytes() == b"precious" and existing_itok.read_bytes() == b"precious too"
    assert len(list(tmp_path.iterdir())) == 2


def test_bad_options_exit_2(tmp_path: Path, moving_video: Path, compressed: tuple[Path, dict],
                            tiny_weights: Path) -> None:
    out = tmp_path / "x.itok"
    for bad in (["--beta", "2"], ["--beta", "0.01"], ["--window", "10"], ["--overlap", "20"],
                ["--strategy", "best"]):
        assert_fails(infotok("compress", moving_video, out, "-m", tiny_weights, *bad), 2)
    path, _ = compressed
    assert_fails(infotok("decompress", path, tmp_path / "x.avi", "-m", tiny_weights), 2, ".avi")
    assert_fails(infotok("inspect", path, "--json", "--csv", "-"), 2)
    assert_fails(infotok("compress", moving_video, moving_video, "--force", "-m", tiny_weights), 2)
    assert list(tmp_path.iterdir()) == []


def test_model_problems_exit_6(tmp_path: Path, compressed: tuple[Path, dict], moving_video: Path,
                               other_weights: Path) -> None:
    assert_fails(infotok("compress", moving_video, tmp_path / "x.itok", "--model", tmp_path / "nope.safetensors"),
                 6, "nope.safetensors")
    not_weights = tmp_path / "fake.safetensors"
    not_weights.write_bytes(b"\x00" * 64)
    assert_fails(infotok("compress", moving_video, tmp_path / "x.itok", "--model", not_weights), 6)
    path, _ = compressed
    # Weights of the same architecture but not the ones the file was made with.
    assert_fails(infotok("decompress", path, tmp_path / "x.mp4", "--model", other_weights), 6, "--model")
    # Without --model: the file names a model that is not shipped, so the hint says what to do.
    assert_fails(infotok("decompress", path, tmp_path / "x.mp4"), 6, "infotok-test", "--model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.safetensors"]
