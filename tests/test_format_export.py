"""`infotok export`: tokens and masks as plain .npz / .safetensors arrays, read back without infotok.

The tokens read through the API, the two export formats and `inspect --json` must agree exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from test_cli_app import assert_fails, infotok

import infotok_cli
from infotok_cli.format.reader import read_header_and_index


@pytest.fixture(scope="module")
def itok(tmp_path_factory: pytest.TempPathFactory, moving_video: Path, tiny_weights: Path) -> Path:
    out = tmp_path_factory.mktemp("export") / "moving.itok"
    infotok_cli.compress(moving_video, out, model=tiny_weights, device="cpu", window=17, beta=0.3,
                         strategy="window")
    return out


def load_npz(path: Path) -> tuple[dict, list[np.ndarray], list[np.ndarray], dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as z:  # plain numpy, no pickle, no infotok
        meta = json.loads(str(z["metadata"]))
        n = meta["windows"]
        tokens = [z[f"tokens_{i:06d}"] for i in range(n)]
        keep = [z[f"keep_{i:06d}"] for i in range(n)]
        index = {k: z[k] for k in ("frame_ranges", "padded_frames", "latent_shapes", "pts")}
    return meta, tokens, keep, index


def load_safetensors(path: Path) -> tuple[dict, list[np.ndarray], list[np.ndarray], dict[str, np.ndarray]]:
    with safe_open(str(path), framework="numpy") as f:
        meta = json.loads(f.metadata()["infotok"])
        n = meta["windows"]
        tokens = [f.get_tensor(f"tokens_{i:06d}") for i in range(n)]
        keep = [f.get_tensor(f"keep_{i:06d}") for i in range(n)]
        index = {k: f.get_tensor(k) for k in ("frame_ranges", "padded_frames", "latent_shapes", "pts")}
    return meta, tokens, keep, index


def test_api_exports_and_inspect_agree(itok: Path, tmp_path: Path) -> None:
    proc = infotok("inspect", itok, "--json")
    assert proc.returncode == 0, proc.stderr
    inspected = json.loads(proc.stdout)["windows"]
    exports = {}
    for fmt, reader in (("npz", load_npz), ("safetensors", load_safetensors)):
        out = tmp_path / f"tokens.{fmt}"
        proc = infotok("export", itok, out, "--json")
        assert proc.returncode == 0, proc.stderr
        described = json.loads(proc.stdout)
        assert (described["format"], described["windows"], described["file_bytes"]) == (fmt, 2, out.stat().st_size)
        exports[fmt] = reader(out)
    header, _, _ = read_header_and_index(itok)
    with infotok_cli.load(itok) as tf:
        api_windows = tf.windows
        for fmt, (meta, tokens, keep, index) in exports.items():
            assert (meta["format"], meta["weights_sha256"], meta["model_name"]) == (
                "infotok-tokens/1", header.weights_sha256, header.model_name), fmt
            assert (meta["fps"], meta["width"], meta["height"], meta["num_frames"]) == ("30/1", 48, 32, 21)
            assert meta["latent_hw"] == list(header.latent_hw) and meta["dropped_token"] == -1
            assert index["frame_ranges"].tolist() == [[w.frame_start, w.frame_count] for w in api_windows]
            assert index["latent_shapes"].tolist() == [list(w.latent_shape) for w in api_windows]
            assert index["pts"].tolist() == header.pts
            for w, t, k, ins in zip(api_windows, tokens, keep, inspected):
                assert t.dtype == np.int32 and k.dtype == bool
                assert np.array_equal(t, w.tokens) and np.array_equal(k, w.keep)  # token values
                assert np.array_equal(k, t >= 0)
                per_latent = k.reshape(k.shape[0], -1).sum(1).tolist()
                assert per_latent == w.kept_per_latent_frame == ins["kept_per_latent_frame"]
                assert int(k.sum()) == w.tokens_kept == ins["tokens_kept"]
                assert list(t.shape) == ins["latent_shape"]


def test_format_option_overrides_suffix_and_existing_output(itok: Path, tmp_path: Path) -> None:
    out = tmp_path / "tokens.bin"
    assert_fails(infotok("export", itok, out), 2, "--format")
    proc = infotok("export", itok, out, "--format", "safetensors", "-q")
    assert proc.returncode == 0 and proc.stdout == proc.stderr == ""
    with safe_open(str(out), framework="numpy") as f:
        assert "tokens_000001" in f.keys()
    before = out.read_bytes()
    assert_fails(infotok("export", itok, out, "--format", "npz"), 5, "--force")
    assert out.read_bytes() == before
    assert infotok("export", itok, out, "--format", "npz", "--force").returncode == 0
    assert load_npz(out)[0]["windows"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.bin"]


def test_bad_inputs(itok: Path, tmp_path: Path) -> None:
    assert_fails(infotok("export", tmp_path / "missing.itok", tmp_path / "x.npz"), 3)
    broken = tmp_path / "broken.itok"
    data = itok.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    assert_fails(infotok("export", broken, tmp_path / "x.npz"), 4)
    # A flipped byte inside the last window: the header and index are fine, the export fails part-way
    # and leaves nothing behind.
    _, windows, _ = read_header_and_index(itok)
    pos = windows[1].offset + windows[1].record_size - 6
    damaged = tmp_path / "damaged.itok"
    damaged.write_bytes(data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:])
    assert_fails(infotok("export", damaged, tmp_path / "x.npz"), 4, "window 1")
    assert_fails(infotok("export", itok, tmp_path / "x.npz", "--format", "hdf5"), 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.itok", "damaged.itok"]
