"""The public Python API on real videos and files: load, compress, decompress and the in-memory Tokenizer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import infotok_cli
from infotok_cli.api import Tokenizer
from infotok_cli.coding.compress import CompressResult
from infotok_cli.coding.decompress import iter_decoded
from infotok_cli.constants import CODEBOOK_SIZE
from infotok_cli.errors import ContainerError, WeightsError
from infotok_cli.format.reader import ItokReader, read_header_and_index
from infotok_cli.io.video import iter_frames, probe_video

OPTIONS = {"window": 17, "overlap": 3, "beta": 0.4}


@pytest.fixture(scope="module")
def tok(tiny_weights: Path) -> Tokenizer:
    return Tokenizer(tiny_weights, "cpu")


@pytest.fixture(scope="module")
def frames(moving_video: Path) -> np.ndarray:
    return np.stack(list(iter_frames(moving_video)))


@pytest.fixture(scope="module")
def coded(tmp_path_factory: pytest.TempPathFactory, moving_video: Path, tok: Tokenizer) -> dict[str, Path]:
    """moving.mp4 compressed through the API with each strategy."""
    folder = tmp_path_factory.mktemp("api")
    out = {}
    for strategy in ("window", "global", "video"):
        out[strategy] = folder / f"{strategy}.itok"
        infotok_cli.compress(moving_video, out[strategy], tokenizer=tok, strategy=strategy, **OPTIONS)
    return out


def test_compress_returns_the_cli_statistics(tmp_path: Path, moving_video: Path, tiny_weights: Path) -> None:
    out = tmp_path / "m.itok"
    stats = infotok_cli.compress(moving_video, out, model=tiny_weights, device="cpu", **OPTIONS)
    assert set(stats) == set(CompressResult.__dataclass_fields__)
    header, windows, size = read_header_and_index(out)
    assert stats["tokens_kept"] == sum(w.kept for w in windows) and stats["file_bytes"] == size
    assert (header.window, header.beta, header.strategy) == (17, 0.4, "global")
    with pytest.raises((FileExistsError, ContainerError), match="already exists"):
        infotok_cli.compress(moving_video, out, model=tiny_weights, device="cpu")
    assert infotok_cli.compress(moving_video, out, model=tiny_weights, device="cpu", force=True, beta=1.0)[
        "keep_rate"] == 1.0


def test_load_reads_header_windows_and_tokens(coded: dict[str, Path]) -> None:
    path = coded["window"]
    header, metas, _ = read_header_and_index(path)
    with infotok_cli.load(path) as tf:
        assert (tf.width, tf.height, tf.num_frames, tf.fps) == (48, 32, 21, 30)
        assert (tf.model_name, tf.weights_sha256) == (header.model_name, header.weights_sha256)
        assert (tf.window, tf.overlap, tf.beta, tf.strategy) == (17, 3, 0.4, "window")
        assert [(w.frame_start, w.frame_count) for w in tf.windows] == [(0, 17), (14, 7)]
        info = tf.info()
        assert info["latent_hw"] == list(header.latent_hw) and info["tokens_kept"] == tf.tokens_kept
        with ItokReader(path) as reader:
            for w, meta in zip(tf.windows, metas):
                rec = reader.read_window(meta.index)
                assert w.tokens.dtype == np.int32 and w.keep.dtype == bool
                assert w.tokens.shape == w.keep.shape == meta.latent_shape
                assert (w.tokens == -1).sum() == meta.capacity - meta.kept  # -1 exactly where dropped
                assert np.array_equal(w.keep, rec.keep_mask)
                assert np.array_equal(w.tokens[w.keep], rec.tokens.astype(np.int32))
                assert w.tokens[w.keep].max() < CODEBOOK_SIZE
                assert w.keep.reshape(w.keep.shape[0], -1).sum(1).tolist() == meta.kept_per_frame
    with infotok_cli.load(path) as tf:
        pass
    with pytest.raises(ValueError, match="closed"):
        tf.windows[0].keep  # noqa: B018 - not read while open, and the file is closed now


def test_sequence_is_latent_frame_major_raster_order(coded: dict[str, Path]) -> None:
    with infotok_cli.load(coded["window"]) as tf:
        for w in tf.windows:
            positions, tokens = w.sequence()
            assert positions.shape == (w.tokens_kept, 3) and tokens.shape == (w.tokens_kept,)
            assert positions.dtype == tokens.dtype == np.int32
            keys = [tuple(p) for p in positions.tolist()]
            assert keys == sorted(keys) and len(set(keys)) == len(keys)
            assert np.array_equal(tokens, w.tokens[tuple(positions.T)])
            assert np.bincount(positions[:, 0], minlength=w.latent_shape[0]).tolist() == w.kept_per_latent_frame


@pytest.mark.parametrize("strategy", ["window", "global", "video"])
def test_encode_in_memory_equals_compress(coded: dict[str, Path], frames: np.ndarray, tok: Tokenizer,
                                          strategy: str) -> None:
    encoded = tok.encode(frames, strategy=strategy, **OPTIONS)
    with infotok_cli.load(coded[strategy]) as tf:
        assert len(encoded.windows) == len(tf.windows)
        for a, b in zip(encoded.windows, tf.windows):
            assert (a.frame_start, a.frame_count, a.padded_frames) == (b.frame_start, b.frame_count, b.padded_frames)
            assert np.array_equal(a.keep, b.keep) and np.array_equal(a.tokens, b.tokens)
    assert (encoded.width, encoded.height, encoded.num_frames) == (48, 32, 21)


def test_decode_in_memory_equals_file_decoding(coded: dict[str, Path], frames: np.ndarray, tok: Tokenizer) -> None:
    with ItokReader(coded["window"]) as reader:
        from_file = np.stack(list(iter_decoded(reader, tok)))
    with infotok_cli.load(coded["window"]) as tf:
        assert np.array_equal(tok.decode(tf), from_file)
    decoded = tok.decode(tok.encode(frames, strategy="window", **OPTIONS))
    assert decoded.shape == frames.shape == (21, 32, 48, 3) and decoded.dtype == np.uint8
    assert np.array_equal(decoded, from_file)


def test_torch_frames_and_odd_sizes(tok: Tokenizer, odd_video: Path) -> None:
    frames = np.stack(list(iter_frames(odd_video)))  # 33x17: padded to the stride inside, cropped back
    a = tok.encode(frames, window=5, overlap=1)
    b = tok.encode(torch.from_numpy(frames), window=5, overlap=1)
    assert [np.array_equal(x.tokens, y.tokens) for x, y in zip(a.windows, b.windows)] == [True] * len(a.windows)
    assert tok.decode(b).shape == frames.shape


def test_bad_frames_and_wrong_model(tok: Tokenizer, frames: np.ndarray, other_weights: Path,
                                    coded: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="uint8"):
        tok.encode(frames.astype(np.float32))
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        tok.encode(frames[0])
    other = Tokenizer(other_weights, "cpu")
    with pytest.raises(WeightsError, match="--model"), infotok_cli.load(coded["window"]) as tf:
        other.decode(tf)
    with pytest.raises(WeightsError):
        other.decode(tok.encode(frames[:5], window=5, overlap=1))


def test_decompress(tmp_path: Path, coded: dict[str, Path], tiny_weights: Path, moving_video: Path) -> None:
    out = tmp_path / "out.mp4"
    stats = infotok_cli.decompress(coded["video"], out, model=tiny_weights, device="cpu")
    assert stats["frames"] == 21 and stats["output"] == str(out)
    a, b = probe_video(moving_video), probe_video(out)
    assert (b.num_frames, b.width, b.height) == (a.num_frames, a.width, a.height)


def test_import_stays_light() -> None:
    code = ("import sys, infotok_cli; assert 'torch' not in sys.modules; infotok_cli.load; "
            "assert 'torch' not in sys.modules and 'av' not in sys.modules; infotok_cli.Tokenizer; "
            "assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_input_options_and_a_stream_out(tmp_path: Path, moving_video: Path, tiny_weights: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line's --scale / --start / --duration and `-` with --format, as keyword arguments."""
    import io

    import av

    tok = Tokenizer(tiny_weights, "cpu")
    stats = infotok_cli.compress(moving_video, tmp_path / "cut.itok", tokenizer=tok, scale="24:-1", start=0.1,
                                 duration="0.5", **OPTIONS)
    assert (stats["frames"], stats["width"], stats["height"], stats["source_width"]) == (15, 24, 16, 48)
    buf = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(buf))
    stats = infotok_cli.decompress(tmp_path / "cut.itok", "-", tokenizer=tok, format="nut")
    assert stats["output"] == "-" and stats["file_bytes"] == len(buf.getvalue()) > 0
    with av.open(io.BytesIO(buf.getvalue()), format="nut") as c:
        assert sum(1 for _ in c.decode(video=0)) == 15
