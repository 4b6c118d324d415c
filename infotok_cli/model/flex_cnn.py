"""The convolutional half of InfoTok-Flex: Haar wavelet patching and the factorized causal 3-D CNN.

The encoder and decoder of the Cosmos-style base tokenizer that the released InfoTok-Flex checkpoint
builds on (see flex.py for the whole data flow and the source of the facts). Parameter names follow the
release's state dict.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .flex_config import FlexConfig, down_plan, up_plan

# ----------------------------------------------------------------------------------------------------------------
# Haar wavelet patcher
# ----------------------------------------------------------------------------------------------------------------


def _butterfly(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Unnormalised 2-point Haar step along a size-2 axis: (a, b) -> (a + b, a - b)."""
    a, b = x.unbind(dim)
    return torch.stack((a + b, a - b), dim)


class HaarPatcher(nn.Module):
    """Video -> wavelet bands. One level maps each 2x2x2 (t, h, w) block to 8 coefficients
    coef[band] = (1/8) * sum_p (-1)^<band, p> x[p], bands ordered (t, h, w) with t as the most significant bit,
    channels band-major. (The release composes orthonormal 1-D Haar filters and divides by 2*sqrt(2) per level,
    which is the same linear map.)"""

    def __init__(self, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.num_levels = int(math.log2(patch_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The first frame is repeated so that it fills a temporal patch alone: frame 0 is always coded as an image.
        x = torch.cat([x[:, :, :1].expand(-1, -1, self.patch_size - 1, -1, -1), x], dim=2)
        for _ in range(self.num_levels):
            b, c, t, h, w = x.shape
            y = x.reshape(b, c, t // 2, 2, h // 2, 2, w // 2, 2)
            for dim in (3, 5, 7):
                y = _butterfly(y, dim)
            x = y.permute(0, 3, 5, 7, 1, 2, 4, 6).reshape(b, 8 * c, t // 2, h // 2, w // 2) * 0.125
        return x


class HaarUnpatcher(nn.Module):
    """Inverse of HaarPatcher (x[p] = sum_band (-1)^<band, p> coef[band]); drops the repeated first frame."""

    def __init__(self, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.num_levels = int(math.log2(patch_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.num_levels):
            b, c8, t, h, w = x.shape
            c = c8 // 8
            y = x.reshape(b, 2, 2, 2, c, t, h, w)
            for dim in (1, 2, 3):
                y = _butterfly(y, dim)
            x = y.permute(0, 4, 5, 1, 6, 2, 7, 3).reshape(b, c, 2 * t, 2 * h, 2 * w)
        return x[:, :, self.patch_size - 1 :]


# ----------------------------------------------------------------------------------------------------------------
# Causal CNN building blocks
# ----------------------------------------------------------------------------------------------------------------


def _repeat_first_frame(x: torch.Tensor, n: int) -> torch.Tensor:
    """Causal temporal padding: prepend n copies of frame 0."""
    return torch.cat([x[:, :, :1].expand(-1, -1, n, -1, -1), x], dim=2) if n > 0 else x


class CausalConv(nn.Module):
    """Conv3d that pads time causally (repeating the first frame) and space with zeros.

    The wrapped layer is called ``conv3d`` so that parameter names match the release."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        spatial_pad: int = 0,
        stride: int = 1,
        time_stride: int = 1,
    ) -> None:
        super().__init__()
        kt = kernel[0]
        self.time_pad = (kt - 1) + (1 - time_stride)
        # Zero spatial padding is done by the convolution itself (identical to padding first, and cheaper).
        self.conv3d = nn.Conv3d(
            cin, cout, kernel, stride=(time_stride, stride, stride), padding=(0, spatial_pad, spatial_pad)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3d(_repeat_first_frame(x, self.time_pad))


def _factorized_conv(cin: int, cout: int) -> nn.Sequential:
    """A 3x3x3 convolution split into spatial 1x3x3 then causal temporal 3x1x1 (keys .0 and .1)."""
    return nn.Sequential(CausalConv(cin, cout, (1, 3, 3), spatial_pad=1), CausalConv(cout, cout, (3, 1, 1)))


class FrameNorm(nn.Module):
    """GroupNorm with one group applied to every frame on its own (per-frame LayerNorm over C, H, W), optionally
    followed by SiLU. Computed frame by frame so that only one output tensor is allocated."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1, channels, eps=1e-6, affine=True)

    def forward(self, x: torch.Tensor, silu: bool = False) -> torch.Tensor:
        out = torch.empty_like(x)
        for i in range(x.shape[2]):
            y = F.group_norm(x[:, :, i], 1, self.norm.weight, self.norm.bias, self.norm.eps)
            out[:, :, i] = F.silu(y) if silu else y
        return out


class ResBlock(nn.Module):
    """Pre-activation residual block: norm, SiLU, factorized conv, norm, SiLU, factorized conv, plus shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1 = FrameNorm(cin)
        self.conv1 = _factorized_conv(cin, cout)
        self.norm2 = FrameNorm(cout)
        self.conv2 = _factorized_conv(cout, cout)
        self.nin_shortcut = CausalConv(cin, cout) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.norm1(x, silu=True))
        h = self.conv2(self.norm2(h, silu=True))
        return h + (x if self.nin_shortcut is None else self.nin_shortcut(x))


class SpatialAttention(nn.Module):
    """Single-head self-attention among the positions of each frame (1x1x1 q/k/v/out convs, residual)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = FrameNorm(channels)
        self.q, self.k, self.v, self.proj_out = (CausalConv(channels, channels) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        b, c, t, hh, ww = q.shape
        out = torch.empty_like(q)
        for i in range(t):  # one frame at a time keeps the (hw x hw) score matrix small at large sizes
            qi, ki, vi = (z[:, :, i].reshape(b, 1, c, hh * ww).transpose(-1, -2) for z in (q, k, v))
            oi = F.scaled_dot_product_attention(qi, ki, vi)  # scale 1/sqrt(c), as in the release
            out[:, :, i] = oi.transpose(-1, -2).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class TemporalAttention(nn.Module):
    """Single-head causal self-attention along time at every spatial position (residual)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = FrameNorm(channels)
        self.q, self.k, self.v, self.proj_out = (CausalConv(channels, channels) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        b, c, t, hh, ww = x.shape

        def seq(z: torch.Tensor) -> torch.Tensor:  # [B, C, T, H, W] -> [B*H*W, 1, T, C]
            return z.permute(0, 3, 4, 2, 1).reshape(b * hh * ww, 1, t, c)

        o = F.scaled_dot_product_attention(seq(self.q(h)), seq(self.k(h)), seq(self.v(h)), is_causal=True)
        o = o.reshape(b, hh, ww, t, c).permute(0, 4, 3, 1, 2)
        return x + self.proj_out(o)


def _mid_attention(channels: int) -> nn.Sequential:
    return nn.Sequential(SpatialAttention(channels), TemporalAttention(channels))


class HybridDown(nn.Module):
    """Downsampling = strided conv + average pool, spatially (pad right/bottom with zeros) and/or temporally
    (causal), followed by a 1x1x1 conv. Absent branches have no parameters (matching the release's keys)."""

    def __init__(self, ch: int, spatial: bool, temporal: bool) -> None:
        super().__init__()
        self.conv1 = CausalConv(ch, ch, (1, 3, 3), stride=2) if spatial else None
        self.conv2 = CausalConv(ch, ch, (3, 1, 1), time_stride=2) if temporal else None
        self.conv3 = CausalConv(ch, ch) if spatial or temporal else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv1 is not None:
            x = F.pad(x, (0, 1, 0, 1, 0, 0))
            x = self.conv1(x) + F.avg_pool3d(x, (1, 2, 2), (1, 2, 2))
        if self.conv2 is not None:
            x = _repeat_first_frame(x, 1)  # conv2 adds one more copy itself (time_pad = 1)
            x = self.conv2(x) + F.avg_pool3d(x, (2, 1, 1), (2, 1, 1))
        return x if self.conv3 is None else self.conv3(x)


class HybridUp(nn.Module):
    """Upsampling = nearest repeat + residual conv, temporally (t -> 2t - 1, frame 0 stays single) and/or
    spatially, followed by a 1x1x1 conv."""

    def __init__(self, ch: int, spatial: bool, temporal: bool) -> None:
        super().__init__()
        self.conv1 = CausalConv(ch, ch, (3, 1, 1)) if temporal else None
        self.conv2 = CausalConv(ch, ch, (1, 3, 3), spatial_pad=1) if spatial else None
        self.conv3 = CausalConv(ch, ch) if spatial or temporal else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv1 is not None:
            if x.shape[2] > 1:
                x = x.repeat_interleave(2, dim=2)[:, :, 1:]
            y = self.conv1(x)
            x = y.add_(x)
        if self.conv2 is not None:
            x = x.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
            y = self.conv2(x)
            x = y.add_(x)
        return x if self.conv3 is None else self.conv3(x)


class Level(nn.Module):
    """Container so that keys read ``down.{i}.block.{j}`` / ``up.{i}.attn.{j}`` / ``.downsample`` / ``.upsample``."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()


class MidBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.block_1 = ResBlock(ch, ch)
        self.attn_1 = _mid_attention(ch)
        self.block_2 = ResBlock(ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class CnnEncoder(nn.Module):
    def __init__(self, cfg: FlexConfig) -> None:
        super().__init__()
        self.patcher3d = HaarPatcher(cfg.patch_size)
        ch, mult = cfg.channels, cfg.channels_mult
        self.conv_in = _factorized_conv(cfg.in_channels * cfg.patch_size**3, ch)
        spatial, temporal = down_plan(cfg)
        res = cfg.resolution // cfg.patch_size
        block_in = ch
        self.down = nn.ModuleList()
        for i, m in enumerate(mult):
            level = Level()
            for _ in range(cfg.num_res_blocks):
                level.block.append(ResBlock(block_in, ch * m))
                block_in = ch * m
                if res in cfg.attn_resolutions:
                    level.attn.append(_mid_attention(block_in))
            if i < len(mult) - 1:
                level.downsample = HybridDown(block_in, spatial[i], temporal[i])
                res //= 2
            self.down.append(level)
        self.mid = MidBlock(block_in)
        self.norm_out = FrameNorm(block_in)
        self.conv_out = _factorized_conv(block_in, cfg.z_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(self.patcher3d(x))
        for level in self.down:
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(self.norm_out(h, silu=True))


class CnnDecoder(nn.Module):
    def __init__(self, cfg: FlexConfig) -> None:
        super().__init__()
        ch, mult, n = cfg.channels, cfg.channels_mult, len(cfg.channels_mult)
        block_in = ch * mult[-1]
        res = (cfg.resolution // cfg.patch_size) // 2 ** (n - 1)
        self.conv_in = _factorized_conv(cfg.z_channels, block_in)
        self.mid = MidBlock(block_in)
        spatial, temporal = up_plan(cfg)
        levels: list[Level] = []
        for k, i in enumerate(reversed(range(n))):  # built deepest first, stored by level index
            level = Level()
            for _ in range(cfg.num_res_blocks + 1):
                level.block.append(ResBlock(block_in, ch * mult[i]))
                block_in = ch * mult[i]
                if res in cfg.attn_resolutions:
                    level.attn.append(_mid_attention(block_in))
            if i != 0:
                level.upsample = HybridUp(block_in, spatial[k], temporal[k])
                res *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = FrameNorm(block_in)
        self.conv_out = _factorized_conv(block_in, cfg.out_channels * cfg.patch_size**3)
        self.unpatcher3d = HaarUnpatcher(cfg.patch_size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.unpatcher3d(self.conv_out(self.norm_out(h, silu=True)))


