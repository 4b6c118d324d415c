"""Batch mode of compress / decompress / inspect on real clips: one model load, per-file outcomes, resumable
runs with --skip-existing, and --shard partitions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli_app import ENV, assert_fails, infotok
from typer.testing import CliRunner

from infotok_cli.cli.app import app
from infotok_cli.format.reader import read_header_and_index
from infotok_cli.io.video import probe_video

COMMON = ("--window", "9", "--overlap", "1", "--strategy", "window", "--beta", "0.5")


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def clips(make_shared_video) -> list[Path]:
    """Three short real clips of different sizes and contents, and a corrupt 'video' among them."""
    paths = [make_shared_video(40, 24, 9, "a.mp4"), make_shared_video(32, 32, 7, "b.mp4", kind="static"),
             make_shared_video(24, 16, 11, "c.mp4", kind="noise")]
    corrupt = paths[0].parent / "corrupt.mp4"
    corrupt.write_bytes(paths[0].read_bytes()[:300])  # a truncated real file
    return [paths[0], corrupt, paths[1], paths[2]]


# ----------------------------------------------------------------------------- command line


def test_compress_batch_with_a_corrupt_input_then_resume(tmp_path: Path, clips: list[Path],
                                                         tiny_weights: Path) -> None:
    out = tmp_path / "tokens"
    proc = infotok("compress", *clips, "-o", out, "-m", tiny_weights, *COMMON, "--json")
    assert proc.returncode == 7, proc.stderr
    lines = json_lines(proc.stdout)
    assert [line["status"] for line in lines] == ["ok", "failed", "ok", "ok"]
    failed = lines[1]
    assert failed["input"] == str(clips[1]) and failed["exit_code"] == 3 and "corrupt.mp4" in failed["error"]
    assert "1 failed" in proc.stderr and "Traceback" not in proc.stderr
    for line, clip in zip(lines, clips):
        assert line["output"] == str(out / (clip.stem + ".itok"))
    assert sorted(p.name for p in out.iterdir()) == ["a.itok", "b.itok", "c.itok"]  # nothing for the corrupt one
    for line in (lines[0], lines[2], lines[3]):
        header, windows, size = read_header_and_index(line["output"])
        info = probe_video(line["input"])
        assert (header.num_frames, header.width, header.height) == (info.num_frames, info.width, info.height)
        assert line["tokens_kept"] == sum(w.kept for w in windows) and line["file_bytes"] == size

    # Rerun: no work for the finished files (untouched), the corrupt one fails again.
    before = snapshot(out)
    proc = infotok("compress", *clips, "-o", out, "-m", tiny_weights, *COMMON, "--skip-existing", "--json")
    assert proc.returncode == 7, proc.stderr
    assert [line["status"] for line in json_lines(proc.stdout)] == ["skipped", "failed", "skipped", "skipped"]
    assert snapshot(out) == before
    # With only finished files, not even the model is loaded: a model that does not exist is never noticed.
    good = [c for c in clips if c.name != "corrupt.mp4"]
    proc = infotok("compress", *good, "-o", out, "-m", tmp_path / "no-such-model.safetensors", *COMMON,
                   "--skip-existing")
    assert proc.returncode == 0, proc.stderr
    assert "3 input(s): 0 ok, 0 failed, 3 skipped" in proc.stderr
    assert snapshot(out) == before


def run_in_process(*args: object) -> subprocess.CompletedProcess[str]:
    """The real command, run in this process: for calls whose point is not the process boundary (a fresh
    interpreter per call adds seconds of imports); the batch runs under test use real subprocesses."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def test_batch_refuses_before_any_work(tmp_path: Path, clips: list[Path], tiny_weights: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "b.itok").write_bytes(b"precious")
    good = [c for c in clips if c.name != "corrupt.mp4"]
    run = run_in_process
    assert_fails(run("compress", *good, "-o", out, "-m", tiny_weights), 5, "--skip-existing", "--force")
    assert_fails(run("compress", *good, "-o", out, "-m", tiny_weights, "--force", "--skip-existing"), 2)
    assert_fails(run("compress", *good, "-o", out, "-m", tmp_path / "nope.safetensors", "--force"), 6)
    assert_fails(run("compress", *good, "-o", out, "-m", tiny_weights, "--shard", "2/2"), 2, "--shard")
    assert_fails(run("compress", good[0], "-m", tiny_weights), 2, "INPUT OUTPUT")
    assert_fails(run("compress", *good, "-m", tiny_weights), 2, "-o DIR")
    assert_fails(run("compress", "--from-list", tmp_path / "missing.txt", "-o", out), 3, "missing.txt")
    assert_fails(run("compress", clips[0], Path("x") / clips[0].name, "-o", out, "-m", tiny_weights), 2,
                 "would both write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"] and snapshot(out)["b.itok"][1] == b"precious"


def test_shards_from_a_list_cover_every_input_once(tmp_path: Path, clips: list[Path], tiny_weights: Path) -> None:
    listing = tmp_path / "inputs.txt"
    listing.write_text("".join(f"{c}\n" for c in clips) + f"{clips[0]}\n")  # a repeat is coded once
    out = tmp_path / "out"
    seen: list[str] = []
    codes = []
    for k in range(3):
        proc = infotok("compress", "--from-list", listing, "--shard", f"{k}/3", "-o", out, "-m", tiny_weights,
                       *COMMON, "--json")
        codes.append(proc.returncode)
        seen += [line["input"] for line in json_lines(proc.stdout)]
    assert sorted(seen) == sorted(map(str, clips))  # the union of the shards is every input, once
    assert sorted(codes) == [0, 0, 7]  # the shard holding the corrupt clip says so
    assert sorted(p.name for p in out.iterdir()) == ["a.itok", "b.itok", "c.itok"]


def test_decompress_and_inspect_batches_from_stdin(tmp_path: Path, clips: list[Path], tiny_weights: Path) -> None:
    good = [c for c in clips if c.name != "corrupt.mp4"]
    itoks = tmp_path / "itok"
    assert run_in_process("compress", *good, "-o", itoks, "-m", tiny_weights, *COMMON, "-q").returncode == 0
    files = sorted(itoks.iterdir())
    not_itok = tmp_path / "notes.itok"
    not_itok.write_text("not a token file")
    listing = "".join(f"{p}\n" for p in [*files, not_itok])
    proc = subprocess.run([sys.executable, "-m", "infotok_cli", "decompress", "--from-list", "-", "-o",
                           tmp_path / "videos", "-m", str(tiny_weights), "--json"], input=listing, text=True,
                          capture_output=True, env=ENV, timeout=300)
    assert proc.returncode == 7, proc.stderr
    lines = json_lines(proc.stdout)
    assert [(line["status"], line["exit_code"]) for line in lines] == [("ok", 0)] * 3 + [("failed", 4)]
    for line, src in zip(lines, good):
        assert probe_video(line["output"]).num_frames == probe_video(src).num_frames == line["frames"]

    proc = infotok("inspect", *files, not_itok, "--json")
    assert proc.returncode == 7, proc.stderr
    lines = json_lines(proc.stdout)
    assert [line["status"] for line in lines] == ["ok", "ok", "ok", "failed"]
    for line, path in zip(lines, files):
        single = run_in_process("inspect", path, "--json")
        status = ("input", "output", "status", "exit_code", "error", "seconds")
        assert json.loads(single.stdout) == {k: v for k, v in line.items() if k not in status}
    assert_fails(run_in_process("inspect", *files, "--csv", tmp_path / "x.csv"), 2, "one file")


def test_input_options_apply_to_every_input_and_pipes_are_single_file(tmp_path: Path, clips: list[Path],
                                                                      tiny_weights: Path) -> None:
    """--scale / --start / --duration work per input in a batch; `-` (stdin / stdout) is a usage error there;
    decompress --format picks the outputs' container."""
    good = [c for c in clips if c.name != "corrupt.mp4"]
    out = tmp_path / "itok"
    proc = infotok("compress", *good, "-o", out, "-m", tiny_weights, *COMMON, "--scale", "16:-2", "--start", "0.1",
                   "--duration", "0.1", "--json")
    assert proc.returncode == 0, proc.stderr
    for line, src in zip(json_lines(proc.stdout), good):
        info = probe_video(src)
        assert (line["width"], line["source_width"], line["frames"]) == (16, info.width, 3)
        header = read_header_and_index(Path(line["output"]))[0]
        assert header.height == 2 * round(16 * info.height / info.width / 2) and header.pts[0] == 0
    proc = infotok("compress", good[0], "-o", tmp_path / "late", "-m", tiny_weights, "--start", "5", "--json")
    assert proc.returncode == 7 and json_lines(proc.stdout)[0]["exit_code"] == 2  # beyond this input's end
    assert_fails(run_in_process("compress", good[0], "-", "-o", out, "-m", tiny_weights), 2, "stdin")
    assert_fails(run_in_process("decompress", *out.iterdir(), "-o", "-"), 2, "-o takes a directory")
    assert_fails(run_in_process("compress", *good, "-o", out, "--scale", "wide"), 2, "--scale")
    assert_fails(run_in_process("decompress", *out.iterdir(), "-o", tmp_path / "v", "--format", "nut"), 2, "nut")
    videos = tmp_path / "videos"
    assert run_in_process("decompress", *out.iterdir(), "-o", videos, "--format", "mkv", "-m", tiny_weights,
                          "-q").returncode == 0
    assert sorted(p.name for p in videos.iterdir()) == ["a.mkv", "b.mkv", "c.mkv"]
    assert probe_video(videos / "a.mkv").num_frames == 3
