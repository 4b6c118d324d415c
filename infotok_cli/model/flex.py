"""InfoTok-Flex video tokenizer: an independent, single-file PyTorch implementation.

Source of the facts
-------------------
The architecture is the one behind the released InfoTok-Flex checkpoint (ICLR 2026, "InfoTok"; network
``OursDiscreteVideoTokenizer``, configuration ``ours_discrete_video_4x8x8_256p_88``, release repository
``YWolfeee/InfoTok`` which builds on NVIDIA's Cosmos tokenizer). The code below was written from a reading of
that release, not copied from it; its ``state_dict`` parameter names and shapes equal the release's, so the
published weights load into it (see ``load_release_state_dict``). A conformance fixture produced by running the
authors' code checks every stage (``tests/test_model_flex.py``).

Data flow (release configuration in brackets; video in [-1, 1], shape [B, 3, T, H, W], T = 1 + 4k, H, W % 8 == 0)
-----------------------------------------------------------------------------------------------------------------
1. Haar wavelet patcher (patch 2). The first frame is repeated so that it forms a patch on its own, then every
   2x2x2 block becomes 8 signed means ("bands"): [B, 3, T, H, W] -> [B, 24, (T+1)/2, H/2, W/2].
2. Factorized causal 3-D CNN encoder (Cosmos "FACTORIZED"): every 3x3x3 convolution is split into a spatial
   1x3x3 one (zero padding) and a temporal 3x1x1 one that is causal (it pads in front by repeating the first
   frame). GroupNorm with one group is applied per frame, so nothing looks into the future. Levels of residual
   blocks with channel multipliers [2, 4, 4] and hybrid (strided conv + average pool) downsampling; a middle
   block with spatial self-attention per frame followed by causal temporal self-attention.
   Output: [B, 256, t, h, w] with t = 1 + (T-1)/4, h = H/8, w = W/8 ("enc_cnn").
3. Transformer compressor (8 layers, width 256, 32 heads, RMSNorm, SwiGLU MLP): tokens are the latent
   positions in (t, h, w) order plus a learned per-latent-frame embedding; queries of latent frame i attend to
   the keys of frames 0..i (block-causal); q and k get a 2-D rotary embedding of the (row, column) position
   inside the frame. Output replaces the latent ("enc_vit").
4. 1x1x1 conv to 6 dims ("pre_quant"), then FSQ with levels (8, 8, 8, 5, 5, 5): 64,000 codes. "codes" are the
   6-d code vectors in [-1, 1]; "indices" the integer code ids.
5. Adaptive rate ("Flex"): the clip is decoded once from all codes; the per-latent-position mean absolute error
   ("chunk_loss") ranks positions, and only the hardest ones are kept for a target rate; the codes of dropped
   positions are set to the zero vector before decoding.
6. Decoding mirrors encoding: 1x1x1 conv back to 256 channels ("post_quant"), a transformer decompressor of the
   same design ("dec_vit"), the factorized causal CNN decoder with hybrid (repeat + conv) upsampling, and the
   inverse Haar transform, which drops the repeated first frame. The output is not clamped.

Two quirks of the release that this file reproduces on purpose:
* The attention layers project the input with the packed q/k/v weights, apply the rotary embedding, and then
  the release's ``nn.MultiheadAttention`` call projects q, k and v *again* with the same weights. Both
  projections are needed to reproduce the released numbers.
* The rotary table covers 96 x 96 latent positions (768 x 768 pixels) and the temporal embedding 49 latent
  frames (193 video frames); larger inputs are refused (see ``FlexTokenizer._check_latent_grid``).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .flex_cnn import CausalConv, CnnDecoder, CnnEncoder
from .flex_config import FlexConfig

# Buffers the release stores in its state dict although they can be recomputed from the configuration (wavelet
# filters, the FSQ level table and implicit codebook, training-time rate statistics). They are not persistent
# here; the loader accepts checkpoints with or without them.
RECOMPUTABLE_PREFIXES = ("encoder.patcher3d.", "decoder.unpatcher3d.", "quantizer.")
RECOMPUTABLE_KEYS = ("save_loss", "ema_loss")
INDEX_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)  # of the stored FSQ level table


# ----------------------------------------------------------------------------------------------------------------
# Finite scalar quantization
# ----------------------------------------------------------------------------------------------------------------


class FSQ(nn.Module):
    """FSQ (Mentzer et al. 2023): each of the d = len(levels) channels is squashed by a shifted tanh into
    [-(L-1)/2 (1 + 1e-3), ...], rounded to an integer level and rescaled by 1 / (L // 2). For even L the grid is
    offset by 1/2 so that it has L points, -L/2 .. L/2 - 1 (code values -1 .. 1 - 2/L). Index = sum_i digit_i *
    prod_{j<i} L_j with digit_i = level_i + L_i // 2 (channel 0 least significant). No parameters."""

    def __init__(self, levels: tuple[int, ...]) -> None:
        super().__init__()
        lv = torch.tensor(levels, dtype=torch.int32)
        self.register_buffer("_levels", lv, persistent=False)
        self.register_buffer("_basis", torch.cumprod(torch.tensor((1,) + tuple(levels[:-1])), 0), persistent=False)

    @property
    def codebook_size(self) -> int:
        return int(self._levels.prod())

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z: [B, d, ...] -> (codes [B, d, ...] float32 in [-1, 1], indices [B, ...] int32)."""
        zl = z.float().movedim(1, -1)
        levels = self._levels
        # Same float32 operation order as the release, so that values at rounding boundaries round alike.
        half_l = (levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        shift = (offset / half_l).atanh()
        rounded = ((zl + shift).tanh() * half_l - offset).round()
        half_width = levels // 2
        codes = rounded / half_width
        digits = (rounded + half_width).long()
        indices = (digits * self._basis).sum(-1).to(torch.int32)
        return codes.movedim(-1, 1), indices

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """indices [B, ...] -> codes [B, d, ...] (float32)."""
        digits = (indices.long().unsqueeze(-1) // self._basis) % self._levels
        half_width = self._levels // 2
        return ((digits - half_width) / half_width).float().movedim(-1, 1)


# ----------------------------------------------------------------------------------------------------------------
# Transformer compressor / decompressor
# ----------------------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def rope_table_2d(head_dim: int, side: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [side, side, head_dim/2] of the 2-D rotary embedding: of the head_dim/2 rotation pairs the first
    half turns with the row index (even-indexed base frequencies), the second half with the column index
    (odd-indexed base frequencies). Float32, computed as in the release."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
    pos = torch.arange(side)
    rows = torch.outer(pos, freqs[::2]).float()
    cols = torch.outer(pos, freqs[1::2]).float()
    angles = torch.cat([rows[:, None, :].expand(side, side, -1), cols[None, :, :].expand(side, side, -1)], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope_2d(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, t, h, w, heads, head_dim]; rotates the (2j, 2j+1) pairs by the angle of (row, col); cos/sin [h, w, d/2]."""
    xf = x.float().unflatten(-1, (-1, 2))
    a, b = xf[..., 0], xf[..., 1]
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2).to(x.dtype)


class PackedAttention(nn.Module):
    """Holds the release's ``nn.MultiheadAttention`` parameters (keys ``mha.in_proj_weight`` ...)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)


class LatentAttention(nn.Module):
    """Multi-head attention over latent tokens with 2-D rotary embedding and block-causal frames."""

    # Upper bound on attention scores materialised per SDPA call (elements), in case the backend builds them.
    max_scores = 1 << 26

    def __init__(self, cfg: FlexConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.mha = PackedAttention(cfg.hidden_size)

    def forward(
        self, x: torch.Tensor, grid: tuple[int, int, int], cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        bsz, length, dim = x.shape
        t, h, w = grid
        nh, hd = self.num_heads, dim // self.num_heads
        weight, bias = self.mha.in_proj_weight, self.mha.in_proj_bias
        q, k, v = F.linear(x, weight, bias).chunk(3, dim=-1)
        q = apply_rope_2d(q.reshape(bsz, t, h, w, nh, hd), cos, sin).reshape(bsz, length, dim)
        k = apply_rope_2d(k.reshape(bsz, t, h, w, nh, hd), cos, sin).reshape(bsz, length, dim)
        # The release passes the projected, rotated q/k/v to nn.MultiheadAttention, which projects them again.
        wq, wk, wv = weight.chunk(3)
        bq, bk, bv = bias.chunk(3)

        def heads(z: torch.Tensor, wz: torch.Tensor, bz: torch.Tensor) -> torch.Tensor:
            return F.linear(z, wz, bz).reshape(bsz, length, nh, hd).transpose(1, 2)

        q, k, v = heads(q, wq, bq), heads(k, wk, bk), heads(v, wv, bv)
        # Block-causal attention without an L x L mask: queries of frame i see exactly the keys of frames 0..i.
        n = h * w
        out = torch.empty_like(q)
        for i in range(t):
            keys = (i + 1) * n
            step = max(1, min(n, self.max_scores // (bsz * nh * keys)))
            for s in range(i * n, (i + 1) * n, step):
                e = min(s + step, (i + 1) * n)
                out[:, :, s:e] = F.scaled_dot_product_attention(q[:, :, s:e], k[:, :, :keys], v[:, :, :keys])
        return self.mha.out_proj(out.transpose(1, 2).reshape(bsz, length, dim))


class LatentBlock(nn.Module):
    """Pre-norm transformer block: x + attn(RMSNorm(x)); x + SwiGLU(RMSNorm(x))."""

    def __init__(self, cfg: FlexConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attention = LatentAttention(cfg)
        self.ffn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size)

    def forward(
        self, x: torch.Tensor, grid: tuple[int, int, int], cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), grid, cos, sin)
        return x + self.mlp(self.ffn_norm(x))


# ----------------------------------------------------------------------------------------------------------------
# The tokenizer
# ----------------------------------------------------------------------------------------------------------------


class FlexTokenizer(nn.Module):
    """InfoTok-Flex. Inputs are videos in [-1, 1], [B, 3, T, H, W] with T = 1 + 4k and H, W multiples of 8
    (release configuration); latents are [B, C, t, h, w] with t = 1 + (T - 1) / 4, h = H / 8, w = W / 8."""

    def __init__(self, cfg: FlexConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.temporal_embed = nn.Parameter(torch.empty(cfg.max_latent_frames, cfg.hidden_size))
        self.encoder = CnnEncoder(cfg)
        self.decoder = CnnDecoder(cfg)
        self.quant_conv = CausalConv(cfg.z_channels, cfg.embedding_dim)
        self.post_quant_conv = CausalConv(cfg.embedding_dim, cfg.z_channels)
        self.quantizer = FSQ(cfg.levels)
        if cfg.hidden_size != cfg.z_channels:  # the release adds bias-free linear maps in this case only
            self.vit_conv = nn.Linear(cfg.z_channels, cfg.hidden_size, bias=False)
            self.post_vit_conv = nn.Linear(cfg.hidden_size, cfg.z_channels, bias=False)
        self.vit_encoder = nn.ModuleList(LatentBlock(cfg) for _ in range(cfg.num_encoder_layers))
        self.vit_decoder = nn.ModuleList(LatentBlock(cfg) for _ in range(cfg.num_decoder_layers))
        cos, sin = rope_table_2d(cfg.hidden_size // cfg.num_heads, cfg.max_latent_side, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        std = self.cfg.initializer_range
        nn.init.normal_(self.temporal_embed, std=std)
        for m in self.modules():
            if isinstance(m, PackedAttention):
                nn.init.normal_(m.in_proj_weight, std=std)
                nn.init.normal_(m.out_proj.weight, std=std)
                nn.init.zeros_(m.out_proj.bias)
            elif isinstance(m, SwiGLU):
                for lin in (m.w1, m.w2, m.w3):
                    nn.init.normal_(lin.weight, std=std)

    # ---- shape checks -----------------------------------------------------------------------------------------

    def _check_video(self, x: torch.Tensor) -> None:
        c = self.cfg
        if x.dim() != 5 or x.shape[1] != c.in_channels:
            raise ValueError(f"expected video [B, {c.in_channels}, T, H, W], got shape {tuple(x.shape)}")
        t, h, w = x.shape[2:]
        if (t - 1) % c.temporal_compression != 0:
            raise ValueError(f"T must be 1 + {c.temporal_compression}k frames, got T={t}")
        if h % c.spatial_compression or w % c.spatial_compression:
            raise ValueError(f"H and W must be multiples of {c.spatial_compression}, got {h}x{w}")
        self._check_latent_grid(
            1 + (t - 1) // c.temporal_compression, h // c.spatial_compression, w // c.spatial_compression
        )

    def _check_latent_grid(self, t: int, h: int, w: int) -> None:
        c = self.cfg
        # The release's 2-D rotary table has max_latent_side^2 entries and it asserts on larger grids. Tiling or
        # extending the table would change the outputs relative to the reference, so larger inputs are refused.
        if h > c.max_latent_side or w > c.max_latent_side:
            side = c.max_latent_side * c.spatial_compression
            raise ValueError(
                f"latent grid {h}x{w} exceeds the rotary table {c.max_latent_side}x{c.max_latent_side} "
                f"(frames larger than {side}x{side} pixels are not supported)"
            )
        if t > c.max_latent_frames:
            frames = 1 + (c.max_latent_frames - 1) * c.temporal_compression
            raise ValueError(
                f"{t} latent frames exceed the temporal embedding ({c.max_latent_frames}); "
                f"at most {frames} video frames per window"
            )

    # ---- stages -----------------------------------------------------------------------------------------------

    def encode_cnn(self, x: torch.Tensor) -> torch.Tensor:
        """Video [B, 3, T, H, W] -> CNN latent [B, z_channels, t, h, w] ("enc_cnn")."""
        self._check_video(x)
        return self.encoder(x)

    def _transformer(self, z: torch.Tensor, blocks: nn.ModuleList) -> torch.Tensor:
        b, _, t, h, w = z.shape
        self._check_latent_grid(t, h, w)
        x = z.permute(0, 2, 3, 4, 1)
        if hasattr(self, "vit_conv"):
            x = self.vit_conv(x)
        x = (x.reshape(b, t, h * w, -1) + self.temporal_embed[:t, None, :]).reshape(b, t * h * w, -1)
        cos, sin = self.rope_cos[:h, :w], self.rope_sin[:h, :w]
        for block in blocks:
            x = block(x, (t, h, w), cos, sin)
        if hasattr(self, "post_vit_conv"):
            x = self.post_vit_conv(x)
        return x.reshape(b, t, h, w, -1).permute(0, 4, 1, 2, 3)

    def compress(self, z: torch.Tensor) -> torch.Tensor:
        """Transformer compressor: [B, z_channels, t, h, w] -> same shape ("enc_vit")."""
        return self._transformer(z, self.vit_encoder)

    def pre_quant(self, z: torch.Tensor) -> torch.Tensor:
        """1x1x1 map to the FSQ dimension: -> [B, 6, t, h, w] ("pre_quant")."""
        return self.quant_conv(z)

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """FSQ: [B, 6, t, h, w] -> (codes [B, 6, t, h, w] float32, indices [B, t, h, w] int32)."""
        return self.quantizer(z)

    def post_quant(self, codes: torch.Tensor) -> torch.Tensor:
        """1x1x1 map back: codes [B, 6, t, h, w] -> [B, z_channels, t, h, w] ("post_quant")."""
        return self.post_quant_conv(codes.to(self.post_quant_conv.conv3d.weight.dtype))

    def decompress(self, h: torch.Tensor) -> torch.Tensor:
        """Transformer decompressor: [B, z_channels, t, h, w] -> same shape ("dec_vit")."""
        return self._transformer(h, self.vit_decoder)

    def decode_cnn(self, h: torch.Tensor) -> torch.Tensor:
        """CNN decoder + inverse Haar: [B, z_channels, t, h, w] -> video [B, 3, 1 + 4(t-1), 8h, 8w], unclamped."""
        self._check_latent_grid(*h.shape[2:])
        return self.decoder(h)

    # ---- convenience ------------------------------------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Video -> (codes [B, 6, t, h, w], indices [B, t, h, w])."""
        return self.quantize(self.pre_quant(self.compress(self.encode_cnn(x))))

    def decode(self, codes: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Codes -> video. ``keep`` ([B, t, h, w] bool) drops positions: their code becomes the zero vector, as in
        the release (note the zero vector is also a regular code, the middle level of every channel)."""
        if keep is not None:
            if keep.shape != codes.shape[:1] + codes.shape[2:]:
                raise ValueError(f"keep mask shape {tuple(keep.shape)} does not match codes {tuple(codes.shape)}")
            codes = codes * keep.unsqueeze(1).to(codes.dtype)
        return self.decode_cnn(self.decompress(self.post_quant(codes)))

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """indices [B, t, h, w] -> codes [B, 6, t, h, w]."""
        return self.quantizer.indices_to_codes(indices)

    # What the tokenizer engine calls on any model family (model/family.py).
    default_placement = "error"  # a decode costs this model 240 GFLOP per frame: the paper's one-decode router
    # Cores of 512 pixels with 128 of context: a crop is at most 768 pixels, its rotary table (USAGE.md, "Tiling").
    default_tile = (512, 128)

    @property
    def tile_align(self) -> int:
        return self.cfg.spatial_compression

    @property
    def largest_side(self) -> int:
        """The rotary table's side in pixels: the release codes nothing larger at once."""
        return self.cfg.max_latent_side * self.cfg.spatial_compression

    def for_inference_(self, dtype: torch.dtype) -> FlexTokenizer:
        """Eval mode. The weights stay float32: autocast casts them per call, and the norms need float32."""
        return self.eval()

    @staticmethod
    def keep_count(rate: float, capacity: int) -> int:
        """The count the release keeps (keep_mask's rule without ties): the positions strictly above the
        sorted error at index floor((1 - rate) (N - 1)), computed in float32 as it does, i.e. N - 1 - that
        index. It differs from round(rate x N) by at most one. Keep 1 keeps everything here (the release
        then decodes without a mask); at least one token."""
        if rate >= 1:
            return capacity
        q = min(1.0, max(0.0, as_float32(1.0 - as_float32(rate))))
        index = min(capacity - 1, max(0, math.floor(as_float32(q * (capacity - 1)))))
        return max(1, capacity - 1 - index)

    def bound_memory(self, latent_frames_per_chunk: int) -> None:
        """Nothing to do: this model bounds its attention's memory itself."""

    def decode_indices(self, indices: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Token indices [B, t, h, w] (values at dropped positions are ignored) -> frames."""
        return self.decode(self.indices_to_codes(indices), keep)

    def chunk_loss(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """Per-latent-position mean absolute error [B, t, h, w]: channel mean, frame 0 alone then groups of
        temporal_compression frames, then spatial_compression^2 pixel blocks."""
        c = self.cfg
        err = (x - recon).abs().mean(dim=1)
        b, t, h, w = err.shape
        rest = err[:, 1:].reshape(b, (t - 1) // c.temporal_compression, c.temporal_compression, h, w).mean(2)
        err = torch.cat([err[:, :1], rest], dim=1)
        s = c.spatial_compression
        return err.reshape(b, err.shape[1], h // s, s, w // s, s).mean(dim=(3, 5))

    @staticmethod
    def keep_mask(chunk_loss: torch.Tensor, rate: float) -> torch.Tensor:
        """Release rule ('mse' method): per clip, keep the positions whose chunk_loss is strictly greater than the
        sorted value at index floor((1 - rate) * (N - 1)). Returns bool [B, t, h, w]; about rate * N kept
        (even rate=1 drops the lowest position, as the release does: pass keep=None to decode from all codes)."""
        b = chunk_loss.shape[0]
        flat = chunk_loss.reshape(b, -1).float()
        n = flat.shape[1]
        q = (1 - torch.tensor(float(rate), dtype=torch.float32)).clamp(0, 1)  # float32, as the release computes it
        idx = int((q * (n - 1)).long().clamp(0, n - 1))
        bound = flat.sort(dim=-1).values[:, idx : idx + 1]
        return (flat > bound).reshape(chunk_loss.shape)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, rate: float | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Full pipeline. rate=None: decode from all codes. Otherwise decode once, rank positions by chunk_loss,
        keep about ``rate`` of them and decode again. Returns (reconstruction, keep mask or None)."""
        codes, _ = self.encode(x)
        recon = self.decode(codes)
        if rate is None:
            return recon, None
        keep = self.keep_mask(self.chunk_loss(x, recon), rate)
        return self.decode(codes, keep), keep


def as_float32(value: float) -> float:
    """`value` rounded to float32 (products and differences of float32 numbers are exact in a Python
    float, so rounding them once gives float32 arithmetic)."""
    return struct.unpack("f", struct.pack("f", value))[0]


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint loading
# ----------------------------------------------------------------------------------------------------------------


def release_parameter_names(manifest: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """{name: shape} of the parameters (not buffers) listed in a release manifest (manifest-full.json)."""
    return {k: tuple(v["shape"]) for k, v in manifest["state_dict"].items() if v.get("kind") == "parameter"}


def _is_recomputable(key: str) -> bool:
    return key in RECOMPUTABLE_KEYS or key.startswith(RECOMPUTABLE_PREFIXES)


def load_release_state_dict(model: FlexTokenizer, sd: dict[str, Any]) -> None:
    """Load a release checkpoint (or plain state dict) strictly by parameter names and shapes (see
    release_tensors). Raises ValueError naming the first missing / unexpected / mis-shaped parameters."""
    params = dict(model.named_parameters())
    tensors = release_tensors(sd, {k: tuple(p.shape) for k, p in params.items()}, model.cfg.levels)
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(tensors[k])


def release_tensors(sd: object, shapes: dict[str, tuple[int, ...]], levels: tuple[int, ...]) -> dict[str, Any]:
    """The tensors of a release checkpoint (or plain state dict) by parameter name, checked against the
    parameters' `shapes` (from a meta-device model: nothing needs to be allocated to check a checkpoint).

    Accepts ``{"model": {...}}`` wrappers and ``network.``-prefixed keys (only those are kept when present, as the
    authors' loader does); ignores non-tensor entries (optimizer, scheduler ...), ``ema.`` entries and recomputable
    buffers. Raises ValueError naming the first missing / unexpected / mis-shaped parameters."""
    if not isinstance(sd, dict):
        raise ValueError(f"the checkpoint holds a {type(sd).__name__}, not a state dict")
    if isinstance(sd.get("model"), dict):
        sd = sd["model"]
    tensors = {k: v for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if any(k.startswith("network.") for k in tensors):
        tensors = {k[len("network.") :]: v for k, v in tensors.items() if k.startswith("network.")}
    tensors = {k: v for k, v in tensors.items() if not k.startswith("ema.")}
    stored_levels = tensors.get("quantizer._levels")
    if stored_levels is not None and (stored_levels.numel() != len(levels) or stored_levels.dtype not in INDEX_DTYPES
                                      or tuple(int(v) for v in stored_levels.flatten().tolist()) != tuple(levels)):
        raise ValueError(f"checkpoint FSQ levels {stored_levels.flatten()[:16].tolist()} differ from the config "
                         f"{list(levels)}")
    tensors = {k: v for k, v in tensors.items() if not _is_recomputable(k)}
    missing = [k for k in shapes if k not in tensors]
    unexpected = [k for k in tensors if k not in shapes]
    wrong = [
        f"{k} {tuple(tensors[k].shape)}!={shape}"
        for k, shape in shapes.items()
        if k in tensors and tuple(tensors[k].shape) != shape
    ]
    if missing or unexpected or wrong:
        parts = [
            f"{label} ({len(names)}): {', '.join(n[:80] for n in names[:4])}{' ...' if len(names) > 4 else ''}"
            for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if names
        ]
        raise ValueError("state dict does not match the InfoTok-Flex parameters: " + "; ".join(parts))
    return tensors
