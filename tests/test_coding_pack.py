"""`pack` with the shipped model on the shipped sample clips: export then pack gives the file back (tokens,
masks, reconstruction), changed codes change only the frames of their window, and `decompress` of an
export equals `decompress` of the .itok file it came from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_cli_app import infotok

import infotok_cli as it
from infotok_cli.io.files import export_tokens
from infotok_cli.io.video import iter_frames, probe_video

SAMPLES = sorted((Path(__file__).resolve().parent.parent / "samples").glob("*.mp4"))


@pytest.fixture(scope="module")
def shipped() -> it.Tokenizer:
    return it.Tokenizer("infotok-m", "cpu")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, shipped: it.Tokenizer) -> dict[str, Path]:
    """Every sample compressed in windows of 17 frames (three windows of the 33 frames)."""
    folder = tmp_path_factory.mktemp("pack")
    out = {}
    for video in SAMPLES:
        out[video.stem] = folder / f"{video.stem}.itok"
        shipped.compress_file(video, out[video.stem], window=17, overlap=3)
    return out


def test_every_sample_round_trips(clips: dict[str, Path], shipped: it.Tokenizer, tmp_path: Path) -> None:
    assert len(clips) == 4
    for name, itok in clips.items():
        with it.load(itok) as tf:
            expected = tf.windows
            frames = shipped.decode(tf)
        for fmt in ("npz", "safetensors"):
            arrays = tmp_path / f"{name}.{fmt}"
            export_tokens(itok, arrays)
            packed = tmp_path / f"{name}-{fmt}.itok"
            report = it.pack(arrays, packed)
            assert report["tokens_kept"] == sum(w.tokens_kept for w in expected)
            assert packed.read_bytes() == itok.read_bytes(), (name, fmt)  # no audio or quality chunk here
            with it.load(packed) as tf:
                for a, b in zip(expected, tf.windows, strict=True):
                    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.keep, b.keep)
        with it.load(tmp_path / f"{name}.npz") as tf:  # decoded straight from the arrays
            assert np.array_equal(shipped.decode(tf), frames), name


def test_changed_codes_change_only_their_window(clips: dict[str, Path], shipped: it.Tokenizer,
                                                tmp_path: Path) -> None:
    itok = clips["busy"]
    arrays = tmp_path / "busy.npz"
    export_tokens(itok, arrays)
    with np.load(arrays) as z:
        data = {k: z[k] for k in z.files}
    tokens = data["tokens_000001"]
    kept = np.flatnonzero(tokens >= 0)
    rng = np.random.default_rng(45)
    touched = rng.choice(kept, size=len(kept) // 10, replace=False)  # 10% of the window's kept codes
    tokens.reshape(-1)[touched] = rng.integers(0, 64000, len(touched))
    np.savez(arrays, **data)
    packed = tmp_path / "busy-changed.itok"
    it.pack(arrays, packed)
    with it.load(itok) as a, it.load(packed) as b:
        before, after = shipped.decode(a), shipped.decode(b)
        start, end = b.windows[1].frame_start, b.windows[1].frame_end
        assert np.array_equal(b.windows[1].tokens, tokens) and np.array_equal(b.windows[1].keep, a.windows[1].keep)
    differs = [not np.array_equal(x, y) for x, y in zip(before, after)]
    assert (start, end) == (14, 31)
    assert not any(differs[:start]) and not any(differs[end:])
    assert all(differs[start:end])


def test_decompress_of_an_export(clips: dict[str, Path], tmp_path: Path) -> None:
    itok = clips["static"]
    videos = {}
    for src in (itok, tmp_path / "static.npz", tmp_path / "static.safetensors"):
        if src != itok:
            export_tokens(itok, src)
        videos[src.suffix] = tmp_path / f"static-{src.suffix[1:]}.mp4"
        proc = infotok("decompress", src, videos[src.suffix], "-q")
        assert proc.returncode == 0, proc.stderr
    reference = list(iter_frames(videos[".itok"], probe_video(videos[".itok"])))
    assert len(reference) == 33
    for suffix in (".npz", ".safetensors"):
        assert videos[suffix].read_bytes() == videos[".itok"].read_bytes(), suffix
