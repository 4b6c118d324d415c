"""The InfoTok-Flex configuration (`FlexConfig`) and its checked reading from the release's JSON form.

The configuration comes from `models import --config` or from the metadata of an imported weights file,
so it is untrusted: `FlexConfig.from_release` checks every field (model/bounds.py) and the relations
between them before anything is built. The architecture itself is in flex.py and flex_cnn.py; the
down- and upsampling plans live here because the checks need them and they are arithmetic only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..constants import SPATIAL_STRIDE, TEMPORAL_STRIDE
from .bounds import (
    MAX_PARAMETERS,
    boolean,
    bounded_float,
    bounded_int,
    bounded_ints,
    fsq_levels,
    mapping,
    power_of_two,
    short,
)

# Bounds of the integer fields, far above the release (channels 128 x [2, 4, 4], 2 blocks per level,
# width 256 with 32 heads and 8 + 8 layers, a 96 x 96 rotary table, 49 latent frames).
MAX_CHANNELS = 4096  # any convolution's width (channels x a multiplier, z_channels)
MAX_LEVELS_CNN = 8  # entries of channels_mult
MAX_RES_BLOCKS = 16
MAX_WIDTH = 4096  # transformer hidden and intermediate sizes
MAX_HEADS = 256
MAX_LAYERS = 64  # per transformer
MAX_LATENT_SIDE = 1024
MAX_LATENT_FRAMES = 4096
MAX_ROPE_ENTRIES = 1 << 23  # side x side x head_dim / 2 of each rotary table (the release: 36,864)


def down_plan(cfg: FlexConfig) -> tuple[list[bool], list[bool]]:
    """(spatial, temporal) downsampling flags for encoder levels 0..n-2, as the release derives them."""
    n = len(cfg.channels_mult)
    log_patch = int(math.log2(cfg.patch_size))
    n_s = int(math.log2(cfg.spatial_compression)) - log_patch
    n_t = int(math.log2(cfg.temporal_compression)) - log_patch
    return [i < n_s for i in range(n - 1)], [i < n_t for i in range(n - 1)]


def up_plan(cfg: FlexConfig) -> tuple[list[bool], list[bool]]:
    """(spatial, temporal) upsampling flags for decoder levels n-1..1 (in execution order)."""
    n = len(cfg.channels_mult)
    log_patch = int(math.log2(cfg.patch_size))
    n_s = int(math.log2(cfg.spatial_compression)) - log_patch
    n_t = int(math.log2(cfg.temporal_compression)) - log_patch
    spatial, temporal = [], []
    for level in reversed(range(1, n)):
        r = n - level - 1  # the encoder level this upsampling mirrors
        t_up = r < n_t if cfg.legacy_mode else 0 < r < n_t + 1
        temporal.append(t_up)
        spatial.append(t_up or (r < n_s and n_s > n_t))
    return spatial, temporal


@dataclass
class FlexConfig:
    # CNN
    in_channels: int = 3
    out_channels: int = 3
    channels: int = 128
    channels_mult: tuple[int, ...] = (2, 4, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (32,)
    resolution: int = 1024  # only used, as in the release, to decide at which levels extra attention sits
    patch_size: int = 2
    z_channels: int = 256
    spatial_compression: int = 8
    temporal_compression: int = 4
    legacy_mode: bool = False
    # quantizer
    levels: tuple[int, ...] = (8, 8, 8, 5, 5, 5)
    # transformer compressor / decompressor
    hidden_size: int = 256
    intermediate_size: int = 512
    num_encoder_layers: int = 8
    num_decoder_layers: int = 8
    num_heads: int = 32
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    max_latent_frames: int = 49  # rows of the learned temporal embedding
    max_latent_side: int = 96  # the 2-D rotary table is max_latent_side x max_latent_side

    @property
    def embedding_dim(self) -> int:
        return len(self.levels)

    @classmethod
    def from_release(cls, cfg: Any) -> FlexConfig:
        """Build from the release's network configuration (manifest ``config`` entry or small-config.json),
        every field checked: raises ValueError naming the first unsupported or out-of-range one."""
        try:
            return cls._from_release(cfg)
        except ValueError as exc:
            raise ValueError(f"unsupported InfoTok-Flex config: {exc}") from None

    @classmethod
    def _from_release(cls, cfg: Any) -> FlexConfig:
        cfg = mapping("the config", cfg)
        if isinstance(cfg.get("config"), dict):  # a whole manifest was passed
            cfg = cfg["config"]
        vit = mapping("vit_config", cfg.get("vit_config"))

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        def named(key: str, allowed: str, source: dict = cfg, default: object = None) -> None:
            value = source.get(key, default)
            need(value == allowed, f"{key} {short(value)} (only {allowed!r})")

        named("patch_method", "haar", default="haar")
        named("quantizer", "FSQ")
        named("encoder", "FACTORIZED")
        named("decoder", "FACTORIZED")
        named("method", "mse", vit, "mse")
        need(cfg.get("use_vit") is True, "use_vit must be true (the Flex model has the transformer stages)")
        need(bounded_int("z_factor", cfg.get("z_factor", 1), 1, 1) == 1, "z_factor (only 1)")
        need(not boolean("vit_config.concat_decode_2d", vit.get("concat_decode_2d", False)),
             "vit_config.concat_decode_2d (only false)")
        need(not boolean("vit_config.special_attn", vit.get("special_attn", False)),
             "vit_config.special_attn (only false)")
        need(bounded_float("vit_config.switch_rotary_to_1d", vit.get("switch_rotary_to_1d", 1.0), 0.0, 1e9) >= 1,
             "vit_config.switch_rotary_to_1d < 1 (1-D rotary)")
        levels = fsq_levels("levels", cfg.get("levels"))
        need(bounded_int("embedding_dim", cfg.get("embedding_dim", len(levels)), 1, 64) == len(levels),
             "embedding_dim must equal len(levels)")
        hidden = bounded_int("vit_config.hidden_size", vit.get("hidden_size"), 2, MAX_WIDTH)
        heads = bounded_int("vit_config.num_attention_heads", vit.get("num_attention_heads"), 1, MAX_HEADS)
        # the 2-D rotary embedding turns pairs of each head's channels
        need(hidden % heads == 0 and (hidden // heads) % 2 == 0, "hidden_size / num_attention_heads must be even")
        config = cls(
            # the codec codes RGB video: any other channel count cannot code a frame
            in_channels=bounded_int("in_channels", cfg.get("in_channels", 3), 3, 3),
            out_channels=bounded_int("out_channels", cfg.get("out_channels", 3), 3, 3),
            channels=bounded_int("channels", cfg.get("channels"), 1, MAX_CHANNELS),
            channels_mult=bounded_ints("channels_mult", cfg.get("channels_mult"), 1, MAX_CHANNELS, 1, MAX_LEVELS_CNN),
            num_res_blocks=bounded_int("num_res_blocks", cfg.get("num_res_blocks"), 1, MAX_RES_BLOCKS),
            attn_resolutions=bounded_ints("attn_resolutions", cfg.get("attn_resolutions", []), 1, 1 << 16, 0, 16),
            resolution=bounded_int("resolution", cfg.get("resolution", 1024), 1, 1 << 16),
            patch_size=power_of_two("patch_size", cfg.get("patch_size", 1), 1, 8),
            z_channels=bounded_int("z_channels", cfg.get("z_channels"), 1, MAX_CHANNELS),
            # the .itok format's latent grid is one position per 4 frames x 8 x 8 pixels
            spatial_compression=bounded_int("spatial_compression", cfg.get("spatial_compression"),
                                            SPATIAL_STRIDE, SPATIAL_STRIDE),
            temporal_compression=bounded_int("temporal_compression", cfg.get("temporal_compression"),
                                             TEMPORAL_STRIDE, TEMPORAL_STRIDE),
            legacy_mode=boolean("legacy_mode", cfg.get("legacy_mode", False)),
            levels=levels,
            hidden_size=hidden,
            intermediate_size=bounded_int("vit_config.intermediate_size", vit.get("intermediate_size"), 1, MAX_WIDTH),
            num_encoder_layers=bounded_int("vit_config.num_encoder_layers", vit.get("num_encoder_layers"),
                                           0, MAX_LAYERS),
            num_decoder_layers=bounded_int("vit_config.num_decoder_layers", vit.get("num_decoder_layers"),
                                           0, MAX_LAYERS),
            num_heads=heads,
            rope_theta=bounded_float("vit_config.theta", vit.get("theta", 10000.0), 1.0, 1e12),
            rms_norm_eps=bounded_float("vit_config.rms_norm_eps", vit.get("rms_norm_eps", 1e-5), 1e-12, 1.0),
            initializer_range=bounded_float("vit_config.initializer_range", vit.get("initializer_range", 0.02),
                                            0.0, 10.0),
            max_latent_frames=bounded_int("vit_config.max_num_video_frames", vit.get("max_num_video_frames", 49),
                                          1, MAX_LATENT_FRAMES),
            max_latent_side=bounded_int("vit_config.max_sequence_length", vit.get("max_sequence_length", 96),
                                        1, MAX_LATENT_SIDE),
        )
        widest = config.channels * max(config.channels_mult)
        need(widest <= MAX_CHANNELS, f"channels x channels_mult = {widest} exceeds {MAX_CHANNELS}")
        rope = config.max_latent_side ** 2 * (hidden // heads) // 2
        need(rope <= MAX_ROPE_ENTRIES, f"a rotary table of {rope:,} entries exceeds {MAX_ROPE_ENTRIES:,}")
        down_s, down_t = down_plan(config)
        up_s, up_t = up_plan(config)
        need(config.patch_size * 2 ** sum(down_s) == config.spatial_compression,
             "spatial_compression does not match the levels")
        need(config.patch_size * 2 ** sum(down_t) == config.temporal_compression,
             "temporal_compression does not match the levels")
        need(sum(up_s) == sum(down_s) and sum(up_t) == sum(down_t), "decoder upsampling does not mirror the encoder")
        estimate = config.estimated_parameters()
        need(estimate <= MAX_PARAMETERS, f"about {estimate:,} parameters, more than {MAX_PARAMETERS:,}")
        return config

    def estimated_parameters(self) -> int:
        """An upper bound on the parameter count from the config alone (every level at its widest, each
        residual block as two factorized 3x3x3 convolutions plus attention), so that a config asking
        for gigabytes is refused before anything is built."""
        widest = self.channels * max(self.channels_mult)
        levels = len(self.channels_mult)
        blocks = levels * (2 * self.num_res_blocks + 1) + 4  # encoder and decoder levels, mid blocks
        per_block = 2 * (12 * widest * widest + 4 * widest) + 8 * (widest * widest + widest)  # convs, attention
        resampling = 2 * levels * 8 * widest * widest
        stems = 2 * 12 * widest * (self.z_channels + 3 * self.patch_size ** 3)
        hidden, inner = self.hidden_size, self.intermediate_size
        per_layer = 4 * hidden * hidden + 4 * hidden + 3 * hidden * inner + 2 * hidden
        layers = (self.num_encoder_layers + self.num_decoder_layers) * per_layer
        maps = 2 * self.z_channels * hidden + 2 * (self.z_channels + 1) * (len(self.levels) + 1)
        return blocks * per_block + resampling + stems + layers + maps + self.max_latent_frames * hidden
