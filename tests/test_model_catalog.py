"""The model catalog: which installed weights a file needs, found by token identity, and files made by the
earlier shipped weights decoding as they did when they were made."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from infotok_cli.format.reader import read_header_and_index
from infotok_cli.io.video import iter_frames
from infotok_cli.model.catalog import (
    DEFAULT_MODEL,
    identity_of_installed,
    installed_path,
    model_for_file,
    models_with_identity,
)

DATA = Path(__file__).parent / "data"
EARLIER_FILE = DATA / "infotok-m-03445d4a.itok"  # made with infotok-m 03445d4a (shipped until 2026-12-07)
EARLIER_DECODED = DATA / "infotok-m-03445d4a.decoded.npz"  # its lossless decode, made the same day


@pytest.fixture()
def store(tmp_path, monkeypatch) -> Path:
    """An empty user model store."""
    monkeypatch.setenv("INFOTOK_HOME", str(tmp_path / "home"))
    folder = tmp_path / "home" / "models"
    folder.mkdir(parents=True)
    return folder


def test_identity_finds_the_weights_whatever_name_the_file_gives(store):
    sha = identity_of_installed("infotok-s")
    assert sha is not None and len(sha) == 64
    # a file that names another model (or one not installed) still finds the weights it was made with
    assert model_for_file("infotok-m", None, sha) == "infotok-s"
    assert model_for_file("gone-model", None, sha) == "infotok-s"
    # an explicit --model always wins; unknown weights fall back to the name, then the default
    assert model_for_file("infotok-m", "infotok-s", "0" * 64) == "infotok-s"
    assert model_for_file("infotok-s", None, "0" * 64) == "infotok-s"
    assert model_for_file("gone-model", None, "0" * 64) == DEFAULT_MODEL


def test_the_named_model_comes_first_among_equal_weights(store):
    shutil.copy(installed_path("infotok-s"), store / "my-copy.safetensors")
    sha = identity_of_installed("infotok-s")
    assert models_with_identity(sha, prefer="my-copy") == ["my-copy", "infotok-s"]
    assert model_for_file("my-copy", None, sha) == "my-copy"
    assert model_for_file("infotok-s", None, sha) == "infotok-s"


def test_a_file_of_the_earlier_default_weights_decodes_as_it_did(tmp_path):
    """infotok-m 03445d4a wrote this file; whatever infotok-m is now, `decompress` finds those weights
    (shipped under their own name once the default changed) and gives the same frames."""
    header, _, _ = read_header_and_index(EARLIER_FILE)
    assert header.model_name == "infotok-m" and header.weights_sha256.startswith("03445d4a")
    assert models_with_identity(header.weights_sha256), "the weights of infotok-m 03445d4a are not shipped"
    out = tmp_path / "rec.mkv"
    done = subprocess.run([sys.executable, "-m", "infotok_cli", "decompress", str(EARLIER_FILE), str(out),
                           "--lossless", "--device", "cpu", "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    decoded = np.stack(list(iter_frames(out))).astype(np.int16)
    expected = np.load(EARLIER_DECODED)["frames"].astype(np.int16)
    assert decoded.shape == expected.shape
    # the same weights and tokens; float rounding may differ between CPUs by a grey level at most
    assert np.abs(decoded - expected).max() <= 2
    assert np.abs(decoded - expected).mean() < 0.05
