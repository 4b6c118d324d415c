"""Training script for the InfoTok model, in stages as the paper trains it.

- `base`: the base tokenizer alone (encoder, code maps, decoder) at full rate, with the adaptive path
  switched off: no router pass, no masking, cheap steps. Most of the compute goes here.
- `adaptive`: the base is frozen; the compressor, decompressor and the dropped-position vector learn the
  Flex objective (below). Their zero-initialised output layers make the stage start at the base's
  quality.
- `full` (also the default, `flex`): everything trains with the Flex objective (the final fine-tune).
Between stages, `init_from` loads the previous stage's weights with a fresh optimiser; `model` overrides
may grow them on the way in (deeper transformers or decoder stages, attention both ways in time:
`model.infotok.grow`).

One Flex step: encode a batch of random clips, draw a keep rate per clip from `rates` (default
{1, 0.75, 0.5, 0.25}), keep the positions the router would keep (`placement`: "error", the largest
full-rate errors from a gradient-free decode of all tokens; "drop-gain", the largest drop gains from
that decode and two gradient-free probe decodes with a fresh random half each step; "probe-gain", the
probes alone, dropped minus sent error, unscaled since e_ref_probe is not known yet; coding/router.py),
decode the kept tokens with gradients, and minimise
L1 + w x (1 - SSIM), optionally + w' x ST-LPIPS on a few frames per clip (`lpips_weight`; the paper
trains with 0.1 x LPIPS). `pixel_loss: "rmse"` swaps L1 for the batch's root mean squared error: the
same minimiser as MSE, so it aims at PSNR (L1 aims at the median error), with gradients of L1's scale,
so the other terms keep their weights.
Two FSQ terms keep the codebook in use: the range penalty (`code_range_weight`) and, optionally, a
usage penalty that spreads each digit's levels over the batch (`code_usage_weight`).

Runs on one process, or on many with torch.distributed (DDP; launch with torchrun; gloo on CPU,
nccl on GPU). Checkpoints are safetensors files (no pickle) in the run directory; `resume=True` continues
from the latest one. At the end the EMA weights, the config, e_ref and e_ref_probe (mean per-position
error over training data of the full-rate decode and of the drop-gain probes: reference_errors) and a
training summary are written to `out`.

Holds the settings (`config`), the data (`data`), the objective and training-time measurements
(`objective`), the loop (`loop`) and the reference errors of imported weights measured on the user's clips
(`calibrate`, for `infotok models import --calibrate`). May import everything below it: rank 0, `format`, `io`, `model`,
`coding`, `eval`. Nothing from cli.
"""

from ..model.config import ModelConfig
from ..model.infotok import InfoTok
from .config import PIXEL_LOSSES, STAGES, TrainConfig, config_from_dict
from .data import ClipSampler, clips_per_step, dev_clips, find_videos, fixed_windows, load_clip, split_train_val
from .loop import lr_at, run, schedule_progress
from .objective import FlexObjective, as_frames, lpips_term, pixel_loss, reference_errors, router_score, validate

__all__ = ["PIXEL_LOSSES", "STAGES", "ClipSampler", "FlexObjective", "InfoTok", "ModelConfig", "TrainConfig",
           "as_frames", "clips_per_step", "config_from_dict", "dev_clips", "find_videos", "fixed_windows",
           "load_clip", "lpips_term", "lr_at", "pixel_loss", "reference_errors", "router_score", "run",
           "schedule_progress", "split_train_val", "validate"]
