"""A learned one-pass router head for InfoTok: predicts from the encoder's side alone (no decode) what the
probe decodes measure today.

Input (features.extract_features, all available right after the encoder and FSQ):
  z [B,192,t,h,w] (latent after the compressor and code_norm), zrms [B,1,...] (log RMS before code_norm),
  codes [B,6,...] (FSQ codes), pix [B,4,...] (pixel statistics per position) -> concatenated, 203 channels.
Output:
  score     [B,t,h,w]  predicted probe-gain score (per-window standardised units; only its order is
                        used: the top k positions keep their tokens)
  log_error [B,t,h,w]  predicted log of the per-position full-rate error (router.position_error units);
                        the window's error estimate is exp(log_error).mean() (what sets the rate in the
                        `global` strategy, and what WindowAnalysis.error means)

Runs under the model's autocast (bf16 convolutions) except the output layer (float32, so the score has no
bf16 ties). Architecture: per-channel input standardisation (buffers, fitted on the training features), a 1x1x1
projection to `width`, `blocks` factorised (2+1)-D residual blocks (spatial 3x3 with dilation d, GELU,
temporal kernel-3 conv over latent frames, both ways in time like infotok-m's decompressor attention),
and a 1x1x1 output to 2 channels. Zero padding at the borders (a fully convolutional head: any t, h, w).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

FEATURES = ("z", "zrms", "codes", "pix")
HEAD_FORMAT = "infotok-router-head/1"
PREFIX = "router_head."  # tensor-name prefix when the head ships inside the model's weights


@dataclass
class HeadConfig:
    in_channels: int = 203  # 192 (z) + 1 (zrms) + 6 (codes) + 4 (pix)
    width: int = 48
    dilations: tuple[int, ...] = (1, 2, 4)  # one residual block per entry
    features: tuple[str, ...] = FEATURES
    recipe: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dilations"], d["features"] = list(self.dilations), list(self.features)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> HeadConfig:
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for key in ("dilations", "features"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


class Block(nn.Module):
    def __init__(self, ch: int, dilation: int):
        super().__init__()
        self.spatial = nn.Conv3d(ch, ch, (1, 3, 3), padding=(0, dilation, dilation), dilation=(1, dilation, dilation))
        self.temporal = nn.Conv3d(ch, ch, (3, 1, 1), padding=(1, 0, 0))
        nn.init.zeros_(self.temporal.bias)
        self.temporal.weight.data.mul_(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.temporal(F.gelu(self.spatial(F.gelu(x))))


class RouterHead(nn.Module):
    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("in_mean", torch.zeros(cfg.in_channels))
        self.register_buffer("in_std", torch.ones(cfg.in_channels))
        # affine map of the log-error output (fitted targets' mean and std), so the net predicts unit scale
        self.register_buffer("err_shift", torch.zeros(1))
        self.register_buffer("err_scale", torch.ones(1))
        self.inp = nn.Conv3d(cfg.in_channels, cfg.width, 1)
        self.blocks = nn.ModuleList([Block(cfg.width, d) for d in cfg.dilations])
        self.out = nn.Conv3d(cfg.width, 2, 1)

    @staticmethod
    def stack(feats: dict[str, torch.Tensor], names: tuple[str, ...] = FEATURES) -> torch.Tensor:
        return torch.cat([feats[n].float() for n in names], 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: stacked features [B,C,t,h,w] (float32) -> (score [B,t,h,w], log_error [B,t,h,w])."""
        x = (x.float() - self.in_mean.view(1, -1, 1, 1, 1)) / self.in_std.view(1, -1, 1, 1, 1)
        y = self.inp(x)
        for blk in self.blocks:
            y = blk(y)
        # the output layer in float32 even under bf16 autocast: a bf16 score would tie many positions
        with torch.autocast(y.device.type, enabled=False):
            o = self.out(F.gelu(y.float()))
        return o[:, 0], o[:, 1] * self.err_scale + self.err_shift

    @torch.no_grad()
    def predict(self, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of one window (batch 1) -> (score [t,h,w], per-position error estimate [t,h,w])."""
        score, log_error = self(self.stack(feats, self.cfg.features))
        return score[0].float(), log_error[0].float().exp()

    def flops_per_position(self) -> int:
        """Multiply-adds x 2 per latent position (convolutions only)."""
        return 2 * sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Conv3d))


def count_parameters(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def save_head(path: str, head: RouterHead, summary: dict | None = None) -> None:
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in head.state_dict().items()}
    save_file(tensors, path, metadata={"format": HEAD_FORMAT, "config": json.dumps(head.cfg.to_dict()),
                                       "training": json.dumps(summary or {})})


def load_head(path: str) -> RouterHead:
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != HEAD_FORMAT:
        raise ValueError(f"{path}: not a router head file")
    head = RouterHead(HeadConfig.from_dict(json.loads(meta["config"])))
    head.load_state_dict(tensors)
    return head.eval()


DITHER_SEED = 0  # fixed, so compressing the same video twice gives the same file


def dither_amount(rate: float) -> float:
    """Noise (in standard deviations of the score) added before top-k: none at keep >= 0.5, rising
    linearly to 1 at keep 0.25 and below. A smooth learned score puts the kept tokens of a low rate in
    clusters, leaving large regions without any token to fill from; the probe-gain score's measurement
    noise spreads them. Measured on two dev clips at keep 0.25: head 25.41 -> 28.60 dB (probe-gain
    28.71) and 24.12 -> 25.58 (25.63); at keep 0.5 noise did not help on average."""
    return float(min(1.0, max(0.0, 4 * (0.5 - rate))))


def dithered_score(score: torch.Tensor, rate: float) -> torch.Tensor:
    """The head's score standardised, plus fixed-seed Gaussian dither of dither_amount(rate)."""
    s = (score.float() - score.float().mean()) / (score.float().std() + 1e-8)
    a = dither_amount(rate)
    if a > 0:
        s = s + a * torch.randn(score.shape, generator=torch.Generator().manual_seed(DITHER_SEED))
    return s
