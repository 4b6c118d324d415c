"""Training settings: `TrainConfig` and its validation (`config_from_dict`, from JSON values and the
command line). See the package docstring for the stages and the objective."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..constants import PLACEMENTS, PRECISIONS

STAGES = ("base", "adaptive", "full")
PIXEL_LOSSES = ("l1", "rmse")


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
    placement: str = "error"  # how training masks are placed: "error", "drop-gain" or "probe-gain" (coding/router.py)
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
    val_clips: tuple[str, ...] = ()  # if set: the held-back clips by file name, instead of the hashed split
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
                 "betas": lambda v: tuple(float(b) for b in v),
                 "val_clips": lambda v: tuple(str(n) for n in v)}


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
    trainable = [p for p in PLACEMENTS if p != "predicted"]  # a router head is trained after the tokenizer
    if cfg.placement not in trainable:
        raise ValueError(f"placement must be one of {', '.join(trainable)}, got {cfg.placement!r}")
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
