"""Constants shared across the package, each defined once.

Rank 0 of the package's layers: imports nothing but the standard library, so the format layer (which
must not import torch or PyAV) and the command line's quick paths can use them.
"""

from __future__ import annotations

import math

__version__ = "0.1.0"

# How a token budget is shared between windows (`--strategy`); stored in the .itok header.
STRATEGIES = ("window", "global", "video")
# Which positions keep their tokens (`--placement`; coding/router.py).
PLACEMENTS = ("probe-gain", "drop-gain", "error", "predicted")
DEFAULT_PLACEMENT = "probe-gain"
# The smallest keep rate: every window keeps at least 1/16 of its positions.
MIN_RATE = 1 / 16

# The model's compression: a latent position covers 4 frames (the first latent frame: frame 0 alone) and
# 8x8 pixels. Stored in the .itok header, which accepts no other strides.
TEMPORAL_STRIDE = 4
SPATIAL_STRIDE = 8

# FSQ levels: a token is the mixed-radix number d0 + 8 d1 + 64 d2 + 512 d3 + 2560 d4 + 12800 d5.
FSQ_LEVELS = (8, 8, 8, 5, 5, 5)
CODEBOOK_SIZE = math.prod(FSQ_LEVELS)  # 64000

# Video files: output suffix -> FFmpeg muxer (what `decompress` and `visualize` write), and the suffixes
# training data is collected by (every output suffix and a few more that PyAV reads).
VIDEO_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
VIDEO_SUFFIXES = tuple(VIDEO_CONTAINERS)
# Containers a video can be streamed in (`decompress ... - --format F`): name -> FFmpeg muxer.
STREAM_FORMATS = {"mkv": "matroska", "mp4": "mp4", "mov": "mov", "nut": "nut"}
VIDEO_INPUT_SUFFIXES = (*VIDEO_SUFFIXES, ".avi", ".webm")

DEVICES = ("auto", "cpu", "cuda")
# The precision a model runs in (`--precision`; coding/precision.py): auto = bf16 where native, else fp32.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
