"""The router head's training chain (`python -m infotok_cli.train.router_head`): window data, head training,
attaching, evaluation, rate curves and their fit, run for real on a tiny random model and small clips."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model, write_video
from safetensors.torch import load_file

from infotok_cli.model.router_head import FEATURES, load_head_file
from infotok_cli.model.store import load_model, save_weights
from infotok_cli.train.router_head import curve_fit, fit
from infotok_cli.train.router_head.__main__ import COMMANDS, command, main
from infotok_cli.train.router_head.data import scaled_crop

SIZE = "32"  # window side: small enough for a tiny model on a busy CPU
VAL = "0.5"  # --val-fraction of fit and curve-fit: with these clip names both sides get windows


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("router-corpus")
    for i, kind in enumerate(("moving", "ramp", "noise", "moving", "ramp", "static")):
        write_video(folder / f"clip{i}.mp4", 48, 40, 21, kind=kind, seed=i)
    return folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("router-weights") / "tiny.safetensors"
    save_weights(path, tiny_model(seed=0), e_ref=0.1, e_ref_probe=0.12)
    return path


@pytest.fixture(scope="module")
def windows(tmp_path_factory: pytest.TempPathFactory, corpus: Path, weights: Path) -> Path:
    out = tmp_path_factory.mktemp("router-data")
    assert main(["data", "--data", str(corpus), "--out", str(out), "--model", str(weights), "--frames", "9",
                 "--size", SIZE, "--max-windows", "10", "--seed", "0"]) == 0
    return out


def train_head(windows: Path, out: Path, seed: int = 0) -> Path:
    # the learning rate follows a cosine over the wall-clock budget (--minutes): a budget of months keeps
    # it at its warm-up value however long the steps take, so two runs can be compared
    assert main(["fit", "--data", str(windows), "--out", str(out), "--max-steps", "6", "--eval-every", "3",
                 "--minutes", "1e5",
                 "--width", "8", "--pairs", "64", "--val-fraction", VAL, "--seed", str(seed)]) == 0
    return out


@pytest.fixture(scope="module")
def head_file(tmp_path_factory: pytest.TempPathFactory, windows: Path) -> Path:
    return train_head(windows, tmp_path_factory.mktemp("router-head") / "head.safetensors")


@pytest.fixture(scope="module")
def weights_with_head(tmp_path_factory: pytest.TempPathFactory, weights: Path, head_file: Path) -> Path:
    path = tmp_path_factory.mktemp("router-attached") / "with-head.safetensors"
    shutil.copy(weights, path)
    assert main(["attach", str(head_file), "--weights", str(path)]) == 0
    return path


def test_every_command_resolves_and_the_usage_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert all(callable(command(name)) for name in COMMANDS)
    assert main(["--help"]) == 0 and "curve-fit" in capsys.readouterr().out
    assert main(["nonsense"]) == 2 and "unknown command" in capsys.readouterr().err


def test_runs_as_a_module_without_path_tricks() -> None:
    proc = subprocess.run([sys.executable, "-m", "infotok_cli.train.router_head", "fit", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--recipe" in proc.stdout, proc.stderr


def test_scaled_crop_scales_crops_and_flips() -> None:
    frames = [np.random.default_rng(k).integers(0, 256, (40, 60, 3), dtype=np.uint8) for k in range(3)]
    video, crop = scaled_crop(frames, 40, 32, random.Random(0), flip=False)
    assert video.shape == (3, 32, 32, 3) and crop["scaled"] == [60, 40]
    x0, y0 = crop["crop"]
    assert np.array_equal(video[1], frames[1][y0:y0 + 32, x0:x0 + 32])
    flipped, same = scaled_crop(frames, 40, 32, random.Random(0), flip=True)
    assert same == crop and np.array_equal(flipped, video[:, :, ::-1])
    upscaled, crop = scaled_crop(frames, 64, 32, random.Random(1), flip=False)
    assert upscaled.shape == (3, 32, 32, 3) and crop["scaled"] == [96, 64]


def test_data_writes_the_heads_inputs_and_targets(windows: Path, weights: Path) -> None:
    files = sorted(windows.glob("w00_*.npz"))
    assert len(files) == 10 and not list(windows.glob("*.tmp.npz"))
    d = np.load(files[0])
    meta = json.loads(str(d["meta"]))
    grid = d["dropped"].shape  # [t, h, w] latent positions of a 9-frame 32x32 window
    assert grid == d["sent"].shape == d["full"].shape == d["half"].shape == (3, 4, 4)
    assert all(d[name].dtype == np.float16 and d[name].shape[1:] == grid for name in FEATURES)
    assert meta["probe_scale"] == pytest.approx(0.1 / 0.12) and meta["precision"] == "float32"
    assert (d["full"] >= 0).all() and d["half"].any() and not d["half"].all()
    window = fit.load_window(str(files[0]))
    assert window["x"].shape[0] == sum(d[name].shape[0] for name in FEATURES)
    assert abs(float(window["g"].mean())) < 1e-5  # the standardised probe-gain target


def test_fit_is_seeded_and_saves_a_loadable_head(windows: Path, head_file: Path, tmp_path: Path) -> None:
    head, summary = load_head_file(head_file)
    assert summary["recipe"] == "rank" and summary["train_windows"] > 0 and summary["val_windows"] > 0
    assert head.cfg.width == 8 and head.cfg.features == FEATURES
    log = [json.loads(line) for line in head_file.with_suffix(".log.jsonl").read_text().splitlines()]
    assert [m["step"] for m in log] == [3, 6]
    again = train_head(windows, tmp_path / "again.safetensors")
    first, second = load_file(head_file), load_file(again)
    # the same arguments and seed, the same head (up to the rounding of a learning rate within 1e-12)
    assert all(torch.allclose(first[k], second[k], rtol=0, atol=1e-6) for k in first)


def test_captured_and_the_pair_loss() -> None:
    gain = torch.arange(16.0)
    assert fit.captured(gain, gain, 0.25) == pytest.approx(1.0)
    assert fit.captured(-gain, gain, 0.25) < 0
    s = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    gen = torch.Generator().manual_seed(0)
    right = fit.pair_loss(s, s, 256, gen)
    wrong = fit.pair_loss(-s, s, 256, torch.Generator().manual_seed(0))
    assert right < wrong


def test_attach_and_eval(weights_with_head: Path, corpus: Path, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    loaded = load_model(weights_with_head)
    assert loaded.router_head is not None and loaded.router_head.cfg.width == 8
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(weights_with_head), "--clips", str(corpus / "clip0.mp4"), "--size", SIZE,
                 "--frames", "9", "--rates", "0.5", "--runs", "0", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["mean_psnr"]["0.5"]) == {"probe-gain", "error", "predicted", "random"}
    assert "| predicted minus probe-gain |" in capsys.readouterr().out


def test_curves_then_curve_fit_writes_the_rate_curve(weights_with_head: Path, corpus: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    lines = tmp_path / "curves.jsonl"
    assert main(["curves", "--data", str(corpus), "--out", str(lines), "--model", str(weights_with_head),
                 "--frames", "9", "--sizes", "32x32,32x48", "--minutes", "0.02", "--threads", "1"]) == 0
    rows = [json.loads(line) for line in lines.read_text().splitlines()]
    assert rows and all(len(r["psnr"]) == len(r["rates"]) == len(r["counts"]) for r in rows)
    while len(rows) < 8:  # enough windows on both sides of the split for a report, however slow the machine
        rows += rows
    lines.write_text("".join(json.dumps(r) + "\n" for r in rows))
    target = tmp_path / "curved.safetensors"
    shutil.copy(weights_with_head, target)
    capsys.readouterr()
    assert main(["curve-fit", "--data", str(lines), "--val-fraction", VAL, "--attach", str(target)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["train_windows"] + report["held_out_windows"] == len(rows)
    head = load_model(target).router_head
    assert head is not None and head.cfg.curve_rates == tuple(rows[0]["rates"])
    params = curve_fit.fit(rows, 1.0)
    assert np.allclose(head.curve_weight.numpy(), params["weight"], atol=1e-5)
