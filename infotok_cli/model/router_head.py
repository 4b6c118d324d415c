"""The learned router head: predicts from the encoder's side alone what the probe decodes measure.

Probe-gain placement (coding/router.py) decodes every window twice to find which tokens the
decompressor can least do without. This head estimates the same thing from features the encoder already
has, so placement needs no decode: per latent position a *score* (the probe-gain score, standardised per
window; only its order is used) and the log of the *full-rate error* (its window mean sets the window's
rate in the `global` strategy, in the units of `e_ref`).

Inputs (`extract_features`, infotok-m's residual layout): the latent after the compressor and code_norm
(192 channels), the log RMS that code_norm divided out (1), the FSQ codes (6) and four pixel statistics
per position (`pixel_stats`): 203 channels. The network: per-channel standardisation (buffers fitted on
the training features), a 1x1x1 projection to `width`, one factorised residual block per entry of
`dilations` (spatial 3x3 with that dilation, then a kernel-3 convolution over latent frames), and a 1x1x1
output to the two maps, that last layer in float32 so a bf16 run does not tie scores. Fully
convolutional: any window size.

Optionally (`curve_rates` in its config) a *rate curve*: a linear map of nine window statistics
(`window_summary`) to the window's full-rate PSNR and the log PSNR drop at a few keep rates
(`RateCurve`), which starts `--target-psnr`'s search (coding/rate.py tokens_for_quality); fitted by
`python -m infotok_cli.train.router_head curve-fit`.

It ships inside the model's weights as the tensor group `router_head.*` with its config in the
metadata key `router_head` (model/store.py); weights without it load as before. Trained with the
tokenizer frozen (`python -m infotok_cli.train.router_head fit`, train/router_head/).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..constants import SPATIAL_STRIDE, TEMPORAL_STRIDE
from .bounds import bounded_float, bounded_int, bounded_ints, bounded_text, mapping, parse_json, short
from .infotok import InfoTok

FEATURES = ("z", "zrms", "codes", "pix")
# the window statistics the rate curve reads (window_summary)
SUMMARY_FEATURES = ("log_error_mean", "log_error_std", "score_std", "log_std", "log_gradient", "log_change",
                    "intensity", "log_rms", "first_frame_share")
TENSOR_PREFIX = "router_head."  # names of the head's tensors inside a weights file
METADATA_KEY = "router_head"  # its config (JSON) in the weights' metadata
DITHER_SEED = 0  # fixed, so compressing the same video twice gives the same file
EPS = 1e-3


@dataclass
class HeadConfig:
    in_channels: int = 203  # 192 (latent) + 1 (log RMS) + 6 (codes) + 4 (pixel statistics)
    width: int = 48
    dilations: tuple[int, ...] = (1, 2, 4)  # one residual block per entry
    features: tuple[str, ...] = FEATURES
    # (keep rate, dither amount) points of the dither schedule, linear in between (see dither_amount); chosen on
    # the head's held-out training clips (train.router_head eval --clips ... --schedule ...)
    dither: tuple[tuple[float, float], ...] = ((0.25, 1.5), (0.5, 0.75), (0.75, 0.5))
    # keep rates at which the rate curve predicts the PSNR drop from full rate (empty: the head has no rate
    # curve); fitted on rate curves of training windows (train.router_head curves)
    curve_rates: tuple[float, ...] = ()
    recipe: str = ""  # the training recipe, for the record
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        d = asdict(self)
        d["dilations"], d["features"] = list(self.dilations), list(self.features)
        d["dither"] = [list(point) for point in self.dither]
        d["curve_rates"] = list(self.curve_rates)
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> HeadConfig:
        """The config stored in a weights file's metadata, every field checked (ValueError): the file is
        untrusted, and the sizes decide what building the head allocates."""
        d = {k: v for k, v in mapping("router head config", parse_json("router head config", text)).items()
             if k in cls.__dataclass_fields__}
        ints = {"in_channels": (1, MAX_HEAD_CHANNELS), "width": (1, MAX_HEAD_CHANNELS)}
        for key, (low, high) in ints.items():
            if key in d:
                bounded_int(f"router head {key}", d[key], low, high)
        if "dilations" in d:
            d["dilations"] = bounded_ints("router head dilations", d["dilations"], 1, MAX_DILATION, 1, MAX_HEAD_BLOCKS)
        if "features" in d:
            features = d["features"]
            if (not isinstance(features, list) or not features or len(set(map(str, features))) != len(features)
                    or any(name not in FEATURES for name in features)):
                raise ValueError(f"router head features={short(features)} must name some of {', '.join(FEATURES)}"
                                 " once each")
            d["features"] = tuple(features)
        if "dither" in d:
            points = d["dither"]
            if not isinstance(points, list) or not 1 <= len(points) <= MAX_SCHEDULE_POINTS or any(
                    not isinstance(point, list) or len(point) != 2 for point in points):
                raise ValueError(f"router head dither={short(points)} must be 1..{MAX_SCHEDULE_POINTS} "
                                 "[rate, amount] pairs")
            d["dither"] = tuple((bounded_float("router head dither rate", rate, 0.0, 1.0),
                                 bounded_float("router head dither amount", amount, 0.0, 100.0))
                                for rate, amount in points)
        if "curve_rates" in d:
            if not isinstance(d["curve_rates"], list) or len(d["curve_rates"]) > MAX_SCHEDULE_POINTS:
                raise ValueError(f"router head curve_rates must be a list of at most {MAX_SCHEDULE_POINTS} rates")
            d["curve_rates"] = tuple(bounded_float("router head curve rate", rate, 0.0, 1.0)
                                     for rate in d["curve_rates"])
        if "recipe" in d:
            bounded_text("router head recipe", d["recipe"])
        if "extra" in d:
            mapping("router head extra", d["extra"])
        cfg = cls(**d)
        rates = [rate for rate, _ in cfg.dither]
        curve = list(cfg.curve_rates)
        if rates != sorted(rates) or curve != sorted(set(curve)) or any(not 0 < rate < 1 for rate in curve):
            raise ValueError(f"unsupported router head config {text[:200]}")
        return cfg


# Bounds of the head's config (the shipped head: 203 inputs, width 48, 3 blocks, 3 dither points, 12 rates).
MAX_HEAD_CHANNELS = 4096
MAX_HEAD_BLOCKS = 16
MAX_DILATION = 64
MAX_SCHEDULE_POINTS = 64


@dataclass(frozen=True)
class RateCurve:
    """A window's predicted PSNR against keep rate: the full-rate PSNR and, at each of `rates`, the drop
    below it (dB). Between points (and up to keep 1, drop 0) linear in the rate; below the first point
    the first drop; made non-increasing in the rate, so the PSNR estimate never falls as tokens are added."""

    rates: tuple[float, ...]
    full_psnr: float
    drops: tuple[float, ...]

    def __post_init__(self) -> None:
        monotone, low = list(self.drops), 0.0
        for i in range(len(monotone) - 1, -1, -1):  # from keep 1 down: each drop at least the next one's
            low = monotone[i] = max(monotone[i], low)
        object.__setattr__(self, "drops", tuple(monotone))

    def psnr(self, rate: float) -> float:
        rates, drops = (*self.rates, 1.0), (*self.drops, 0.0)
        if rate <= rates[0]:
            return self.full_psnr - drops[0]
        for (r0, d0), (r1, d1) in zip(zip(rates, drops), zip(rates[1:], drops[1:])):
            if rate <= r1:
                return self.full_psnr - (d0 + (d1 - d0) * (rate - r0) / (r1 - r0))
        return self.full_psnr


class HeadBlock(nn.Module):
    """Residual (2+1)-D block: spatial 3x3 (dilated), then kernel 3 over latent frames (both ways in time,
    like infotok-m's decompressor)."""

    def __init__(self, width: int, dilation: int):
        super().__init__()
        self.spatial = nn.Conv3d(width, width, (1, 3, 3), padding=(0, dilation, dilation),
                                 dilation=(1, dilation, dilation))
        self.temporal = nn.Conv3d(width, width, (3, 1, 1), padding=(1, 0, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.temporal(F.gelu(self.spatial(F.gelu(x))))


class RouterHead(nn.Module):
    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("in_mean", torch.zeros(cfg.in_channels))
        self.register_buffer("in_std", torch.ones(cfg.in_channels))
        # affine map of the log-error output (the training targets' mean and spread): the net predicts unit scale
        self.register_buffer("err_shift", torch.zeros(1))
        self.register_buffer("err_scale", torch.ones(1))
        self.inp = nn.Conv3d(cfg.in_channels, cfg.width, 1)
        self.blocks = nn.ModuleList([HeadBlock(cfg.width, d) for d in cfg.dilations])
        self.out = nn.Conv3d(cfg.width, 2, 1)
        if cfg.curve_rates:  # the rate curve: a linear map of the standardised window summary
            n = len(SUMMARY_FEATURES)
            self.register_buffer("curve_mean", torch.zeros(n))
            self.register_buffer("curve_std", torch.ones(n))
            self.register_buffer("curve_weight", torch.zeros(1 + len(cfg.curve_rates), n))
            self.register_buffer("curve_bias", torch.zeros(1 + len(cfg.curve_rates)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked features [B,C,t,h,w] -> (score [B,t,h,w], log full-rate error [B,t,h,w])."""
        x = (x.float() - self.in_mean.view(1, -1, 1, 1, 1)) / self.in_std.view(1, -1, 1, 1, 1)
        y = self.inp(x)
        for block in self.blocks:
            y = block(y)
        with torch.autocast(y.device.type, enabled=False):
            out = self.out(F.gelu(y.float()))
        return out[:, 0], out[:, 1] * self.err_scale + self.err_shift

    def stack(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([features[name].float() for name in self.cfg.features], 1)

    @torch.no_grad()
    def predict(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of one window -> (score [t,h,w], per-position full-rate error estimate [t,h,w]), float32."""
        score, log_error = self(self.stack(features))
        return score[0].float(), log_error[0].float().exp()

    def rate_curve(self, summary: torch.Tensor) -> RateCurve | None:
        """The predicted rate-PSNR curve of a window from its window_summary (None without a rate curve)."""
        if not self.cfg.curve_rates:
            return None
        z = (summary.float().cpu() - self.curve_mean.cpu()) / self.curve_std.cpu()
        y = (self.curve_weight.cpu() @ z + self.curve_bias.cpu()).tolist()
        # log drops clipped to [-20, 6] (at most about 400 dB): absurd weights give an absurd curve, not an error
        return RateCurve(self.cfg.curve_rates, y[0], tuple(math.exp(min(max(v, -20.0), 6.0)) for v in y[1:]))

    def flops_per_position(self) -> int:
        """FLOPs (2 x multiply-adds) of the convolutions per latent position."""
        return 2 * sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Conv3d))


def group_mean(m: torch.Tensor, first_alone: bool = True) -> torch.Tensor:
    """A per-frame map [B,T,H,W] -> [B,t,h,w]: the mean over each latent position's frames (frame 0 alone,
    then groups of 4; with first_alone=False groups of 4 from the start) and 8x8 pixels, as
    router.position_error groups them. Pools each part before joining them: the full-size maps are never
    copied."""
    b, n, hh, ww = m.shape
    parts = []
    if first_alone:
        parts.append(F.avg_pool2d(m[:, :1], SPATIAL_STRIDE))
        m, n = m[:, 1:], n - 1
    if n > 0:
        parts.append(F.avg_pool2d(m.reshape(b, n // TEMPORAL_STRIDE, TEMPORAL_STRIDE, hh, ww).mean(2),
                                  SPATIAL_STRIDE))
    return torch.cat(parts, 1) if len(parts) > 1 else parts[0]


def pixel_stats(x: torch.Tensor) -> torch.Tensor:
    """Frames [B,3,T,H,W] in [-1, 1] -> [B,4,t,h,w] float32 per latent position: log standard deviation,
    log mean absolute spatial gradient, log mean absolute change from the previous frame (0 for frame 0)
    and mean intensity, of the grey image. It runs on every compress beside the encoder, so it makes few
    passes over the frames and reuses one scratch buffer for the per-pixel maps."""
    x = x.float()
    grey = (x[:, 0] + x[:, 1] + x[:, 2]) / 3  # not mean(1): the frames are channels-last in memory
    scratch = torch.empty_like(grey)
    mean = group_mean(grey)
    std = (group_mean(torch.mul(grey, grey, out=scratch)) - mean * mean).clamp_min(0).sqrt()
    # |dx| + |dy|, each 0 where it has no neighbour (last column, last row), pooled one at a time
    torch.sub(grey[..., :, 1:], grey[..., :, :-1], out=scratch[..., :, :-1]).abs_()
    scratch[..., :, -1] = 0
    gradient = group_mean(scratch)
    torch.sub(grey[..., 1:, :], grey[..., :-1, :], out=scratch[..., :-1, :]).abs_()
    scratch[..., -1, :] = 0
    gradient += group_mean(scratch)
    change = torch.zeros_like(mean[:, :1])  # frame 0 has no previous frame
    if grey.shape[1] > 1:  # frames 1.. in groups of 4
        torch.sub(grey[:, 1:], grey[:, :-1], out=scratch[:, 1:]).abs_()
        change = torch.cat([change, group_mean(scratch[:, 1:], first_alone=False)], 1)
    stats = [(std + EPS).log(), (gradient + EPS).log(), (change + EPS).log(), mean]
    return torch.stack(stats, -1).permute(0, 4, 1, 2, 3)  # channels last in memory, as the other features


def extract_features(model: InfoTok, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Encode frames [B,3,T,H,W] with the model's own encode (InfoTok.encode_with_latent) and keep what the
    head reads. Returns (features, codes [B,t,h,w,6], indices [B,t,h,w]).
    Runs under the caller's autocast."""
    codes, indices, z, mean_square = model.encode_with_latent(x)
    log_rms = mean_square.add_(1e-6).log_().mul_(0.5)  # the log RMS from code_norm's own pass over z
    # [B,C,t,h,w] views of channels-last memory: the head's convolutions run fastest on that layout
    features = {
        "z": z.float().permute(0, 4, 1, 2, 3),
        "zrms": log_rms.permute(0, 4, 1, 2, 3),
        "codes": codes.float().permute(0, 4, 1, 2, 3),
        "pix": pixel_stats(x),
    }
    return features, codes, indices


def window_summary(features: dict[str, torch.Tensor], score: torch.Tensor, log_error: torch.Tensor) -> torch.Tensor:
    """Window-level statistics [len(SUMMARY_FEATURES)] float32 of one window's features and head outputs
    (score and log error [t,h,w]): what the rate curve (RateCurve) reads."""
    pix = features["pix"][0].float().flatten(1).mean(1).tolist()  # the four pixel statistics' window means
    log_error, score = log_error.float(), score.float()
    return torch.tensor([log_error.mean().item(), log_error.std().item(), score.std().item(), *pix,
                         features["zrms"].float().mean().item(), 1.0 / score.shape[0]], dtype=torch.float32)


def dither_amount(rate: float, schedule: tuple[tuple[float, float], ...] = HeadConfig.dither) -> float:
    """Noise, in standard deviations of the score, added before the top k at keep `rate`: the schedule's
    points joined linearly, constant beyond its ends (by default 1.5 at keep 0.25 and below, 0.75 at 0.5,
    0.5 from 0.75 up). A smooth learned score puts tokens in clusters and leaves whole regions with none
    to fill from; the probe score's own measurement noise spreads them."""
    (r0, a0), (r1, a1) = schedule[0], schedule[-1]
    if rate <= r0:
        return a0
    if rate >= r1:
        return a1
    for (lo, a_lo), (hi, a_hi) in zip(schedule, schedule[1:]):
        if lo <= rate <= hi:
            return a_lo + (a_hi - a_lo) * (rate - lo) / (hi - lo) if hi > lo else a_hi
    return a1


def dithered_score(score: torch.Tensor, rate: float,
                   schedule: tuple[tuple[float, float], ...] = HeadConfig.dither) -> torch.Tensor:
    """The head's score standardised, plus fixed-seed Gaussian noise of dither_amount(rate, schedule)."""
    s = score.float()
    s = (s - s.mean()) / (s.std() + 1e-8) if s.numel() > 1 else s
    amount = dither_amount(rate, schedule)
    if amount > 0:
        s = s + amount * torch.randn(s.shape, generator=torch.Generator().manual_seed(DITHER_SEED)).to(s.device)
    return s


def feature_channels(features: tuple[str, ...], latent_dim: int, code_dim: int) -> int:
    """Input channels of a head reading `features` of a model with this latent and code size."""
    sizes = {"z": latent_dim, "zrms": 1, "codes": code_dim, "pix": 4}
    return sum(sizes[name] for name in features)


def head_from_tensors(config_json: str, tensors: dict[str, torch.Tensor]) -> RouterHead:
    """A head from its metadata config and its tensors (names without TENSOR_PREFIX); raises ValueError
    when they do not match."""
    head = RouterHead(HeadConfig.from_json(config_json))
    try:
        head.load_state_dict({k: v.float() for k, v in tensors.items()})
    except RuntimeError as exc:
        raise ValueError(f"router head tensors do not match its config ({str(exc).splitlines()[0]})") from None
    return head.eval()


def head_tensors(head: RouterHead) -> dict[str, torch.Tensor]:
    """The head's tensors as they are stored in a weights file (prefixed, float32, contiguous)."""
    return {TENSOR_PREFIX + k: v.detach().float().contiguous().cpu() for k, v in head.state_dict().items()}


HEAD_FILE_FORMAT = "infotok-router-head/1"  # a head on its own, as training writes it


def save_head_file(path: str | Path, head: RouterHead, summary: dict | None = None) -> None:
    """Write a trained head on its own (store.add_router_head puts it into a model's weights)."""
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in head.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": HEAD_FILE_FORMAT, "config": head.cfg.to_json(),
                                            "training": json.dumps(summary or {})})


def load_head_file(path: str | Path) -> tuple[RouterHead, dict]:
    """A head written by save_head_file, and its training summary."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != HEAD_FILE_FORMAT:
        raise ValueError(f"{path}: not a router head file")
    return head_from_tensors(meta["config"], tensors), json.loads(meta.get("training", "{}") or "{}")
