"""The InfoTok model's building blocks: the causal convolutional encoder and decoder (4x8x8 compression)
and the token transformer (local attention in space, block-causal in time).

Design notes (why it looks like this): a 2-core CPU cannot afford 3-D convolutions at full
resolution or dense attention over every token of a window. The encoder therefore
pixel-unshuffles 4x4 first, runs 2-D convolutions per frame at 1/4 and 1/8 resolution, folds
each group of 4 frames into channels, and mixes time only at the latent resolution with causal
3-D convolutions. Attention is local in space (8x8 windows, plus a depthwise convolution in every
MLP to pass information across window borders) and causal in time, so cost grows linearly with
frames and pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import TEMPORAL_STRIDE
from .config import ModelConfig

# Tokens per piece when a transformer layer runs on a large window in pieces (attention: whole spatial
# windows; MLP: whole latent frames). A 256x256 window of 33 frames (9,216 tokens) runs in one piece;
# a 1280x720 one (138,240 tokens with padding) in about nine, so that the layer's float32 and hidden
# activations exist for part of the window at a time. Each piece's result does not depend on the others.
TOKENS_PER_PIECE = 1 << 14


# ----------------------------------------------------------------------------- geometry


def latent_frames(num_frames: int) -> int:
    """Latent frames for a window of num_frames = 1 + 4k frames."""
    if num_frames < 1 or (num_frames - 1) % TEMPORAL_STRIDE:
        raise ValueError(f"window length must be 1 + 4k frames, got {num_frames}")
    return 1 + (num_frames - 1) // TEMPORAL_STRIDE


# ----------------------------------------------------------------------------- conv layers


class ResBlock2d(nn.Module):
    """conv3x3 -> SiLU -> conv3x3 with a skip; no normalisation (fast on CPU, stable at this
    depth because the second conv starts near zero)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        nn.init.zeros_(self.conv2.bias)
        self.conv2.weight.data.mul_(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class CausalTemporalConv(nn.Module):
    """Kernel-3 convolution along latent time that only looks at the current and two earlier latent
    frames (the first latent frame is replicated in front)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv3d(ch, ch, (3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x[:, :, :1]] * 2 + [x], dim=2))


class ResBlock3dCausal(nn.Module):
    """Factorised (2+1)-D residual block at latent resolution: causal temporal conv, then a spatial
    3x3 conv; less than half the cost of a full 3x3x3 kernel."""

    def __init__(self, ch: int):
        super().__init__()
        self.temporal = CausalTemporalConv(ch)
        self.spatial = nn.Conv3d(ch, ch, (1, 3, 3), padding=(0, 1, 1))
        nn.init.zeros_(self.spatial.bias)
        self.spatial.weight.data.mul_(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.spatial(F.silu(self.temporal(F.silu(x))))


# ----------------------------------------------------------------------------- encoder / decoder


class Encoder(nn.Module):
    """frames [B,3,T,H,W] -> latents [B,D,t,H/8,W/8]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c4, c8 = cfg.channels_quarter, cfg.channels_eighth
        self.frame_chunk = cfg.frame_chunk
        self.stem = nn.Conv2d(3 * 16, c4, 3, padding=1)
        self.quarter = nn.Sequential(*[ResBlock2d(c4) for _ in range(cfg.blocks_quarter)])
        self.down = nn.Conv2d(4 * c4, c8, 1)
        self.eighth = nn.Sequential(*[ResBlock2d(c8) for _ in range(cfg.blocks_eighth)])
        self.fold_time = nn.Conv2d(TEMPORAL_STRIDE * c8, cfg.latent_dim, 1)
        self.temporal = nn.Sequential(*[ResBlock3dCausal(cfg.latent_dim) for _ in range(cfg.temporal_blocks)])

    def per_frame(self, frames: torch.Tensor) -> torch.Tensor:
        """[N,3,H,W] -> [N,c8,H/8,W/8], each frame on its own."""
        x = self.stem(F.pixel_unshuffle(frames, 4))
        x = self.quarter(x)
        x = self.down(F.pixel_unshuffle(x, 2))
        return self.eighth(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, n, hh, ww = x.shape
        t = latent_frames(n)
        chunks = []
        for t0 in range(0, t, self.frame_chunk):  # 2-D stage in chunks of latent frames
            t1 = min(t, t0 + self.frame_chunk)
            # Frame indices of the causally padded clip (frame 0 repeated three times in front), taken
            # chunk by chunk so the padded copy of the whole window is never materialised.
            index = (torch.arange(4 * t0, 4 * t1, device=x.device) - (TEMPORAL_STRIDE - 1)).clamp_(min=0)
            frames = x.index_select(2, index).permute(0, 2, 1, 3, 4).reshape(-1, 3, hh, ww)
            f = self.per_frame(frames)  # [B*4*(t1-t0), c8, h, w]
            f = f.reshape(b, t1 - t0, TEMPORAL_STRIDE * f.shape[1], *f.shape[2:])
            f = self.fold_time(f.flatten(0, 1))  # group of 4 frames -> one latent frame
            chunks.append(f.reshape(b, t1 - t0, *f.shape[1:]))
        z = torch.cat(chunks, dim=1).permute(0, 2, 1, 3, 4)  # [B,D,t,h,w]
        return self.temporal(z)


def decoder_blocks(cfg: ModelConfig) -> tuple[int, int]:
    """(blocks at 1/4 resolution, blocks at 1/8) of the decoder."""
    quarter = cfg.blocks_quarter if cfg.decoder_blocks_quarter is None else cfg.decoder_blocks_quarter
    eighth = cfg.blocks_eighth if cfg.decoder_blocks_eighth is None else cfg.decoder_blocks_eighth
    return quarter, eighth


class Decoder(nn.Module):
    """latents [B,D,t,h,w] -> frames [B,3,T,8h,8w] with T = 1 + 4(t-1)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c4, c8 = cfg.channels_quarter, cfg.channels_eighth
        self.frame_chunk = cfg.frame_chunk
        self.c8 = c8
        blocks_quarter, blocks_eighth = decoder_blocks(cfg)
        self.temporal = nn.Sequential(*[ResBlock3dCausal(cfg.latent_dim) for _ in range(cfg.temporal_blocks)])
        self.unfold_time = nn.Conv2d(cfg.latent_dim, TEMPORAL_STRIDE * c8, 1)
        self.eighth = nn.Sequential(*[ResBlock2d(c8) for _ in range(blocks_eighth)])
        self.up = nn.Conv2d(c8, 4 * c4, 1)
        self.quarter = nn.Sequential(*[ResBlock2d(c4) for _ in range(blocks_quarter)])
        self.head = nn.Conv2d(c4, 3 * 16, 3, padding=1)

    def per_frame(self, f: torch.Tensor) -> torch.Tensor:
        x = self.eighth(f)
        x = self.quarter(F.pixel_shuffle(self.up(x), 2))
        return F.pixel_shuffle(self.head(F.silu(x)), 4)

    def forward(self, z: torch.Tensor, frame_stride: int = 1) -> torch.Tensor:
        """frame_stride 2 or 4 decodes only frames 0, s, 2s, ... (the router's probe decodes: the 2-D
        stage, most of the decoder's cost, then runs on 1/s of the frames)."""
        if frame_stride not in (1, 2, 4):
            raise ValueError(f"frame_stride must be 1, 2 or 4, got {frame_stride}")
        z = self.temporal(z)
        b, _, t, h, w = z.shape
        per_latent = TEMPORAL_STRIDE // frame_stride  # decoded frames per latent frame
        zt = z.permute(0, 2, 1, 3, 4)  # [B,t,D,h,w]
        out: torch.Tensor | None = None  # filled chunk by chunk: no second copy of the window
        for t0 in range(0, t, self.frame_chunk):
            t1 = min(t, t0 + self.frame_chunk)
            f = self.unfold_time(zt[:, t0:t1].flatten(0, 1))  # [B*(t1-t0), 4*c8, h, w]
            f = f.reshape(b * (t1 - t0), TEMPORAL_STRIDE, self.c8, h, w)  # 4 frames per latent frame
            # The last of each group of 4 is frame 4i; keep every frame_stride-th counting back from it.
            f = f[:, (TEMPORAL_STRIDE - 1) % frame_stride :: frame_stride].flatten(0, 1)
            frames = self.per_frame(f).reshape(b, per_latent * (t1 - t0), 3, 8 * h, 8 * w)
            if out is None:
                out = frames.new_empty(b, 3, per_latent * t, 8 * h, 8 * w)
            out[:, :, per_latent * t0 : per_latent * t1] = frames.permute(0, 2, 1, 3, 4)
        return out[:, :, per_latent - 1 :]  # drop the causal-padding frames in front of frame 0


# ----------------------------------------------------------------------------- transformer


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalise(x)[0]

    def normalise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x normalised, the float32 mean square it was divided by): the router head reads the latter."""
        xf = x.float()
        mean_square = xf.pow(2).mean(-1, keepdim=True)
        return (xf * torch.rsqrt(mean_square + self.eps)).to(x.dtype) * self.weight, mean_square


class WindowAttention(nn.Module):
    """Attention among the tokens of one spatial window across latent frames, block-causal in
    time: a token sees every token of its own and earlier latent frames in its window."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # x: [n, length, c] with n = batch x windows, length = t x window area; mask [n, 1, 1 or L, L]
        step = max(1, TOKENS_PER_PIECE // x.shape[1])
        if x.shape[0] <= step:
            return self.attend(x, mask)
        return torch.cat([self.attend(x[i : i + step], None if mask is None else mask[i : i + step])
                          for i in range(0, x.shape[0], step)])

    def attend(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        n, length, c = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        if x.device.type == "cpu":
            # The CPU's fused attention kernel runs faster in float32 than in bfloat16 (36 vs 48 ms for
            # one 256x256 window's attention, 2 cores), and float32 is no less exact.
            y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask).to(q.dtype)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(n, length, c))


class ConvMLP(nn.Module):
    """SwiGLU MLP with a depthwise 3x3 convolution over the latent grid, which carries
    information across attention-window borders and gives tokens a sense of position."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc_in = nn.Linear(width, 2 * hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc_out = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B,t,h,w,C]
        b, t, h, w, _ = x.shape
        a, gate = self.fc_in(x).chunk(2, dim=-1)
        a = a.reshape(b * t, h, w, -1).permute(0, 3, 1, 2)
        a = self.dwconv(a).permute(0, 2, 3, 1).reshape(b, t, h, w, -1)
        return self.fc_out(F.silu(gate) * a)


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1 = RMSNorm(width)
        self.attn = WindowAttention(width, heads)
        self.norm2 = RMSNorm(width)
        self.mlp = ConvMLP(width, 2 * width)

    def forward(self, x: torch.Tensor, win: int, mask: torch.Tensor | None) -> torch.Tensor:
        # x: [B,t,h,w,C] with h, w multiples of win
        b, t, h, w, c = x.shape
        y = self.norm1(x)
        y = y.view(b, t, h // win, win, w // win, win, c).permute(0, 2, 4, 1, 3, 5, 6)
        y = self.attn(y.reshape(-1, t * win * win, c), mask)
        y = y.view(b, h // win, w // win, t, win, win, c).permute(0, 3, 1, 4, 2, 5, 6)
        x = x + y.reshape(b, t, h, w, c)
        # The norm and the MLP (whose convolution is 2-D) treat each latent frame on its own: run them a
        # few frames at a time on large windows, so their wide hidden activations exist for part of it.
        step = max(1, TOKENS_PER_PIECE // (b * h * w))
        if step >= t:
            return x + self.mlp(self.norm2(x))
        return torch.cat([x[:, i : i + step] + self.mlp(self.norm2(x[:, i : i + step]))
                          for i in range(0, t, step)], dim=1)


class TokenTransformer(nn.Module):
    """Transformer over a latent grid [B,t,h,w,C] (the adaptive compressor or decompressor)."""

    def __init__(self, cfg: ModelConfig, layers: int):
        super().__init__()
        self.win = cfg.attn_window
        self.causal = cfg.causal_attention
        self.time_embed = nn.Parameter(torch.zeros(cfg.max_latent_frames, cfg.width))
        self.space_embed = nn.Parameter(torch.zeros(cfg.attn_window * cfg.attn_window, cfg.width))
        nn.init.normal_(self.time_embed, std=0.02)
        nn.init.normal_(self.space_embed, std=0.02)
        self.blocks = nn.ModuleList([Block(cfg.width, cfg.heads) for _ in range(layers)])
        self.norm = RMSNorm(cfg.width)

    def attention_mask(self, t: int, h: int, w: int, hp: int, wp: int, batch: int,
                       device) -> torch.Tensor | None:
        """Boolean mask (True = may attend) over windows of L = t x win^2 tokens: [batch*windows, 1, L, L],
        block-causal in time with padded keys hidden; for a model that attends both ways in time,
        [batch*windows, 1, 1, L], padded keys hidden for every query (scaled_dot_product_attention
        broadcasts it, so no L x L mask is made); None when it would hide nothing."""
        if not self.causal and (hp, wp) == (h, w):
            return None  # nothing hidden: without a mask, scaled_dot_product_attention takes its fused kernel
        win, area = self.win, self.win * self.win
        valid = torch.zeros(hp, wp, dtype=torch.bool, device=device)
        valid[:h, :w] = True
        valid = valid.view(hp // win, win, wp // win, win).permute(0, 2, 1, 3).reshape(-1, area)
        valid = valid.repeat(1, t)  # [windows, L]
        if not self.causal:
            return valid[:, None, None, :].repeat(batch, 1, 1, 1)
        frame = torch.arange(t, device=device).repeat_interleave(area)
        causal = frame[None, :] <= frame[:, None]  # [L, L]: a query sees its own and earlier latent frames
        mask = causal[None] & valid[:, None, :]
        return mask[:, None].repeat(batch, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h, w, c = x.shape
        win = self.win
        hp, wp = -(-h // win) * win, -(-w // win) * win
        tidx = torch.arange(t, device=x.device).clamp(max=self.time_embed.shape[0] - 1)
        x = x + self.time_embed[tidx].view(1, t, 1, 1, c).to(x.dtype)
        x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
        space = self.space_embed.view(win, win, c).repeat(hp // win, wp // win, 1)  # position in window
        x = x + space.to(x.dtype)
        mask = self.attention_mask(t, h, w, hp, wp, b, x.device)
        for blk in self.blocks:
            x = blk(x, win, mask)
        return self.norm(x[:, :, :h, :w])
