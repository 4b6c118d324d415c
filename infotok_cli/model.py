"""The InfoTok tokenizer model, top to bottom.

Data flow (one coding window of T = 1 + 4k frames, pixels in [-1, 1]):

    frames [B,3,T,H,W]
      -> Encoder        causal 4x8x8 compression: frame 0 alone, then groups of 4 frames
      -> Compressor     (adaptive) residual transformer over latent tokens (attention inside 8x8
                        spatial windows, block-causal across latent frames)
      -> to_code        RMS normalisation, then a linear map to the 6 FSQ dims
      -> FSQ            levels (8,8,8,5,5,5) = 64,000 codes, one token per latent position
      -> (router keeps a subset of positions; see router.py)
      -> from_code      linear map back; dropped positions get a learned "dropped" vector
      -> Decompressor   (adaptive) residual transformer that fills dropped positions
      -> Decoder        mirror of the encoder back to frames

Encoder, to_code, FSQ, from_code and Decoder alone form the *base tokenizer*. As in the paper, InfoTok
is a plug-in on a pre-trained base: the compressor and decompressor are residual branches whose output
projections start at zero, so a freshly added adaptive path leaves the base model unchanged. Training
runs in stages (see train.py): the base at full rate with the adaptive path switched off
(`model.adaptive = False`, cheap steps), then the adaptive path with the Flex objective.

Design notes (why it looks like this): a 2-core CPU cannot afford 3-D convolutions at full
resolution or dense attention over every token of a window. The encoder therefore
pixel-unshuffles 4x4 first, runs 2-D convolutions per frame at 1/4 and 1/8 resolution, folds
each group of 4 frames into channels, and mixes time only at the latent resolution with causal
3-D convolutions. Attention is local in space (8x8 windows, plus a depthwise convolution in every
MLP to pass information across window borders) and causal in time, so cost grows linearly with
frames and pixels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

TEMPORAL_STRIDE = 4
SPATIAL_STRIDE = 8
# Tokens per piece when a transformer layer runs on a large window in pieces (attention: whole spatial
# windows; MLP: whole latent frames). A 256x256 window of 33 frames (9,216 tokens) runs in one piece;
# a 1280x720 one (138,240 tokens with padding) in about nine, so that the layer's float32 and hidden
# activations exist for part of the window at a time. Each piece's result does not depend on the others.
TOKENS_PER_PIECE = 1 << 14


@dataclass
class ModelConfig:
    """Hyper-parameters of one InfoTok model; stored as JSON in the weights' metadata."""

    name: str = "infotok-m"
    levels: tuple[int, ...] = (8, 8, 8, 5, 5, 5)
    channels_quarter: int = 64  # conv width at 1/4 resolution
    channels_eighth: int = 128  # conv width at 1/8 resolution
    blocks_quarter: int = 1
    blocks_eighth: int = 2
    latent_dim: int = 192  # channels per latent position (before the 6-dim bottleneck)
    temporal_blocks: int = 2  # causal (2+1)-D residual blocks at latent resolution
    width: int = 128  # transformer width
    heads: int = 4
    compressor_layers: int = 2
    decompressor_layers: int = 2
    attn_window: int = 8  # spatial attention window in latent positions
    # True: a token attends to its own and earlier latent frames only. False: to every latent frame of its
    # window; a window is encoded and decoded whole, so later frames can help fill a dropped position.
    causal_attention: bool = True
    # Residual blocks of the decoder's 2-D stages; None: as many as the encoder's (the decoder may be
    # deeper: reconstruction is the harder direction, and decoding runs once per window in `compress`).
    decoder_blocks_quarter: int | None = None
    decoder_blocks_eighth: int | None = None
    max_latent_frames: int = 64  # size of the learned temporal embedding table
    frame_chunk: int = 8  # latent frames per chunk in the per-frame 2-D stages (bounds memory)
    # "residual": adaptive branches around the base tokenizer (trainable in stages). "serial": the
    # transformers sit in the token path (infotok-s's layout, kept so its weights and files still work).
    layout: str = "residual"
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in d.items() if k in known}
        if kwargs.get("layout", "residual") not in ("residual", "serial"):
            raise ValueError(f"unknown model layout {kwargs['layout']!r}")
        if "levels" in kwargs:
            kwargs["levels"] = tuple(int(v) for v in kwargs["levels"])
        # A config can come from a weights file: bound every size before a model is allocated from it.
        for key, (low, high) in CONFIG_BOUNDS.items():
            value = kwargs.get(key)
            if value is not None and (type(value) is not int or not low <= value <= high):
                raise ValueError(f"model config {key}={value!r} is outside {low}..{high}")
        if type(kwargs.get("causal_attention", True)) is not bool:
            raise ValueError(f"model config causal_attention={kwargs['causal_attention']!r} is not a boolean")
        return cls(**kwargs)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["levels"] = list(self.levels)
        return d


# Allowed ranges of the integer config fields (far beyond any model that runs on one machine).
CONFIG_BOUNDS = {
    "channels_quarter": (1, 4096), "channels_eighth": (1, 4096), "latent_dim": (1, 4096), "width": (1, 4096),
    "heads": (1, 64), "attn_window": (1, 64), "max_latent_frames": (1, 4096), "frame_chunk": (1, 4096),
    "blocks_quarter": (0, 64), "blocks_eighth": (0, 64), "temporal_blocks": (0, 64),
    "compressor_layers": (0, 64), "decompressor_layers": (0, 64),
    "decoder_blocks_quarter": (0, 64), "decoder_blocks_eighth": (0, 64),
}


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
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


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


# ----------------------------------------------------------------------------- quantizer


class FSQ(nn.Module):
    """Finite scalar quantisation: each of len(levels) dims is bounded and rounded to one of
    L_i values; the token index is the mixed-radix number of the digits."""

    def __init__(self, levels: tuple[int, ...]):
        super().__init__()
        lv = torch.tensor(levels, dtype=torch.float32)
        self.register_buffer("levels", lv, persistent=False)
        basis = torch.cumprod(torch.tensor([1, *levels[:-1]], dtype=torch.int64), 0)
        self.register_buffer("basis", basis, persistent=False)
        self.codebook_size = int(math.prod(levels))

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        half = (self.levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        return torch.tanh(z + self._shift()) * half - offset

    def range_penalty(self, z: torch.Tensor) -> torch.Tensor:
        """Keeps the values entering FSQ centred and out of tanh's flat tails, where the straight-through
        gradient vanishes and a digit can freeze at one level (a dead digit wastes its bits): the squared
        per-dim mean of the tanh argument plus the squared excess of its magnitude beyond 2."""
        u = z.float() + self._shift()
        mean = u.reshape(-1, u.shape[-1]).mean(0)
        return mean.pow(2).mean() + F.relu(u.abs() - 2).pow(2).mean()

    def usage_penalty(self, z: torch.Tensor, temperature: float = 0.25) -> torch.Tensor:
        """1 - (entropy of each digit's level distribution over the batch) / log L, averaged over digits:
        0 when every level of every digit is used equally often. Levels are soft-assigned
        (softmax of -squared distance / temperature) so the gradient reaches values that round to an
        over-used level; the digit entropy the codebook targets are stated in is this, measured hard."""
        bounded = self.bound(z.float()).reshape(-1, z.shape[-1])
        total = bounded.new_zeros(())
        for i, n in enumerate(self.levels.long().tolist()):
            centres = torch.arange(n, device=z.device, dtype=bounded.dtype) - n // 2
            weights = torch.softmax(-(bounded[:, i, None] - centres).pow(2) / temperature, dim=-1)
            marginal = weights.mean(0)
            entropy = -(marginal * marginal.clamp_min(1e-12).log()).sum()
            total = total + 1 - entropy / math.log(n)
        return total / len(self.levels)

    def _shift(self) -> torch.Tensor:
        half = (self.levels - 1) * (1 + 1e-3) / 2
        return torch.atanh(torch.where(self.levels % 2 == 0, 0.5, 0.0) / half)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [..., d] -> (codes in [-1, 1] with straight-through gradient, indices [...])."""
        bounded = self.bound(z.float())
        rounded = bounded + (bounded.round() - bounded).detach()
        half_width = (self.levels // 2)
        digits = (rounded.detach().round() + half_width).long()
        indices = (digits * self.basis).sum(-1)
        return rounded / half_width, indices

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        digits = (indices.long()[..., None] // self.basis) % self.levels.long()
        half_width = self.levels // 2
        return (digits.float() - half_width) / half_width


# ----------------------------------------------------------------------------- the model


class InfoTok(nn.Module):
    """Encoder -> compressor -> FSQ tokens; tokens + keep mask -> decompressor -> decoder."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.adaptive = True  # False: the base tokenizer alone (full rate only; base training stage)
        d = len(cfg.levels)
        self.encoder = Encoder(cfg)
        if cfg.layout == "serial":  # infotok-s: latent -> compressor -> code; code -> decompressor -> latent
            self.enc_in = nn.Linear(cfg.latent_dim, cfg.width)
            self.compressor = TokenTransformer(cfg, cfg.compressor_layers)
            self.to_code = nn.Linear(cfg.width, d)
            self.from_code = nn.Linear(d, cfg.width)
            self.dropped_token = nn.Parameter(torch.zeros(cfg.width))
            self.decompressor = TokenTransformer(cfg, cfg.decompressor_layers)
            self.dec_out = nn.Linear(cfg.width, cfg.latent_dim)
        else:
            self.compressor_in = nn.Linear(cfg.latent_dim, cfg.width)
            self.compressor = TokenTransformer(cfg, cfg.compressor_layers)
            self.compressor_out = zero_linear(cfg.width, cfg.latent_dim)
            # The encoder has no normalisation, so its output scale is free to grow; unnormalised, it grew
            # until every value entering FSQ sat deep in tanh's flat tails (no gradient, dead digits).
            self.code_norm = RMSNorm(cfg.latent_dim)
            self.to_code = nn.Linear(cfg.latent_dim, d)
            self.from_code = nn.Linear(d, cfg.latent_dim)
            self.dropped_token = nn.Parameter(torch.zeros(cfg.latent_dim))  # the decoder knows what is missing
            self.decompressor_in = nn.Linear(cfg.latent_dim, cfg.width)
            self.decompressor = TokenTransformer(cfg, cfg.decompressor_layers)
            self.decompressor_out = zero_linear(cfg.width, cfg.latent_dim)
        nn.init.normal_(self.dropped_token, std=0.02)
        self.quantizer = FSQ(cfg.levels)
        self.decoder = Decoder(cfg)

    def for_inference_(self, dtype: torch.dtype) -> InfoTok:
        """Prepare the model to run under autocast to `dtype` (in place; returns it): eval mode, the
        convolution and linear weights stored in `dtype` (autocast would cast them to it on every call,
        so results do not change) and the 2-D convolutions' weights channels-last (oneDNN's CPU kernels
        run them faster that way; values change only by rounding). The model then needs autocast."""
        self.eval()
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)):
                module.to(dtype)
            if isinstance(module, nn.Conv2d):
                module.to(memory_format=torch.channels_last)
        return self

    def base_parameters(self) -> list[nn.Parameter]:
        """Parameters of the base tokenizer (encoder, code maps, decoder)."""
        if self.cfg.layout == "serial":
            raise ValueError("the serial layout has no separate base tokenizer to train in stages")
        parts = (self.encoder, self.code_norm, self.to_code, self.from_code, self.decoder)
        return [p for m in parts for p in m.parameters()]

    def adaptive_parameters(self) -> list[nn.Parameter]:
        """Parameters of the adaptive path (compressor, decompressor, the dropped-position vector)."""
        base = {id(p) for p in self.base_parameters()}
        return [p for p in self.parameters() if id(p) not in base]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames [B,3,T,H,W] in [-1,1] -> (codes [B,t,h,w,6], indices [B,t,h,w])."""
        return self.quantizer(self.pre_codes(x))

    def pre_codes(self, x: torch.Tensor) -> torch.Tensor:
        """frames -> the values entering FSQ [B,t,h,w,6] (training watches their range)."""
        z = self.encoder(x).permute(0, 2, 3, 4, 1)  # [B,t,h,w,D]
        if self.cfg.layout == "serial":
            z = self.compressor(self.enc_in(z))
        else:
            if self.adaptive:
                z = z + self.compressor_out(self.compressor(self.compressor_in(z)))
            z = self.code_norm(z)
        return self.to_code(z)

    def decode(self, codes: torch.Tensor, keep: torch.Tensor | None = None, frame_stride: int = 1) -> torch.Tensor:
        """codes [B,t,h,w,6] and keep mask [B,t,h,w] (True = sent) -> frames [B,3,T,H,W] (with
        frame_stride s, only frames 0, s, 2s, ...: see Decoder.forward)."""
        return self.decoder(self.decompress(codes, keep).permute(0, 4, 1, 2, 3), frame_stride)

    def decompress(self, codes: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """The decode up to the pixel decoder: codes and keep mask -> latents [B,t,h,w,D]."""
        y = self.from_code(codes.to(self.from_code.weight.dtype))
        if keep is not None:
            y = torch.where(keep[..., None], y, self.dropped_token.to(y.dtype))
        if self.cfg.layout == "serial":
            return self.dec_out(self.decompressor(y))
        if self.adaptive:
            y = y + self.decompressor_out(self.decompressor(self.decompressor_in(y)))
        return y

    def decode_indices(self, indices: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Token indices [B,t,h,w] (values at dropped positions are ignored) -> frames."""
        return self.decode(self.quantizer.indices_to_codes(indices), keep)


# The depths `grow` may raise in a trained model's config.
GROWABLE_DEPTHS = ("compressor_layers", "decompressor_layers", "decoder_blocks_quarter", "decoder_blocks_eighth")


def grow(model: InfoTok, cfg: ModelConfig) -> InfoTok:
    """A copy of `model` with the larger config `cfg`, so training can add capacity and continue from
    trained weights. Deeper compressor / decompressor: the new transformer blocks come after the old ones
    (before the final norm) with their attention and MLP output projections at zero. Deeper decoder 2-D
    stages: the new residual blocks come after the old ones with their second convolution at zero. Both
    start as the identity, so the grown model computes the same function. `causal_attention` may go from
    True to False (the weights carry over; the function changes, and fine-tuning adapts to it). Any
    other difference, or a smaller depth, raises ValueError."""
    old = model.cfg
    old_quarter, old_eighth = decoder_blocks(old)
    new_quarter, new_eighth = decoder_blocks(cfg)
    resolved_old = ModelConfig.from_dict({**old.to_dict(), "decoder_blocks_quarter": old_quarter,
                                          "decoder_blocks_eighth": old_eighth})
    resolved_new = ModelConfig.from_dict({**cfg.to_dict(), "decoder_blocks_quarter": new_quarter,
                                          "decoder_blocks_eighth": new_eighth})
    same_otherwise = ModelConfig.from_dict({**resolved_old.to_dict(), "causal_attention": cfg.causal_attention,
                                            **{k: getattr(resolved_new, k) for k in GROWABLE_DEPTHS}})
    shrinks = any(getattr(resolved_new, k) < getattr(resolved_old, k) for k in GROWABLE_DEPTHS)
    if same_otherwise != resolved_new or shrinks or (cfg.causal_attention and not old.causal_attention):
        raise ValueError("only the depths of the compressor, decompressor and decoder stages may differ from "
                         "the starting weights' config (and only upwards), and causal attention may be "
                         "switched off")
    grown = InfoTok(cfg).to(next(model.parameters()).device)
    missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(".blocks." in k or ".quarter." in k or ".eighth." in k for k in missing), (
        missing, unexpected)
    for transformer, kept in ((grown.compressor, old.compressor_layers),
                              (grown.decompressor, old.decompressor_layers)):
        for block in transformer.blocks[kept:]:
            for out in (block.attn.proj, block.mlp.fc_out):
                nn.init.zeros_(out.weight)
                nn.init.zeros_(out.bias)
    for stage, kept in ((grown.decoder.quarter, old_quarter), (grown.decoder.eighth, old_eighth)):
        for block in stage[kept:]:
            nn.init.zeros_(block.conv2.weight)
            nn.init.zeros_(block.conv2.bias)
    grown.adaptive = model.adaptive
    return grown


def zero_linear(fan_in: int, fan_out: int) -> nn.Linear:
    """A linear layer that starts at zero: a new residual branch begins as the identity."""
    layer = nn.Linear(fan_in, fan_out)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
