"""The runnable examples under examples/, run as users run them (a few steps instead of a minute)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_cli_app import ENV

import infotok_cli as it
from infotok_cli.io.video import probe_video

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_generate_tokens(tmp_path: Path) -> None:
    """Export a sample clip's tokens, fit the tiny next-token model for 2 steps, sample a window, decode it."""
    proc = subprocess.run([sys.executable, str(EXAMPLES / "generate_tokens.py"), "--steps", "2", "--clips", "1",
                           "--out", str(tmp_path)], capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "fitted 2 steps" in proc.stdout
    info = probe_video(tmp_path / "generated.mp4")
    assert (info.num_frames, info.width, info.height) == (33, 256, 256)
    with it.load(tmp_path / "generated.itok") as a, it.load(tmp_path / "generated.npz") as b:
        assert a.header == b.header
        assert all((x.tokens == y.tokens).all() for x, y in zip(a.windows, b.windows, strict=True))
