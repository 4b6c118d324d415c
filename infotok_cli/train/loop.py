"""The training loop: one process or many (torch.distributed DDP; launch with torchrun; gloo on CPU,
nccl on GPU), the learning-rate schedule, checkpoints (safetensors, no pickle) in the run directory
(`resume=True` continues from the latest one) and the final weights with their summary."""

from __future__ import annotations

import copy
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..coding.metrics import ssim_loss
from ..coding.precision import resolve_precision
from ..model.catalog import sha256_file
from ..model.config import ModelConfig
from ..model.infotok import InfoTok, count_parameters, grow
from ..model.store import load_model, save_weights
from .config import TrainConfig
from .data import ClipSampler, clips_per_step, find_videos, fixed_windows, load_clip, split_train_val
from .objective import FlexObjective, as_frames, lpips_term, pixel_loss, psnr_pm1, reference_errors, validate


def schedule_progress(step: int, seconds: float, cfg: TrainConfig) -> float:
    """Fraction of the run done: by steps, or by training time when `minutes` sets a time budget
    (then the cosine schedule fits whatever speed the machine gives)."""
    by_steps = step / cfg.steps
    return max(by_steps, seconds / (60 * cfg.minutes)) if cfg.minutes > 0 else by_steps


def lr_at(step: int, cfg: TrainConfig, progress: float | None = None) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if progress is None:
        progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    progress = min(1.0, progress)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, step: int, model: nn.Module, ema: nn.Module, opt: torch.optim.Optimizer,
                    cfg: TrainConfig, history: dict) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors |= {f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}
    for i, p in enumerate(opt.param_groups[0]["params"]):
        for key, value in opt.state.get(p, {}).items():
            tensors[f"opt.{i}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous().reshape(value.shape)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"step": str(step), "train_config": json.dumps(asdict(cfg)),
                                           "history": json.dumps(history)})
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: nn.Module, ema: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, dict]:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    for i, p in enumerate(opt.param_groups[0]["params"]):
        state = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"opt.{i}.")}
        if state:
            opt.state[p] = state
    return int(meta["step"]), json.loads(meta.get("history", "{}"))


# ----------------------------------------------------------------------------- main loop


def run(cfg: TrainConfig, progress: bool | None = None, echo: Callable[[str], None] = print) -> dict:
    """Train (or resume) and write the final weights to cfg.out; returns the training summary."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    is_main = rank == 0
    log = echo if is_main else (lambda _msg: None)
    precision = resolve_precision(cfg.precision, device)
    log(f"precision {precision.name} ({precision.reason})")
    torch.manual_seed(cfg.seed + rank)

    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    files = find_videos(cfg.data)
    if not files:
        raise FileNotFoundError("no training videos found")
    train_files, val_files = split_train_val(files, cfg.val_fraction, cfg.val_clips)
    log(f"data: {len(train_files)} training clips, {len(val_files)} held back for validation")
    if is_main:
        (run_dir / "split.json").write_text(json.dumps(
            {"train": [f.name for f in train_files], "val": [f.name for f in val_files]}, indent=1))
    t_load = time.time()
    train_videos = [load_clip(f, cfg.max_frames_per_video) for f in train_files]
    val_videos = [load_clip(f, cfg.max_frames_per_video) for f in val_files]
    log(f"decoded {sum(v.shape[0] for v in train_videos)} training frames in {time.time() - t_load:.0f}s")
    sampler = ClipSampler(train_videos, cfg, seed=cfg.seed * 1000 + rank)
    val_clips = fixed_windows(val_videos, cfg.val_frames, cfg.val_size)
    e_ref_clips = fixed_windows(train_videos, 17, 256)

    if cfg.init_from:
        start = load_model(cfg.init_from)
        model = start.model.to(device).train()
        wanted = ModelConfig.from_dict({**model.cfg.to_dict(), **cfg.model})
        if wanted != model.cfg:  # only a deeper model (or one attending both ways) continues from weights
            before = model.cfg.to_dict()
            model = grow(model, wanted).train()
            changed = {k: v for k, v in wanted.to_dict().items() if v != before[k]}
            log(f"grew the model: {changed} (new blocks start as the identity)")
        log(f"initialised from {cfg.init_from} (sha256 {start.sha256[:16]}...)")
    else:
        model = InfoTok(ModelConfig.from_dict(cfg.model)).to(device)
    model.adaptive = cfg.stage != "base"
    trained = model.adaptive_parameters() if cfg.stage == "adaptive" else (
        model.base_parameters() if cfg.stage == "base" else list(model.parameters()))
    trained_ids = {id(p) for p in trained}
    for p in model.parameters():
        p.requires_grad_(id(p) in trained_ids)
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(trained, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    step, history = 0, {"val": [], "train_seconds": 0.0}
    ckpt = run_dir / "checkpoint.safetensors"
    if cfg.resume and ckpt.exists():
        step, history = load_checkpoint(ckpt, model, ema, opt)
        log(f"resumed from {ckpt} at step {step}")
    objective: nn.Module = FlexObjective(model, cfg.code_range_weight, cfg.code_usage_weight, cfg.placement)
    lpips = None
    if cfg.lpips_weight > 0:
        from ..eval.perceptual import load_stlpips  # the metric's module; only loaded when the term is on

        lpips = load_stlpips("alex", device)  # frozen
    if distributed:
        objective = nn.parallel.DistributedDataParallel(objective)
    log(f"model {model.cfg.name}: {count_parameters(model) / 1e6:.2f}M parameters, stage {cfg.stage} trains "
        f"{sum(p.numel() for p in trained) / 1e6:.2f}M; {world} process(es)")

    rate_rng = random.Random(cfg.seed * 7919 + rank + step)
    frame_rng = random.Random(cfg.seed * 104729 + rank + step)  # the ST-LPIPS term's frames
    sampler.rng.seed(cfg.seed * 1000 + rank + 7 * step)
    with ExitStack() as stack:  # the log file is closed however the run ends
        log_file = stack.enter_context(open(run_dir / "log.txt", "a")) if is_main else None
        show = sys.stdout.isatty() if progress is None else progress
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                       TextColumn("{task.fields[info]}"), TimeRemainingColumn(), disable=not (show and is_main))
        task = bar.add_task("train", total=cfg.steps, completed=step, info="")
        window_loss, window_psnr, t_window, clips_done = [], [], time.time(), 0
        t_start = time.time()
        with bar:
            while True:
                elapsed = history["train_seconds"] + time.time() - t_start
                done = schedule_progress(step, elapsed, cfg)  # fraction of the run done
                if distributed:  # every process stops at the same step
                    flag = torch.tensor([done], device=device)
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    done = flag.item()
                if done >= 1:
                    break
                model.train()
                for g in opt.param_groups:
                    g["lr"] = lr_at(step, cfg, done if cfg.minutes > 0 else None)
                x = sampler.sample().to(device)
                rates = [rate_rng.choice(cfg.rates) for _ in range(x.shape[0])]
                with precision.autocast():
                    y, penalty = objective(x, rates)
                y = y.float()
                frames_y, frames_x = as_frames(y), as_frames(x)
                loss = pixel_loss(y, x, cfg.pixel_loss) + penalty
                if cfg.ssim_weight:
                    loss = loss + cfg.ssim_weight * ssim_loss(frames_y, frames_x)
                if lpips is not None:
                    with precision.autocast():
                        perceptual = lpips_term(lpips, y, x, cfg.lpips_frames, frame_rng)
                    loss = loss + cfg.lpips_weight * perceptual.float()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
                opt.step()
                step += 1
                decay = min(cfg.ema_decay, (1 + step) / (10 + step))
                with torch.no_grad():
                    for pe, pm in zip(ema.parameters(), model.parameters()):
                        pe.lerp_(pm.detach(), 1 - decay)
                window_loss.append(loss.item())
                window_psnr.append(psnr_pm1(y.detach(), x))
                clips_done += x.shape[0] * world
                if step % cfg.log_every == 0 or step == cfg.steps:
                    rate = clips_done / (time.time() - t_window)
                    info = f"loss {np.mean(window_loss):.4f} psnr {np.mean(window_psnr):.2f} {rate:.1f} clips/s"
                    bar.update(task, completed=step, info=info)
                    if log_file:
                        log_file.write(f"step {step} lr {opt.param_groups[0]['lr']:.2e} {info}\n")
                        log_file.flush()
                    if not show:
                        log(f"step {step}/{cfg.steps} {info}")
                    window_loss, window_psnr, t_window, clips_done = [], [], time.time(), 0
                last = schedule_progress(step, history["train_seconds"] + time.time() - t_start, cfg) >= 1
                if is_main and (step % cfg.val_every == 0 or last) and val_clips:
                    scores = validate(ema, val_clips, (1.0, 0.5, 0.25), precision, cfg.placement)
                    history["e_ref_estimate"], history["e_ref_probe_estimate"] = reference_errors(
                        ema, e_ref_clips[:24], precision)
                    history["val"].append({"step": step, **scores})
                    msg = f"val step {step}: " + " ".join(f"{k} {v:.2f}" for k, v in scores.items())
                    log(msg)
                    if log_file:
                        log_file.write(msg + "\n")
                        log_file.flush()
                if is_main and (step % cfg.checkpoint_every == 0 or last):
                    history["train_seconds"] += time.time() - t_start
                    t_start = time.time()
                    save_checkpoint(ckpt, step, model, ema, opt, cfg, history)
                    if history["val"]:  # EMA weights as of now, loadable before the run ends
                        save_weights(run_dir / "ema-latest.safetensors", ema, history.get("e_ref_estimate", 0.0),
                                     {"steps": step, "stage": cfg.stage, "last_val": history["val"][-1]},
                                     history.get("e_ref_probe_estimate"))

        summary: dict = {}
        if is_main:
            ema.adaptive = True  # the shipped model always has its adaptive path (identity after a base stage)
            e_ref, e_ref_probe = reference_errors(ema, e_ref_clips, precision)
            summary = {
                "steps": step,
                "train_seconds": round(history["train_seconds"], 1),
                "processes": world,
                # per crop shape: with batch_pixels a larger crop takes fewer clips
                "clips_per_step": {f"{h}x{w}": clips_per_step(cfg, h, w) * world for h, w in cfg.crops},
                "train_clips": [f.name for f in train_files],
                "val_clips": [f.name for f in val_files],
                "last_val": history["val"][-1] if history["val"] else {},
                "e_ref": e_ref,
                "e_ref_probe": e_ref_probe,
                "stage": cfg.stage,
                "init_from_sha256": sha256_file(cfg.init_from) if cfg.init_from else "",
                "train_config": {k: v for k, v in asdict(cfg).items() if k not in ("data", "out", "run_dir")},
            }
            sha = save_weights(cfg.out, ema, e_ref, summary, e_ref_probe)
            log(f"wrote {cfg.out} (sha256 {sha[:16]}..., e_ref {e_ref:.5f}, e_ref_probe {e_ref_probe:.5f})")
            if log_file:
                log_file.write(json.dumps(summary) + "\n")
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return summary
