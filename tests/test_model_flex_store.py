"""Importing the released InfoTok-Flex weights and using them with the commands, on real files: the reduced
fixture model through the CLI end to end, and a random state dict of the full released size."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from infotok_cli.errors import WeightsError
from infotok_cli.model import flex_store
from infotok_cli.model.flex import FlexConfig, FlexTokenizer

FIXTURE = Path(__file__).resolve().parent / "data" / "infotok-flex"
SMALL_CONFIG = FIXTURE / "small-config.json"


def save_like_the_release(sd: dict[str, torch.Tensor], path: Path) -> Path:
    """A checkpoint stored as the release stores it: {"model": {"network." + key}}, plus training entries."""
    torch.save({"model": {"network." + k: v for k, v in sd.items()}, "optimizer": {"step": torch.tensor(3)},
                "iteration": 1000}, path)
    return path


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("infotok-home")


@pytest.fixture(scope="module")
def env(home: Path) -> dict[str, str]:
    out = {**os.environ, "INFOTOK_HOME": str(home), "OMP_NUM_THREADS": "1"}
    out.pop("INFOTOK_DEBUG", None)
    return out


def infotok(env: dict[str, str], *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infotok_cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sd = load_file(FIXTURE / "small-weights.safetensors")
    return save_like_the_release(sd, tmp_path_factory.mktemp("ckpt") / "small.pt")


def test_imported_model_works_with_every_command(env: dict[str, str], home: Path, small_checkpoint: Path,
                                                  moving_video: Path, tmp_path: Path) -> None:
    proc = infotok(env, "models", "import", small_checkpoint, "--name", "flex-small", "--config", SMALL_CONFIG,
                   "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["architecture"] == "infotok-flex" and result["source_file"] == "small.pt"
    assert Path(result["path"]) == home / "models" / "flex-small.safetensors"
    assert infotok(env, "models", "import", small_checkpoint, "--name", "flex-small",
                   "--config", SMALL_CONFIG).returncode == 5  # exists: --force to replace
    assert json.loads(infotok(env, "models", "--json").stdout)["imported"] == ["flex-small"]

    itok, video = tmp_path / "m.itok", tmp_path / "m.mp4"
    proc = infotok(env, "compress", moving_video, itok, "--model", "flex-small", "--strategy", "window",
                   "--placement", "error", "--window", "17", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["keep_rate"] == pytest.approx(0.5, abs=0.02)
    summary = json.loads(infotok(env, "inspect", itok, "--json").stdout)["summary"]
    assert summary["model"] == "flex-small" and summary["weights_sha256"] == result["sha256"]
    assert infotok(env, "decompress", itok, video, "-q").returncode == 0 and video.stat().st_size > 0
    assert infotok(env, "export", itok, tmp_path / "m.npz").returncode == 0
    assert infotok(env, "visualize", itok, "-o", tmp_path / "v.mp4", "-q").returncode == 0
    proc = infotok(env, "decompress", itok, "-o", tmp_path / "batch", "-q")
    assert proc.returncode == 0 and (tmp_path / "batch" / "m.mp4").is_file(), proc.stderr

    assert infotok(env, "models", "remove", "flex-small").returncode == 0
    proc = infotok(env, "decompress", itok, tmp_path / "again.mp4")
    assert proc.returncode == 6 and "infotok models import CHECKPOINT --name flex-small" in proc.stderr
    assert not (tmp_path / "again.mp4").exists()


def test_import_refuses_mismatched_and_unsafe_files(env: dict[str, str], tmp_path: Path) -> None:
    sd = load_file(FIXTURE / "small-weights.safetensors")
    wrong = dict(sd)
    key = next(k for k in wrong if k.endswith(".weight") and wrong[k].ndim > 1)
    wrong[key] = torch.zeros(1, *wrong[key].shape[1:])
    proc = infotok(env, "models", "import", save_like_the_release(wrong, tmp_path / "wrong.pt"), "--name", "w",
                   "--config", SMALL_CONFIG)
    assert proc.returncode == 6 and key in proc.stderr and len(proc.stderr.splitlines()) == 1
    missing = {k: v for k, v in sd.items() if k != key}
    proc = infotok(env, "models", "import", save_like_the_release(missing, tmp_path / "missing.pt"), "--name", "w",
                   "--config", SMALL_CONFIG)
    assert proc.returncode == 6 and key in proc.stderr
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"model": {}, "hook": FlexConfig()}, unsafe)  # a class instance: needs a full unpickle
    proc = infotok(env, "models", "import", unsafe, "--name", "w", "--config", SMALL_CONFIG)
    assert proc.returncode == 6 and "full unpickle" in proc.stderr
    assert json.loads(infotok(env, "models", "--json").stdout)["imported"] == []


def test_safetensors_state_dict_imports(home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INFOTOK_HOME", str(tmp_path / "home"))
    src = tmp_path / "state.safetensors"
    save_file(load_file(FIXTURE / "small-weights.safetensors"), src)
    result = flex_store.import_checkpoint(src, "flex-st", config=SMALL_CONFIG, dtype="bfloat16")
    assert result["dtype"] == "bfloat16" and Path(result["path"]).is_file()
    with pytest.raises(ValueError, match="shipped model"):
        flex_store.import_checkpoint(src, "infotok-m", config=SMALL_CONFIG)
    with pytest.raises(WeightsError, match="no imported model"):
        flex_store.remove_model("nope")


def test_full_size_release_checkpoint_round_trip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                 moving_video: Path) -> None:
    """Random weights of the released size, stored as the release stores them, import and code a real clip."""
    from infotok_cli.api import Tokenizer

    monkeypatch.setenv("INFOTOK_HOME", str(tmp_path / "home"))
    manifest = json.loads((FIXTURE / "manifest-full.json").read_text())
    torch.manual_seed(0)
    model = FlexTokenizer(FlexConfig.from_release(manifest["config"]))
    sd = {k: torch.randn_like(v) * 0.02 for k, v in model.state_dict().items()}
    assert sum(v.numel() for k, v in sd.items() if manifest["state_dict"][k]["kind"] == "parameter") == 123_142_646
    ckpt = save_like_the_release(sd, tmp_path / "infotok_mse.pt")
    del model, sd
    result = flex_store.import_checkpoint(ckpt, "infotok-flex", dtype="bfloat16")
    assert result["parameters"] == 123_142_646
    tok = Tokenizer("infotok-flex", "cpu", placement="error", precision="fp32")
    stats = tok.compress_file(moving_video, tmp_path / "f.itok", strategy="window", window=9, overlap=1)
    assert stats.frames == 21 and 0.4 < stats.keep_rate < 0.6
    back = tok.decompress_file(tmp_path / "f.itok", tmp_path / "f.mp4")
    assert back.frames == 21


def test_calibrated_import_records_reference_errors(env: dict[str, str], small_checkpoint: Path, moving_video: Path,
                                                    monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`--calibrate DIR` measures e_ref and e_ref_probe on real clips (an unreadable one is left out with a
    notice), stores them in the weights' metadata, and loading the model by name returns them."""
    from infotok_cli.coding.tokenizer import Tokenizer
    from infotok_cli.io.video import iter_frames
    from infotok_cli.model.store import load_model, read_metadata

    env = {**env, "INFOTOK_HOME": str(tmp_path / "home")}
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "moving.mp4").write_bytes(moving_video.read_bytes())
    (clips / "broken.mov").write_bytes(b"\x00" * 64)
    (clips / "notes.txt").write_text("not a video")
    proc = infotok(env, "models", "import", small_checkpoint, "--name", "flex-cal", "--config", SMALL_CONFIG,
                   "--calibrate", clips, "--calibrate-frames", 21, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert "broken.mov" in proc.stderr and len(proc.stderr.splitlines()) == 1  # one notice
    cal = result["calibration"]
    # 21 frames of one clip: a full 17-frame window and a 4-frame one (padded as compress pads it)
    assert (cal["clips"], cal["windows"], cal["frames"], cal["window"], cal["sizes"]) == (1, 2, 21, 17, ["48x32"])
    assert cal["precision"] in ("fp32", "bf16") and len(cal["skipped"]) == 1
    for key in ("e_ref", "e_ref_probe"):
        assert math.isfinite(result[key]) and result[key] > 0

    meta = read_metadata(result["path"])
    assert float(meta["e_ref"]) == result["e_ref"] and float(meta["e_ref_probe"]) == result["e_ref_probe"]
    assert json.loads(meta["calibration"])["windows"] == 2
    monkeypatch.setenv("INFOTOK_HOME", env["INFOTOK_HOME"])
    loaded = load_model("flex-cal", "cpu")
    assert (loaded.e_ref, loaded.e_ref_probe) == (result["e_ref"], result["e_ref_probe"])
    assert loaded.metadata["calibration"]["frames_per_clip"] == 21

    # With the reference the global strategy rates windows against it, and probe-gain placement takes the
    # window's error from its probes (no full-rate decode).
    tok = Tokenizer(loaded, "cpu", placement="probe-gain", precision="fp32")
    assert tok.skips_full_decode and tok.router_passes == 3
    tokens = tok.encode(np.stack(list(iter_frames(moving_video))), strategy="global", window=17)
    assert tokens.num_frames == 21 and 0 < tokens.tokens_kept < tokens.tokens_possible


def test_calibration_refuses_an_empty_folder(env: dict[str, str], small_checkpoint: Path, tmp_path: Path) -> None:
    env = {**env, "INFOTOK_HOME": str(tmp_path / "home")}
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no clips here")
    base = ["models", "import", small_checkpoint, "--name", "flex-cal", "--config", SMALL_CONFIG]
    proc = infotok(env, *base, "--calibrate", empty)
    assert proc.returncode == 3 and proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1
    assert "no video files" in proc.stderr
    proc = infotok(env, *base, "--calibrate", tmp_path / "missing")
    assert proc.returncode == 3 and "folder not found" in proc.stderr and len(proc.stderr.splitlines()) == 1
    (empty / "broken.mp4").write_bytes(b"\x00" * 64)  # a video file, but none that can be read
    proc = infotok(env, *base, "--calibrate", empty)
    assert proc.returncode == 3 and "could be used" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert infotok(env, *base, "--calibrate-frames", 17).returncode == 2  # needs --calibrate
    assert not (tmp_path / "home" / "models" / "flex-cal.safetensors").exists()
