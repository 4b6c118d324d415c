"""Training end to end on tiny generated videos: a few real optimiser steps, resume, and DDP via torchrun."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from infotok_cli import train
from infotok_cli.model.store import load_model

TINY = dict(channels_quarter=8, channels_eighth=8, latent_dim=16, width=16, heads=2, compressor_layers=1,
            decompressor_layers=1)
SETTINGS = dict(model=TINY, crops=[[16, 16]], batch=2, clip_frames=5, val_fraction=0.5, warmup=1,
                log_every=1, val_every=2, checkpoint_every=2, seed=0)


@pytest.fixture(scope="module")
def clips(make_shared_video) -> list[Path]:
    """Two short videos from different 'sources' (so the split puts one in validation)."""
    return [make_shared_video(32, 24, 12, "train-alpha.mp4"),
            make_shared_video(24, 16, 9, "train-beta.mp4", kind="ramp")]


def tiny_config(tmp_path: Path, clips: list[Path], **kwargs) -> train.TrainConfig:
    return train.config_from_dict({**SETTINGS, "data": [str(c) for c in clips], "steps": 3,
                                   "out": str(tmp_path / "m.safetensors"), "run_dir": str(tmp_path / "run"),
                                   **kwargs})


def test_config_from_dict_validates() -> None:
    cfg = train.config_from_dict({"crops": [[16, 32]], "rates": [1, 0.5], "model": TINY})
    assert cfg.crops == ((16, 32),) and cfg.rates == (1.0, 0.5)
    for bad in ({"nope": 1}, {"crops": [[15, 16]]}, {"clip_frames": 6}, {"crops": "16x16"}, {"lr": 0},
                {"lpips_weight": -0.1}, {"lpips_frames": 0}, {"code_usage_weight": -1}, {"placement": "best"},
                {"pixel_loss": "l2"}, {"precision": "fp8"}):
        with pytest.raises(ValueError):
            train.config_from_dict(bad)


def test_clips_per_step_follows_batch_pixels() -> None:
    fixed = train.config_from_dict({"batch": 6, "clip_frames": 17})
    assert train.clips_per_step(fixed, 128, 128) == 6
    by_pixels = train.config_from_dict({"batch_pixels": 2 * 17 * 128 * 128, "clip_frames": 17})
    assert train.clips_per_step(by_pixels, 128, 128) == 2
    assert train.clips_per_step(by_pixels, 64, 64) == 8
    assert train.clips_per_step(by_pixels, 256, 256) == 1  # never zero, even when one clip is too big


def test_train_writes_loadable_weights_and_resumes(tmp_path: Path, clips: list[Path]) -> None:
    messages: list[str] = []
    cfg = tiny_config(tmp_path, clips)
    summary = train.run(cfg, progress=False, echo=messages.append)
    assert summary["steps"] == 3 and summary["e_ref"] > 0
    loaded = load_model(cfg.out)
    assert loaded.e_ref == pytest.approx(summary["e_ref"]) and loaded.e_ref > 0
    # The probes send half the tokens: their error where a token is sent is at least the full-rate one.
    assert loaded.e_ref_probe == pytest.approx(summary["e_ref_probe"]) and loaded.e_ref_probe >= loaded.e_ref * 0.9
    assert loaded.config.channels_eighth == 8 and loaded.config.width == 16
    assert loaded.metadata["training"]["steps"] == 3
    assert len(summary["train_clips"]) == 1 and len(summary["val_clips"]) == 1
    assert summary["clips_per_step"] == {f"{h}x{w}": cfg.batch for h, w in cfg.crops}
    ckpt = Path(cfg.run_dir) / "checkpoint.safetensors"
    assert ckpt.is_file() and (Path(cfg.run_dir) / "log.txt").is_file()

    # Resume: continues from step 3 instead of starting over.
    messages.clear()
    cfg2 = dataclasses.replace(cfg, steps=5, resume=True, out=str(tmp_path / "m2.safetensors"))
    summary2 = train.run(cfg2, progress=False, echo=messages.append)
    assert any("resumed" in m and "step 3" in m for m in messages), messages
    assert summary2["steps"] == 5
    assert sum(1 for m in messages if m.startswith("step ")) == 2  # only steps 4 and 5 ran
    assert load_model(cfg2.out).metadata["training"]["steps"] == 5


@pytest.mark.ddp
def test_torchrun_two_processes(tmp_path: Path, clips: list[Path]) -> None:
    """`torchrun --nproc_per_node 2 -m infotok_cli train ...` (gloo on the CPU).

    Every clip at full rate is the case that used to break DDP on the second step (the dropped-token
    embedding got no gradient); the masked path runs in the single-process test above.
    """
    settings = tmp_path / "tiny.json"
    settings.write_text(json.dumps({**SETTINGS, "batch": 1, "rates": [1.0]}))
    out = tmp_path / "ddp.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "infotok_cli", "train", *map(str, clips), "--out", str(out), "--steps", "2",
           "--run-dir", str(tmp_path / "run"), "--config", str(settings), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = load_model(out)
    assert loaded.e_ref > 0
    assert loaded.metadata["training"]["processes"] == 2
    assert loaded.metadata["training"]["steps"] == 2


def _params(path: str) -> dict:
    model = load_model(path).model
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_stages_train_the_right_parameters(tmp_path: Path, clips: list[Path]) -> None:
    """base trains only the base tokenizer (adaptive branches stay at their zero start, so the shipped
    model equals the base); adaptive then trains only the adaptive path from those weights."""
    base = tiny_config(tmp_path, clips, stage="base", run_dir=str(tmp_path / "run-base"),
                       out=str(tmp_path / "base.safetensors"))
    summary = train.run(base, progress=False, echo=lambda _m: None)
    assert summary["stage"] == "base"
    after_base = _params(base.out)
    fresh = train.InfoTok(train.ModelConfig.from_dict(TINY))
    base_keys = {k for k in after_base if k.split(".")[0] in ("encoder", "to_code", "from_code", "decoder")}
    assert all(not after_base[k].any() for k in after_base if k.startswith(("compressor_out", "decompressor_out")))
    assert any(not after_base[k].equal(fresh.state_dict()[k]) for k in base_keys)

    adaptive = tiny_config(tmp_path, clips, stage="adaptive", init_from=base.out,
                           run_dir=str(tmp_path / "run-adaptive"), out=str(tmp_path / "adaptive.safetensors"))
    summary = train.run(adaptive, progress=False, echo=lambda _m: None)
    assert summary["init_from_sha256"] == load_model(base.out).sha256
    after_adaptive = _params(adaptive.out)
    assert all(after_adaptive[k].equal(after_base[k]) for k in base_keys)  # frozen
    changed = [k for k in after_adaptive if k not in base_keys and not after_adaptive[k].equal(after_base[k])]
    assert any(k.startswith("decompressor_out") for k in changed)


def test_time_budget_ends_the_run(tmp_path: Path, clips: list[Path]) -> None:
    cfg = tiny_config(tmp_path, clips, steps=10_000, minutes=0.001)  # 60 ms: ends after the first step
    summary = train.run(cfg, progress=False, echo=lambda _m: None)
    assert 1 <= summary["steps"] < 10_000
    assert load_model(cfg.out).metadata["training"]["steps"] == summary["steps"]


def test_unknown_stage_is_rejected() -> None:
    with pytest.raises(ValueError, match="stage"):
        train.config_from_dict({"stage": "everything"})


def test_lpips_term_is_a_differentiable_distance_over_sampled_frames() -> None:
    from infotok_cli.eval.perceptual import load_stlpips

    lpips = load_stlpips("alex")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 5, 32, 32, generator=gen) * 2 - 1
    rng = random.Random(0)
    assert train.lpips_term(lpips, x, x, 3, rng).item() == pytest.approx(0, abs=1e-6)
    y = (x + 0.3 * torch.randn(x.shape, generator=gen)).clamp(-1, 1).requires_grad_(True)
    value = train.lpips_term(lpips, y, x, 3, rng)
    value.backward()
    assert value.item() > 0.01
    touched = (y.grad.abs().sum(dim=(0, 1, 3, 4)) > 0).tolist()
    assert sum(touched) == 3  # only the three sampled frames carry a gradient
    assert train.lpips_term(lpips, y, x, 99, rng).item() > 0  # more frames asked than exist: all of them


def test_pixel_losses() -> None:
    x = torch.zeros(2, 3, 5, 4, 4)
    y = x.clone()
    y[0, 0, 0, 0, 0] = 0.8  # one large error among small ones: RMSE weighs it more than L1 does
    y[1] += 0.1
    n = x.numel()
    assert train.pixel_loss(y, x, "l1").item() == pytest.approx((0.8 + 0.1 * n / 2) / n)
    rmse = train.pixel_loss(y, x, "rmse")
    assert rmse.item() == pytest.approx(((0.64 + 0.01 * n / 2) / n) ** 0.5, rel=1e-4)
    y.requires_grad_(True)
    train.pixel_loss(y, x, "rmse").backward()
    assert y.grad[0, 0, 0, 0, 0] / y.grad[1, 0, 0, 0, 0] == pytest.approx(8.0, rel=1e-4)  # proportional to error
    exact = x.clone().requires_grad_(True)
    train.pixel_loss(exact, x, "rmse").backward()
    assert torch.isfinite(exact.grad).all()  # no NaN at zero error


def test_train_with_lpips_and_code_usage_terms(tmp_path: Path, clips: list[Path]) -> None:
    cfg = tiny_config(tmp_path, clips, crops=[[24, 24]], lpips_weight=0.1, lpips_frames=2, code_usage_weight=0.05,
                      steps=2)
    summary = train.run(cfg, progress=False, echo=lambda _m: None)
    assert summary["steps"] == 2 and load_model(cfg.out).metadata["training"]["steps"] == 2


@pytest.mark.parametrize("placement", ["drop-gain", "probe-gain"])
def test_train_with_gain_placements(tmp_path: Path, clips: list[Path], placement: str) -> None:
    cfg = tiny_config(tmp_path, clips, placement=placement, rates=[0.5], steps=2, pixel_loss="rmse")
    summary = train.run(cfg, progress=False, echo=lambda _m: None)
    assert summary["steps"] == 2 and load_model(cfg.out).metadata["training"]["steps"] == 2


def test_router_score_placements() -> None:
    """`error` is the full-rate error itself; `drop-gain` is a different score of the same shape."""
    from infotok_cli.coding.router import position_error
    from infotok_cli.model import InfoTok, ModelConfig

    torch.manual_seed(0)
    model = InfoTok(ModelConfig.from_dict(TINY)).eval()
    x = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    with torch.no_grad():
        codes, _ = model.encode(x)
        error = train.router_score(model, x, codes, "error")
        gain = train.router_score(model, x, codes, "drop-gain")
    torch.testing.assert_close(error, position_error(x, model.decode(codes)))
    assert gain.shape == error.shape and torch.isfinite(gain).all() and not torch.equal(gain, error)


def test_init_from_can_grow_the_model(tmp_path: Path, clips: list[Path]) -> None:
    first = tiny_config(tmp_path, clips, steps=1, run_dir=str(tmp_path / "run-a"), out=str(tmp_path / "a.safetensors"))
    train.run(first, progress=False, echo=lambda _m: None)
    messages: list[str] = []
    deeper = tiny_config(tmp_path, clips, steps=1, init_from=first.out, model={**TINY, "decompressor_layers": 2,
                                                                          "decoder_blocks_eighth": 3},
                         run_dir=str(tmp_path / "run-b"), out=str(tmp_path / "b.safetensors"))
    train.run(deeper, progress=False, echo=messages.append)
    assert any("grew the model" in m for m in messages), messages
    grown = load_model(deeper.out).config
    assert grown.decompressor_layers == 2 and grown.decoder_blocks_eighth == 3
    wider = tiny_config(tmp_path, clips, steps=1, init_from=first.out, model={**TINY, "width": 32},
                        run_dir=str(tmp_path / "run-c"), out=str(tmp_path / "c.safetensors"))
    with pytest.raises(ValueError, match="only the depths"):
        train.run(wider, progress=False, echo=lambda _m: None)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
def test_validation_runs_on_the_model_device_in_the_run_precision(monkeypatch: pytest.MonkeyPatch,
                                                                   device: str) -> None:
    """validate and reference_errors move the (CPU) clips to the model's device and run in the run's
    precision: no CPU autocast when the run is float32, whatever the device."""
    from infotok_cli.coding.precision import Precision
    from infotok_cli.model import InfoTok, ModelConfig

    torch.manual_seed(0)
    model = InfoTok(ModelConfig.from_dict(TINY)).to(device).eval()
    seen: list[tuple[str, bool]] = []
    decode = model.decode

    def watched_decode(codes: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        seen.append((codes.device.type, torch.is_autocast_enabled("cpu")))
        return decode(codes, *args, **kwargs)

    monkeypatch.setattr(model, "decode", watched_decode)
    clips = [torch.rand(1, 3, 5, 16, 16) * 2 - 1]
    fp32 = Precision("fp32", device, "asked for")
    scores = train.validate(model, clips, (1.0, 0.5), fp32, "probe-gain")
    e_ref, e_ref_probe = train.reference_errors(model, clips, fp32)
    assert seen and all(kind == device and not autocast for kind, autocast in seen)
    assert 0 < scores["psnr@1"] < 99 and e_ref > 0 and e_ref_probe > 0
