"""Training script for the InfoTok model, in stages as the paper trains it.

- `base`: the base tokenizer alone (encoder, code maps, decoder) at full rate, with the adaptive path
  switched off: no router pass, no masking, cheap steps. Most of the compute goes here.
- `adaptive`: the base is frozen; the compressor, decompressor and the dropped-position vector learn the
  Flex objective (below). Their zero-initialised output layers make the stage start at the base's
  quality.
- `full` (also the default, `flex`): everything trains with the Flex objective (the final fine-tune).
Between stages, `init_from` loads the previous stage's weights with a fresh optimiser; `model` overrides
may grow them on the way in (deeper transformers or decoder stages, attention both ways in time:
`model.grow`).

One Flex step: encode a batch of random clips, draw a keep rate per clip from `rates` (default
{1, 0.75, 0.5, 0.25}), keep the positions the router would keep (`placement`: "error", the largest
full-rate errors from a gradient-free decode of all tokens; "drop-gain", the largest drop gains from
that decode and two gradient-free probe decodes with a fresh random half each step; "probe-gain", the
probes alone, dropped minus sent error, unscaled since e_ref_probe is not known yet; router.py),
decode the kept tokens with gradients, and minimise
L1 + w x (1 - SSIM), optionally + w' x ST-LPIPS on a few frames per clip (`lpips_weight`; the paper
trains with 0.1 x LPIPS). `pixel_loss: "rmse"` swaps L1 for the batch's root mean squared error: the
same minimiser as MSE, so it aims at PSNR (L1 aims at the median error), with gradients of L1's scale,
so the other terms keep their weights.
Two FSQ terms keep the codebook in use: the range penalty (`code_range_weight`) and, optionally, a
usage penalty that spreads each digit's levels over the batch (`code_usage_weight`).

Runs on one process, or on many with torch.distributed (DDP; launch with torchrun; gloo on CPU,
nccl on GPU). Checkpoints are safetensors files (no pickle) in the run directory; `resume=True` continues
from the latest one. At the end the EMA weights, the config, e_ref and e_ref_probe (mean per-position
error over training data of the full-rate decode and of the drop-gain probes: reference_errors) and a
training summary are written to `out`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .codebook import token_entropy
from .metrics import ssim_loss
from .model import InfoTok, ModelConfig, count_parameters, grow
from .precision import PRECISIONS, Precision, resolve_precision
from .router import (
    PLACEMENTS,
    drop_gain,
    position_error,
    probe_errors,
    probe_half,
    tokens_for_rate,
    top_k_mask,
)
from .video_io import iter_frames
from .weights import load_model, save_weights, sha256_file

STAGES = ("base", "adaptive", "full")
PIXEL_LOSSES = ("l1", "rmse")
VIDEO_EXTENSIONS = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v"}


@dataclass
class TrainConfig:
    data: list[str] = field(default_factory=list)  # folders (searched recursively) or video files
    out: str = "model.safetensors"
    run_dir: str = "runs/train"
    resume: bool = False
    steps: int = 10000
    batch: int = 8  # clips per step (per process)
    clip_frames: int = 9  # 1 + 4k
    crops: tuple[tuple[int, int], ...] = ((64, 64), (48, 96), (96, 48), (80, 80))  # (H, W), several aspects
    downscale_prob: float = 0.25  # sometimes halve a clip first, to see zoomed-out content too
    rates: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)  # keep rates drawn per clip; repeat one to draw it more
    placement: str = "error"  # how training masks are placed: "error", "drop-gain" or "probe-gain" (router.py)
    lr: float = 1e-3
    min_lr: float = 2e-5
    warmup: int = 300
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    ema_decay: float = 0.999
    pixel_loss: str = "l1"  # "l1" or "rmse" (aims at PSNR; see the module docstring)
    ssim_weight: float = 0.2
    lpips_weight: float = 0.0  # if > 0: + this x ST-LPIPS (AlexNet, shipped weights) of sampled frames
    lpips_frames: int = 4  # frames per clip that the ST-LPIPS term sees (the trunk is the costly part)
    code_range_weight: float = 0.1  # FSQ range penalty (model.FSQ.range_penalty): keeps every digit alive
    code_usage_weight: float = 0.0  # FSQ usage penalty (model.FSQ.usage_penalty): spreads each digit's levels
    grad_clip: float = 1.0
    val_fraction: float = 0.1
    max_frames_per_video: int = 300
    seed: int = 0
    precision: str = "auto"  # precision.PRECISIONS: auto = bf16 where the device runs it natively, else fp32
    log_every: int = 25
    val_every: int = 500
    checkpoint_every: int = 250
    model: dict = field(default_factory=dict)  # ModelConfig overrides
    minutes: float = 0.0  # if > 0: a training-time budget; the run ends at `steps` or this, whichever is first
    batch_pixels: int = 0  # if > 0: clips per step = batch_pixels // (crop pixels x frames), at least 1
    stage: str = "full"  # base | adaptive | full (see the module docstring)
    init_from: str = ""  # weights file (safetensors) to start from; fresh optimiser
    val_frames: int = 17  # validation windows: frames and centre-crop size
    val_size: int = 128


_TUPLE_FIELDS = {"crops": lambda v: tuple((int(h), int(w)) for h, w in v),
                 "rates": lambda v: tuple(float(r) for r in v),
                 "betas": lambda v: tuple(float(b) for b in v)}


def config_from_dict(d: dict) -> TrainConfig:
    """A TrainConfig from plain (JSON) values; unknown keys or malformed values raise ValueError."""
    unknown = sorted(set(d) - set(TrainConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown training setting(s): {', '.join(unknown)}")
    kwargs = dict(d)
    if "bf16" in kwargs:  # the older switch: on meant "bf16 wherever" (now: where native), off float32
        kwargs.setdefault("precision", "auto" if kwargs["bf16"] else "fp32")
        del kwargs["bf16"]
    for key, convert in _TUPLE_FIELDS.items():
        if key in kwargs:
            try:
                kwargs[key] = convert(kwargs[key])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"malformed training setting {key!r}: {exc}") from None
    cfg = TrainConfig(**kwargs)
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    if cfg.placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {cfg.placement!r}")
    if cfg.pixel_loss not in PIXEL_LOSSES:
        raise ValueError(f"pixel_loss must be one of {', '.join(PIXEL_LOSSES)}, got {cfg.pixel_loss!r}")
    if cfg.stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {cfg.stage!r}")
    if cfg.clip_frames < 1 or (cfg.clip_frames - 1) % 4:
        raise ValueError(f"clip_frames must be 1 + 4k, got {cfg.clip_frames}")
    if not cfg.crops or any(h < 8 or w < 8 or h % 8 or w % 8 for h, w in cfg.crops):
        raise ValueError(f"crops must be (height, width) multiples of 8, got {cfg.crops}")
    if cfg.code_usage_weight < 0:
        raise ValueError(f"code_usage_weight must be >= 0, got {cfg.code_usage_weight}")
    if cfg.lpips_weight < 0 or cfg.lpips_frames < 1:
        raise ValueError(f"lpips_weight must be >= 0 and lpips_frames >= 1, got {cfg.lpips_weight}, "
                         f"{cfg.lpips_frames}")
    if not (cfg.lr > 0 and cfg.steps >= 1 and cfg.batch >= 1):
        raise ValueError(f"lr, steps and batch must be positive, got {cfg.lr}, {cfg.steps}, {cfg.batch}")
    return cfg


# ----------------------------------------------------------------------------- data


def clips_per_step(cfg: TrainConfig, crop_h: int, crop_w: int) -> int:
    """Clips in one step's batch for a crop shape: fixed, or as many as batch_pixels holds (at least 1)."""
    if cfg.batch_pixels:
        return max(1, cfg.batch_pixels // (crop_h * crop_w * cfg.clip_frames))
    return cfg.batch


def find_videos(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += [f for f in p.rglob("*") if f.suffix.lower() in VIDEO_EXTENSIONS]
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"training data not found: {p}")
    return sorted(set(files))


def split_train_val(files: list[Path], val_fraction: float) -> tuple[list[Path], list[Path]]:
    """Hold back about val_fraction of the clips, whole sources at a time (segments of one source such
    as 'bottle-detection-01..04' stay together), chosen by a hash so the split is stable."""
    groups: dict[str, list[Path]] = {}
    for f in files:
        groups.setdefault(re.sub(r"-\d+$", "", f.stem), []).append(f)
    order = sorted(groups, key=lambda g: hashlib.sha1(g.encode()).hexdigest())
    val: list[Path] = []
    for g in order:
        if len(val) >= val_fraction * len(files):
            break
        val += groups[g]
    val_set = set(val)
    return [f for f in files if f not in val_set], sorted(val)


def load_clip(path: Path, max_frames: int) -> torch.Tensor:
    """All frames (up to max_frames) of a video as uint8 [T,H,W,3]."""
    frames = []
    for i, frame in enumerate(iter_frames(path)):
        if i >= max_frames:
            break
        frames.append(torch.from_numpy(frame))
    return torch.stack(frames)


class ClipSampler:
    """Random training windows: random video (weighted by length), start, crop, flips, reversal."""

    def __init__(self, videos: list[torch.Tensor], cfg: TrainConfig, seed: int):
        self.videos = [v for v in videos if v.shape[0] >= cfg.clip_frames]
        if not self.videos:
            raise ValueError(f"no training video has the {cfg.clip_frames} frames a clip needs")
        self.cfg = cfg
        self.rng = random.Random(seed)
        self.weights = [v.shape[0] for v in self.videos]

    def sample(self) -> torch.Tensor:
        """A batch [B,3,T,H,W] in [-1, 1] with one crop shape for the whole batch."""
        cfg = self.cfg
        ch, cw = self.rng.choice(cfg.crops)
        batch = clips_per_step(cfg, ch, cw)
        clips = []
        for v in self.rng.choices(self.videos, weights=self.weights, k=batch):
            n, h, w, _ = v.shape
            down = self.rng.random() < cfg.downscale_prob and h >= 2 * ch and w >= 2 * cw
            sh, sw = (2 * ch, 2 * cw) if down else (ch, cw)
            sh, sw = min(sh, h), min(sw, w)
            t0 = self.rng.randrange(n - cfg.clip_frames + 1)
            y0, x0 = self.rng.randrange(h - sh + 1), self.rng.randrange(w - sw + 1)
            clip = v[t0 : t0 + cfg.clip_frames, y0 : y0 + sh, x0 : x0 + sw].permute(3, 0, 1, 2).float()
            if (sh, sw) != (ch, cw):
                clip = F.interpolate(clip, size=(ch, cw), mode="area" if down else "bilinear")
            if self.rng.random() < 0.5:
                clip = clip.flip(-1)
            if self.rng.random() < 0.5:
                clip = clip.flip(1)  # temporal reversal
            clips.append(clip)
        return torch.stack(clips) / 127.5 - 1


# ----------------------------------------------------------------------------- the Flex objective


class FlexObjective(nn.Module):
    """Wraps the model so that DDP sees one forward: router pass without gradients, masked decode."""

    def __init__(self, model: InfoTok, range_weight: float = 0.0, usage_weight: float = 0.0,
                 placement: str = "error"):
        super().__init__()
        self.model = model
        self.range_weight, self.usage_weight = range_weight, usage_weight
        self.placement = placement

    def forward(self, x: torch.Tensor, rates: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (reconstruction, weighted FSQ penalties)."""
        pre = self.model.pre_codes(x)
        codes, _ = self.model.quantizer(pre)
        penalty = self.range_weight * self.model.quantizer.range_penalty(pre)
        if self.usage_weight:
            penalty = penalty + self.usage_weight * self.model.quantizer.usage_penalty(pre)
        if not self.model.adaptive:  # base stage: full rate, no router pass
            return self.model.decode(codes), penalty
        if any(r < 1 for r in rates):
            # A fresh probe half each step, so the decompressor does not learn one fixed pattern.
            probe = torch.Generator().manual_seed(int(torch.randint(2**31, ()))) if self.placement != "error" \
                else None
            with torch.no_grad():
                score = router_score(self.model, x, codes.detach(), self.placement, probe)
            keep = torch.stack([top_k_mask(e, tokens_for_rate(r, e.numel())) for e, r in zip(score, rates)])
        else:
            # All clips at full rate: an all-True mask still puts `dropped_token` in the graph (with a zero
            # gradient). Without it DDP fails on the next step, as one parameter got no gradient.
            keep = torch.ones(codes.shape[:-1], dtype=torch.bool, device=codes.device)
        return self.model.decode(codes, keep), penalty


def router_score(model: InfoTok, x: torch.Tensor, codes: torch.Tensor, placement: str,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """The router's placement score [B,t,h,w] of a batch (top-k of it is kept): the full-rate error, or
    the drop gain against it or against the probes (router.drop_gain; probe half from `generator`, or the
    fixed one the codec uses)."""
    full_error = None if placement == "probe-gain" else position_error(x, model.decode(codes))
    if placement == "error":
        return full_error
    half = probe_half(tuple(codes.shape[1:-1]), generator)
    return drop_gain(x, lambda keep: model.decode(codes, keep), half, full_error)


def as_frames(clips: torch.Tensor) -> torch.Tensor:
    """Clips [B,3,T,H,W] -> their frames [B*T,3,H,W] (what the image losses take)."""
    return clips.permute(0, 2, 1, 3, 4).flatten(0, 1)


def lpips_term(lpips: nn.Module, y: torch.Tensor, x: torch.Tensor, frames: int, rng: random.Random
               ) -> torch.Tensor:
    """Mean ST-LPIPS between y and x ([B,3,T,H,W] in [-1, 1]) over `frames` frames drawn per step, the
    same for every clip. Frames are a sample because the trunk runs at full resolution."""
    picked = sorted(rng.sample(range(x.shape[2]), min(frames, x.shape[2])))
    return lpips(as_frames(y[:, :, picked]), as_frames(x[:, :, picked])).mean()


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


def pixel_loss(y: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """The reconstruction term: mean absolute error, or root mean squared error over the whole batch."""
    if kind == "rmse":
        # The epsilon keeps the gradient finite at zero error.
        return ((y - x).square().mean() + 1e-8).sqrt()
    return (y - x).abs().mean()


def psnr_pm1(y: torch.Tensor, x: torch.Tensor) -> float:
    """PSNR of images in [-1, 1] (peak-to-peak 2)."""
    mse = F.mse_loss(y.float().clamp(-1, 1), x.float()).item()
    return 10 * math.log10(4 / max(mse, 1e-12))


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


# ----------------------------------------------------------------------------- evaluation helpers


@torch.no_grad()
def validate(model: InfoTok, clips: list[torch.Tensor], rates: tuple[float, ...], precision: Precision,
             placement: str = "error") -> dict[str, float]:
    """PSNR per keep rate (over all validation windows' pixels), with the codec's placement of the kept
    tokens (fixed probe half), and codebook use at full rate. Clips move to the model's device."""
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, float] = {}
    indices = []
    for rate in rates:
        if rate < 1 and not model.adaptive:
            continue
        sq_err, count = 0.0, 0
        for x in clips:
            x = x.to(device)
            with precision.autocast():
                codes, idx = model.encode(x)
                keep = None
                if rate < 1:
                    score = router_score(model, x, codes, placement)[0]
                    keep = top_k_mask(score, tokens_for_rate(rate, score.numel()))[None]
                y = model.decode(codes, keep)
            sq_err += F.mse_loss(y.float().clamp(-1, 1), x, reduction="sum").item()
            count += x.numel()
            if rate == 1:
                indices.append(idx.flatten().cpu())
        out[f"psnr@{rate:g}"] = 10 * math.log10(4 / max(sq_err / count, 1e-12))
    if indices:
        use = token_entropy(torch.cat(indices), model.cfg.levels)
        out["digit_bits"] = round(use["bits_per_token"], 3)
        out["min_digit_fraction"] = round(min(use["digit_fraction"]), 3)
    return out


def fixed_windows(videos: list[torch.Tensor], frames: int, size: int) -> list[torch.Tensor]:
    """A deterministic window per video: middle frames, centre crop (multiple of 8), in [-1, 1].

    A video shorter than `frames` gives its longest 1 + 4k window instead, so that a data set of short
    clips still has validation windows and a defined e_ref.
    """
    out = []
    for v in videos:
        n, h, w, _ = v.shape
        length = min(frames, 1 + (n - 1) // 4 * 4)
        ch, cw = min(size, h) // 8 * 8, min(size, w) // 8 * 8
        if ch == 0 or cw == 0:
            continue
        t0, y0, x0 = (n - length) // 2, (h - ch) // 2, (w - cw) // 2
        clip = v[t0 : t0 + length, y0 : y0 + ch, x0 : x0 + cw].permute(3, 0, 1, 2).float()
        out.append(clip[None] / 127.5 - 1)
    return out


@torch.no_grad()
def reference_errors(model: InfoTok, clips: list[torch.Tensor], precision: Precision) -> tuple[float, float]:
    """(e_ref, e_ref_probe): the mean per-position error (in [0, 2] pixel units) over the given windows
    of the full-rate decode, and of the drop-gain probes where each position's token is sent
    (router.probe_errors, the codec's fixed half). The codec estimates a window's full-rate error from
    its probes as probe error x e_ref / e_ref_probe, which spares the full-rate decode."""
    model.eval()
    device = next(model.parameters()).device
    full, probe = [], []
    for x in clips:
        x = x.to(device)
        with precision.autocast():
            codes, _ = model.encode(x)
            full.append(position_error(x, model.decode(codes)).mean().item())
            half = probe_half(tuple(codes.shape[1:-1]))
            probe.append(probe_errors(x, lambda keep, codes=codes: model.decode(codes, keep), half)[1].mean().item())
    return float(np.mean(full)), float(np.mean(probe))


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
    train_files, val_files = split_train_val(files, cfg.val_fraction)
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
        from .perceptual import load_stlpips  # the metric's module; only loaded when the term is on

        lpips = load_stlpips("alex", device)  # frozen
    if distributed:
        objective = nn.parallel.DistributedDataParallel(objective)
    log(f"model {model.cfg.name}: {count_parameters(model) / 1e6:.2f}M parameters, stage {cfg.stage} trains "
        f"{sum(p.numel() for p in trained) / 1e6:.2f}M; {world} process(es)")

    rate_rng = random.Random(cfg.seed * 7919 + rank + step)
    frame_rng = random.Random(cfg.seed * 104729 + rank + step)  # the ST-LPIPS term's frames
    sampler.rng.seed(cfg.seed * 1000 + rank + 7 * step)
    log_file = open(run_dir / "log.txt", "a") if is_main else None
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
            progress = schedule_progress(step, elapsed, cfg)
            if distributed:  # every process stops at the same step
                flag = torch.tensor([progress], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                progress = flag.item()
            if progress >= 1:
                break
            model.train()
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg, progress if cfg.minutes > 0 else None)
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
            log_file.close()
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return summary

