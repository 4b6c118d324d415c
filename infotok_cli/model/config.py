"""The hyper-parameters of an InfoTok model (`ModelConfig`), stored as JSON in the weights' metadata and
bounded on the way in (a config can come from an untrusted weights file)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..constants import FSQ_LEVELS
from .bounds import MAX_PARAMETERS, boolean, bounded_int, bounded_text, fsq_levels, mapping, short


@dataclass
class ModelConfig:
    """Hyper-parameters of one InfoTok model; stored as JSON in the weights' metadata."""

    name: str = "infotok-m"
    levels: tuple[int, ...] = FSQ_LEVELS
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
        """A config from its JSON form, every field checked (ValueError): it may come from an untrusted
        weights file, and its sizes decide what building the model allocates."""
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in mapping("model config", d).items() if k in known}
        if "name" in kwargs:
            kwargs["name"] = bounded_text("model config name", kwargs["name"])
        if "layout" in kwargs and kwargs["layout"] not in ("residual", "serial"):
            raise ValueError(f"unknown model layout {short(kwargs['layout'])}")
        if "levels" in kwargs:
            kwargs["levels"] = fsq_levels("model config levels", kwargs["levels"])
        for key, (low, high) in CONFIG_BOUNDS.items():
            if key in kwargs and not (kwargs[key] is None and key in NULLABLE):
                bounded_int(f"model config {key}", kwargs[key], low, high)
        if "causal_attention" in kwargs:
            boolean("model config causal_attention", kwargs["causal_attention"])
        if "extra" in kwargs:
            mapping("model config extra", kwargs["extra"])
        cfg = cls(**kwargs)
        if cfg.width % cfg.heads:  # attention splits the width into equal heads
            raise ValueError(f"model config width={cfg.width} is not a multiple of heads={cfg.heads}")
        if cfg.estimated_parameters() > MAX_PARAMETERS:
            raise ValueError(f"model config asks for about {cfg.estimated_parameters():,} parameters, "
                             f"more than {MAX_PARAMETERS:,}")
        return cfg

    def estimated_parameters(self) -> int:
        """An upper bound on the model's parameter count, from the config alone (the weights of every
        convolution, linear map and embedding, counted generously): refuses a config that would
        allocate gigabytes before it is built."""
        c4, c8, latent, width = self.channels_quarter, self.channels_eighth, self.latent_dim, self.width
        enc_q, enc_e = self.blocks_quarter, self.blocks_eighth
        dec_q = enc_q if self.decoder_blocks_quarter is None else self.decoder_blocks_quarter
        dec_e = enc_e if self.decoder_blocks_eighth is None else self.decoder_blocks_eighth
        convs_2d = (enc_q + dec_q) * 2 * 9 * c4 * c4 + (enc_e + dec_e) * 2 * 9 * c8 * c8
        stems = 2 * (9 * 48 * c4 + 4 * c4 * c8 + 4 * c8 * latent)  # 3x3 pixel stems, resampling, time folds
        temporal = 2 * self.temporal_blocks * 2 * 9 * latent * latent
        layers = self.compressor_layers + self.decompressor_layers
        transformer = layers * (14 * width * width + 40 * width) + 2 * width * (self.max_latent_frames
                                                                               + self.attn_window ** 2)
        token_maps = 8 * latent * width + 4 * latent * len(self.levels) + 8 * latent
        blocks = enc_q + dec_q + enc_e + dec_e + 2 * self.temporal_blocks + layers + 8
        biases = 4 * blocks * (c4 + c8 + latent + width + 48)
        return convs_2d + stems + temporal + transformer + token_maps + biases

    def to_dict(self) -> dict:
        d = asdict(self)
        d["levels"] = list(self.levels)
        return d


# Allowed ranges of the integer config fields (far beyond any model that runs on one machine; infotok-m
# has widths up to 192, 4 layers and 4 heads). The parameter estimate then bounds their combination.
CONFIG_BOUNDS = {
    "channels_quarter": (1, 4096), "channels_eighth": (1, 4096), "latent_dim": (1, 4096), "width": (1, 4096),
    "heads": (1, 64), "attn_window": (1, 64), "max_latent_frames": (1, 4096), "frame_chunk": (1, 4096),
    "blocks_quarter": (0, 64), "blocks_eighth": (0, 64), "temporal_blocks": (0, 64),
    "compressor_layers": (0, 64), "decompressor_layers": (0, 64),
    "decoder_blocks_quarter": (0, 64), "decoder_blocks_eighth": (0, 64),
}
NULLABLE = ("decoder_blocks_quarter", "decoder_blocks_eighth")  # None: as deep as the encoder

