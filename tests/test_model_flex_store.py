"""Importing the released InfoTok-Flex weights and using them with the commands, on real files: the reduced
fixture model through the CLI end to end, and a random state dict of the full released size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
