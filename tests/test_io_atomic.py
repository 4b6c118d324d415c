"""Crash-safe outputs (infotok_cli/io/atomic.py) with real processes: kill -9 mid-write, two writers of one
output, and a full disk (RLIMIT_FSIZE), through the library and through the real `infotok` command."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import write_video

from infotok_cli.coding.compress import compress_video
from infotok_cli.coding.tokenizer import Tokenizer
from infotok_cli.format.reader import ItokReader
from infotok_cli.io.atomic import AtomicFile, OutputExistsError, clean_stale
from infotok_cli.io.video import probe_video

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
ENV.pop("INFOTOK_DEBUG", None)
CLI = [sys.executable, "-m", "infotok_cli"]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough 5-frame windows that a compress run is still writing when it is killed."""
    return write_video(tmp_path_factory.mktemp("atomic") / "long.mp4", 64, 48, 240, kind="noise")


@pytest.fixture(scope="module")
def short_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("atomic") / "short.mp4", 32, 24, 27, kind="noise")


@pytest.mark.parametrize("unnamed", [True, False])
def test_commit_abort_and_overwrite(tmp_path: Path, unnamed: bool) -> None:
    out = tmp_path / "out.bin"
    with AtomicFile(out, unnamed=unnamed) as f:
        f.write(b"first")
        assert not out.exists()  # invisible until committed
    assert out.read_bytes() == b"first" and os.listdir(tmp_path) == ["out.bin"]
    with pytest.raises(OutputExistsError):
        AtomicFile(out, unnamed=unnamed)
    with pytest.raises(RuntimeError), AtomicFile(out, overwrite=True, unnamed=unnamed) as f:
        f.write(b"half")
        raise RuntimeError("writer failed")
    assert out.read_bytes() == b"first" and os.listdir(tmp_path) == ["out.bin"]
    with AtomicFile(out, overwrite=True, unnamed=unnamed) as f:
        f.write(b"second")
    assert out.read_bytes() == b"second" and os.listdir(tmp_path) == ["out.bin"]
    mode = out.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # the usual mode of a new file, not a temporary's 0600


@pytest.mark.parametrize("unnamed", [True, False])
def test_two_writers_in_one_process(tmp_path: Path, unnamed: bool) -> None:
    out = tmp_path / "out.bin"
    a, b = AtomicFile(out, unnamed=unnamed), AtomicFile(out, unnamed=unnamed)
    a.write(b"A" * 1000)
    b.write(b"B" * 10)
    clean_stale(out)  # a live writer's temporary is never taken for a stale one
    b.commit()
    with pytest.raises(OutputExistsError):
        a.commit()
    assert out.read_bytes() == b"B" * 10 and os.listdir(tmp_path) == ["out.bin"]


def test_stale_temporary_of_a_killed_writer_is_cleaned(tmp_path: Path) -> None:
    """The named fallback: a writer killed with SIGKILL leaves its temporary; the next writer of the same
    output removes it, and leaves other files (and other outputs' temporaries) alone."""
    out = tmp_path / "out.bin"
    script = textwrap.dedent(f"""
        import sys, time
        from infotok_cli.io.atomic import AtomicFile
        f = AtomicFile({str(out)!r}, unnamed=False)
        f.write(b"x" * 100000)
        f.file.flush()
        print("writing", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert proc.stdout.readline().strip() == "writing"
        temps = [p.name for p in tmp_path.iterdir()]
        assert len(temps) == 1 and temps[0].startswith(".out.bin.") and temps[0].endswith(".tmp")
        assert clean_stale(out) == []  # its writer is alive: untouched
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    other = tmp_path / ".other.bin.0123.tmp"
    other.write_bytes(b"not ours")
    (tmp_path / "keep.txt").write_bytes(b"keep")
    with AtomicFile(out, unnamed=False) as f:
        f.write(b"done")
    assert sorted(os.listdir(tmp_path)) == sorted([".other.bin.0123.tmp", "keep.txt", "out.bin"])


def wait_for_output_fd(proc: subprocess.Popen, folder: Path, timeout: float = 120) -> None:
    """Wait until `proc` holds its output's temporary in `folder` open: an unnamed file (shown as deleted)
    or a hidden named one."""
    deadline = time.monotonic() + timeout
    fd_dir = Path(f"/proc/{proc.pid}/fd")
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the command finished before it could be killed"
        try:
            targets = [os.readlink(p) for p in fd_dir.iterdir()]
        except (FileNotFoundError, ProcessLookupError):
            targets = []
        for t in targets:
            name = t[len(str(folder)) + 1:] if t.startswith(str(folder) + "/") else ""
            if name.endswith(" (deleted)") or (name.startswith(".") and name.endswith(".tmp")):
                return
        time.sleep(0.002)
    raise AssertionError("the command never opened its output")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see the writer's open files")
def test_kill_9_during_compress_and_decompress_leaves_nothing(tmp_path: Path, long_video: Path,
                                                              tiny_weights: Path, tokenizer: Tokenizer) -> None:
    src = tmp_path / "in.mp4"
    src.write_bytes(long_video.read_bytes())
    before = digest(src)
    out = tmp_path / "out.itok"
    proc = subprocess.Popen([*CLI, "compress", src, out, "--model", tiny_weights, "--window", "5",
                             "--overlap", "0", "-q"], env=ENV, stderr=subprocess.DEVNULL)
    try:
        wait_for_output_fd(proc, tmp_path)
        time.sleep(0.05)  # well into the windows
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert sorted(os.listdir(tmp_path)) == ["in.mp4"], "kill -9 left a file behind"
    assert digest(src) == before
    # a killed decompress leaves nothing either
    compress_video(src, out, tokenizer, window=5, overlap=0)
    video = tmp_path / "back.mp4"
    proc = subprocess.Popen([*CLI, "decompress", out, video, "--model", tiny_weights, "-q"], env=ENV,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_output_fd(proc, tmp_path)
        time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert sorted(os.listdir(tmp_path)) == ["in.mp4", "out.itok"]


def kept_share(path: Path) -> float:
    with ItokReader(path) as r:
        r.verify()
        return sum(w.kept for w in r.windows) / sum(w.capacity for w in r.windows)


def test_two_compress_processes_one_output(tmp_path: Path, short_video: Path, tiny_weights: Path) -> None:
    """Without --force one wins and the other fails cleanly (exit 5); with --force both finish and the
    file is one of the two complete results, never a mix."""
    out = tmp_path / "out.itok"
    args = ["--model", tiny_weights, "--window", "9", "--overlap", "0", "--strategy", "window", "-q"]
    procs = [subprocess.Popen([*CLI, "compress", short_video, out, *args, "--beta", str(b)], env=ENV,
                              stderr=subprocess.PIPE, text=True) for b in (0.25, 1.0)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 5], results
    loser = next(err for code, err in results if code == 5)
    assert loser.startswith("error: ") and "already exists" in loser and "Traceback" not in loser
    assert kept_share(out) in (pytest.approx(0.25, abs=0.02), 1.0)  # a complete file of one writer
    assert sorted(os.listdir(tmp_path)) == ["out.itok"]

    procs = [subprocess.Popen([*CLI, "compress", short_video, out, *args, "--beta", str(b), "--force"], env=ENV,
                              stderr=subprocess.PIPE, text=True) for b in (0.25, 1.0)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0], [p.stderr.read() for p in procs]
    with ItokReader(out) as r:
        beta = r.header.beta
    # whole and self-consistent: the header of one run with the windows of the same run
    assert kept_share(out) == (pytest.approx(0.25, abs=0.02) if beta == 0.25 else 1.0)
    assert sorted(os.listdir(tmp_path)) == ["out.itok"]


def limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_full_disk_gives_a_clean_error_and_no_output(tmp_path: Path, long_video: Path,
                                                     tiny_weights: Path, tokenizer: Tokenizer) -> None:
    """RLIMIT_FSIZE stands in for a full disk: writes past it fail with EFBIG."""
    src = tmp_path / "in.mp4"
    src.write_bytes(long_video.read_bytes())
    before = digest(src)
    itok = tmp_path / "out.itok"
    proc = subprocess.run([*CLI, "compress", src, itok, "--model", tiny_weights, "--window", "9", "--overlap",
                           "0", "-q"], env=ENV, capture_output=True, text=True, timeout=600,
                          preexec_fn=limit_file_size(4096))
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1
    assert "File too large" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["in.mp4"] and digest(src) == before

    compress_video(src, itok, tokenizer, window=9, overlap=0)
    itok_before = digest(itok)
    video = tmp_path / "back.mp4"
    proc = subprocess.run([*CLI, "decompress", itok, video, "--model", tiny_weights, "-q"], env=ENV,
                          capture_output=True, text=True, timeout=600, preexec_fn=limit_file_size(8192))
    assert proc.returncode != 0 and proc.stderr.startswith("error: "), proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["in.mp4", "out.itok"] and digest(itok) == itok_before
    assert probe_video(src).num_frames == 240
