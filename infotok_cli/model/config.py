"""The hyper-parameters of an InfoTok model (`ModelConfig`), stored as JSON in the weights' metadata and
bounded on the way in (a config can come from an untrusted weights file)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..constants import FSQ_LEVELS


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

