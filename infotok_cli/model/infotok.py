"""The InfoTok tokenizer model, top to bottom.

Data flow (one coding window of T = 1 + 4k frames, pixels in [-1, 1]):

    frames [B,3,T,H,W]
      -> Encoder        causal 4x8x8 compression: frame 0 alone, then groups of 4 frames
      -> Compressor     (adaptive) residual transformer over latent tokens (attention inside 8x8
                        spatial windows, block-causal across latent frames)
      -> to_code        RMS normalisation, then a linear map to the 6 FSQ dims
      -> FSQ            levels (8,8,8,5,5,5) = 64,000 codes, one token per latent position
      -> (router keeps a subset of positions; see coding/router.py)
      -> from_code      linear map back; dropped positions get a learned "dropped" vector
      -> Decompressor   (adaptive) residual transformer that fills dropped positions
      -> Decoder        mirror of the encoder back to frames

Encoder, to_code, FSQ, from_code and Decoder alone form the *base tokenizer*. As in the paper, InfoTok
is a plug-in on a pre-trained base: the compressor and decompressor are residual branches whose output
projections start at zero, so a freshly added adaptive path leaves the base model unchanged. Training
runs in stages (see train/): the base at full rate with the adaptive path switched off
(`model.adaptive = False`, cheap steps), then the adaptive path with the Flex objective.
"""

from __future__ import annotations

import torch
from torch import nn

from ..constants import SPATIAL_STRIDE
from .config import ModelConfig
from .family import tokens_for_rate
from .fsq import FSQ
from .layers import Decoder, Encoder, RMSNorm, TokenTransformer, decoder_blocks


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

    # What the tokenizer engine calls on any model family (model/family.py).
    default_placement = "probe-gain"  # without a learned router head: two probe decodes per window
    keep_count = staticmethod(tokens_for_rate)
    # Cores of 768 pixels with a 128-pixel halo: tokens as the whole frame's up to float noise (USAGE.md, "Tiling").
    default_tile = (768, 128)
    largest_side = None

    @property
    def tile_align(self) -> int:
        """Tiles start on the attention windows' borders, so a crop's windows are the whole frame's."""
        return SPATIAL_STRIDE * self.cfg.attn_window

    def bound_memory(self, latent_frames_per_chunk: int) -> None:
        """Run the per-frame 2-D stages this many latent frames at a time (results do not depend on it)."""
        self.encoder.frame_chunk = self.decoder.frame_chunk = latent_frames_per_chunk

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
        if self.cfg.layout == "serial":
            return self.to_code(self.compressor(self.enc_in(self.encoder(x).permute(0, 2, 3, 4, 1))))
        return self.to_code(self.latent(x)[0])

    def latent(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames -> (the normalised latent that enters the code map [B,t,h,w,D], the float32 mean square
        it was divided by [B,t,h,w,1]); residual layout only."""
        z = self.encoder(x).permute(0, 2, 3, 4, 1)  # [B,t,h,w,D]
        if self.adaptive:
            z = z + self.compressor_out(self.compressor(self.compressor_in(z)))
        return self.code_norm.normalise(z)

    def encode_with_latent(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """`encode` (the same arithmetic, so the same codes and indices) that also returns `latent`'s two
        tensors, which the learned router head reads: (codes, indices, latent, mean square)."""
        if self.cfg.layout != "residual":
            raise ValueError("the router head needs a model with the residual layout")
        z, mean_square = self.latent(x)
        codes, indices = self.quantizer(self.to_code(z))
        return codes, indices, z, mean_square

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
