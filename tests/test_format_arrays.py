"""Exported arrays back into tokens (format/arrays.py): `Tokens.from_arrays`, `Geometry`, the export reader
behind `infotok pack`, `decompress` and `inspect`, and every kind of bad array refused with one line and
a documented exit code, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from test_cli_app import assert_fails, infotok

import infotok_cli as it
from infotok_cli.errors import ContainerError
from infotok_cli.format.arrays import ArraysReader, Geometry, window_arrays


@pytest.fixture(scope="module")
def itok(tmp_path_factory: pytest.TempPathFactory, moving_video: Path, tiny_weights: Path) -> Path:
    out = tmp_path_factory.mktemp("arrays") / "moving.itok"
    it.compress(moving_video, out, model=tiny_weights, device="cpu", window=17, beta=0.3, strategy="window")
    return out


@pytest.fixture(scope="module")
def npz(itok: Path) -> Path:
    out = itok.with_suffix(".npz")
    assert infotok("export", itok, out, "-q").returncode == 0
    return out


def arrays_of(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


def test_pack_of_an_export_is_the_file(itok: Path, npz: Path, tmp_path: Path, tiny_weights: Path) -> None:
    out = tmp_path / "packed.itok"
    proc = infotok("pack", npz, out, "--model", tiny_weights, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["windows"], report["frames"], report["file_bytes"]) == (2, 21, out.stat().st_size)
    assert out.read_bytes() == itok.read_bytes()  # same header, same windows, coded the same way
    assert_fails(infotok("pack", npz, out, "--model", tiny_weights), 5, "--force")


def test_inspect_and_geometry_of_an_export(itok: Path, npz: Path) -> None:
    a, b = (json.loads(infotok("inspect", p, "--json").stdout) for p in (itok, npz))
    assert b["summary"]["format_version"] == "infotok-tokens/1"
    for key in ("tokens_kept", "tokens_max", "frames", "model", "weights_sha256", "fps"):
        assert a["summary"][key] == b["summary"][key], key
    assert [w["kept_per_latent_frame"] for w in a["windows"]] == [w["kept_per_latent_frame"] for w in b["windows"]]
    assert a["token_entropy"]["distinct_codes"] == b["token_entropy"]["distinct_codes"]
    assert Geometry.from_file(npz) == Geometry.from_file(itok)


def test_generated_tokens_without_keep(npz: Path, tmp_path: Path, tiny_weights: Path,
                                       tokenizer: it.Tokenizer) -> None:
    """A wholly generated window with its own number of tokens: keep_<i> left out, the mask is tokens != -1."""
    arrays = arrays_of(npz)
    rng = np.random.default_rng(0)
    shape = arrays["tokens_000001"].shape
    generated = rng.integers(0, 64000, shape).astype(np.int32)
    generated[rng.random(shape) < 0.2] = -1
    arrays["tokens_000001"] = generated
    del arrays["keep_000001"]
    src = save_npz(tmp_path / "generated.npz", arrays)
    out = tmp_path / "generated.itok"
    assert infotok("pack", src, out, "--model", tiny_weights, "-q").returncode == 0
    with it.load(out) as tf:
        assert np.array_equal(tf.windows[1].tokens, generated)
        assert tf.windows[1].tokens_kept == int((generated >= 0).sum())
        assert np.array_equal(tf.windows[0].tokens, arrays["tokens_000000"])
        frames = tokenizer.decode(tf)
    assert frames.shape == (21, 32, 48, 3)


def test_tokens_from_arrays_and_sequences(npz: Path, tokenizer: it.Tokenizer, tmp_path: Path) -> None:
    geometry = it.Geometry.from_file(npz)
    with it.load(npz) as tf:
        tokens = [w.tokens for w in tf.windows]
        sequences = [w.sequence() for w in tf.windows]
        expected = tokenizer.decode(tf)
    by_tokens = it.Tokens.from_arrays(geometry, tokens)
    shuffled = [(p[::-1], c[::-1]) for p, c in sequences]  # any order: kept tokens are stored in raster order
    by_sequence = it.Tokens.from_arrays(geometry, sequences=shuffled)
    for t in (by_tokens, by_sequence):
        assert [np.array_equal(w.tokens, x) for w, x in zip(t.windows, tokens)] == [True, True]
        assert np.array_equal(tokenizer.decode(t), expected)
    # a new clip's geometry from the model: frame size, count and rate
    g = tokenizer.geometry(48, 32, 21, 30, window=17)
    assert g.latent_shapes == geometry.latent_shapes and g.header.weights_sha256 == tokenizer.sha256
    fresh = it.Tokens.from_arrays(g, sequences=[(np.argwhere(np.ones(s, bool)), np.full(np.prod(s), 7))
                                                for s in g.latent_shapes])
    assert fresh.keep_rate == 1.0 and fresh.fps == 30
    report = it.pack(fresh, tmp_path / "fresh.itok", model=tokenizer.loaded.path)
    assert report["tokens_kept"] == report["tokens_possible"]
    # tokens from encode carry no frame rate: pack asks for one
    with pytest.raises(ValueError, match="fps"):
        it.pack(tokenizer.encode(expected[:9], window=9), tmp_path / "enc.itok", model=tokenizer.loaded.path)
    enc = it.pack(tokenizer.encode(expected[:9], window=9), tmp_path / "enc.itok", model=tokenizer.loaded.path, fps=25)
    assert enc["frames"] == 9 and it.load(tmp_path / "enc.itok").fps == 25


@pytest.mark.parametrize("change, message", [
    (lambda t, k: (t.__setitem__((0, 0, 0), 64000), None), "outside the codebook"),
    (lambda t, k: (t.__setitem__((0, 0, 0), -2), None), "outside the codebook"),
    (lambda t, k: None, "tokens have shape"),
])
def test_window_arrays_refuses(change, message) -> None:
    shape = (2, 3, 4)
    tokens = np.zeros(shape, np.int32)
    change(tokens, None)
    if message == "tokens have shape":
        tokens = tokens[:, :2]
    with pytest.raises(ContainerError, match=message):
        window_arrays(0, shape, tokens)


def test_sequences_refused() -> None:
    shape = (2, 3, 4)
    pos = np.array([[0, 0, 0], [1, 2, 3]])
    keep, kept = window_arrays(0, shape, sequence=(pos[::-1], np.array([5, 9])))
    assert keep.sum() == 2 and kept.tolist() == [9, 5]
    for positions, codes, message in (
        (np.array([[0, 0, 0], [2, 0, 0]]), [1, 2], "outside the latent grid"),
        (np.array([[0, 0, 0], [0, 0, -1]]), [1, 2], "outside the latent grid"),
        (np.array([[0, 0, 0], [0, 0, 0]]), [1, 2], "more than once"),
        (pos, [1, 64000], "outside the codebook"),
        (pos[:, :2], [1, 2], r"\[k, 3\]"),
        (pos.astype(float), [1, 2], "must be integers"),
    ):
        with pytest.raises(ContainerError, match=message):
            window_arrays(0, shape, sequence=(positions, np.array(codes)))
    g = Geometry.for_video(16, 8, 5, 30, "m", "0" * 64, window=5, overlap=1)
    with pytest.raises(ContainerError, match="1 windows, but 2"):
        it.Tokens.from_arrays(g, [np.zeros((2, 1, 2), np.int32)] * 2)


def bad_variants(arrays: dict[str, np.ndarray]) -> list[tuple[str, dict[str, np.ndarray], str]]:
    """(name, arrays, message fragment) of each kind of bad export."""
    out = []

    def variant(name: str, message: str, **changes: np.ndarray | None) -> None:
        a = dict(arrays)
        for k, v in changes.items():
            if v is None:
                a.pop(k)
            else:
                a[k] = v
        out.append((name, a, message))

    t0 = arrays["tokens_000000"].copy()
    kept_at = tuple(np.argwhere(t0 >= 0)[0])
    t0[kept_at] = 64000
    variant("code", "outside the codebook", tokens_000000=t0)
    variant("shape", "has shape", tokens_000001=arrays["tokens_000001"][:, :-1])
    variant("missing", "window 1 is missing", tokens_000001=None, keep_000001=None)
    extra = arrays["tokens_000001"].copy()
    extra[extra == -1] = 3
    variant("disagree", "leave keep out", tokens_000001=extra)
    variant("float", "expected integers", tokens_000000=arrays["tokens_000000"].astype(np.float32))
    meta = json.loads(str(arrays["metadata"]))
    variant("no-metadata", "no infotok metadata", metadata=None)
    variant("model-hash", "weights_sha256", metadata=np.array(json.dumps({**meta, "weights_sha256": "x"})))
    variant("frames", "pts has shape", metadata=np.array(json.dumps({**meta, "num_frames": 22})))
    variant("windows", "beyond the 1 windows", metadata=np.array(json.dumps({**meta, "windows": 1})))
    variant("pickle", "expected integers", tokens_000000=np.array([{"a": 1}], dtype=object))
    return out


def test_bad_arrays_fail_with_one_line(npz: Path, tmp_path: Path, tiny_weights: Path) -> None:
    arrays = arrays_of(npz)
    bad = tmp_path / "bad"
    bad.mkdir()
    for name, variant, message in bad_variants(arrays):
        src = bad / f"{name}.npz"
        np.savez(src, allow_pickle=True, **variant) if name == "pickle" else save_npz(src, variant)
        if name in ("code", "pickle"):  # the command for two kinds (each run starts torch); the reader for all
            assert_fails(infotok("pack", src, tmp_path / f"{name}.itok", "--model", tiny_weights), 4, message)
        if name == "code":  # the same reading code behind decompress and inspect
            assert_fails(infotok("decompress", src, tmp_path / "x.mp4", "--model", tiny_weights), 4, message)
            assert_fails(infotok("inspect", src), 4, message)
        with pytest.raises(ContainerError, match=message):
            ArraysReader(src)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]
    # the same in a .safetensors file: a code outside the codebook, a missing window
    meta = str(arrays.pop("metadata"))
    t0 = arrays["tokens_000000"].copy()
    t0[t0 >= 0] = 70000
    for name, tensors, message in (("code", {**arrays, "tokens_000000": t0}, "outside the codebook"),
                                   ("missing", {k: v for k, v in arrays.items() if not k.endswith("01")},
                                    "window 1 is missing")):
        src = bad / f"{name}.safetensors"
        save_file(tensors, str(src), metadata={"infotok": meta})
        with pytest.raises(ContainerError, match=message):
            ArraysReader(src)
    assert_fails(infotok("pack", src, tmp_path / "x.itok", "--model", tiny_weights), 4, "window 1 is missing")
    truncated = bad / "truncated.npz"
    truncated.write_bytes(npz.read_bytes()[:-100])
    assert_fails(infotok("pack", truncated, tmp_path / "x.itok", "--model", tiny_weights), 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_model_not_at_hand(npz: Path, tmp_path: Path, other_weights: Path) -> None:
    """Arrays for weights nobody here has (the test model is not installed; other weights differ): exit 6."""
    out = tmp_path / "x.itok"
    assert_fails(infotok("pack", npz, out), 6, "infotok-test")
    assert_fails(infotok("pack", npz, out, "--model", other_weights), 6, "weights")
    assert_fails(infotok("pack", npz, out, "--model", tmp_path / "missing.safetensors"), 6, "not found")
    assert_fails(infotok("decompress", npz, tmp_path / "x.mp4"), 6)
    assert list(tmp_path.iterdir()) == []
