"""InfoTok-Flex weights in the model store: import the authors' released checkpoint, load it by name.

`import_checkpoint` reads a `.pt`/`.pth` checkpoint with `torch.load(..., weights_only=True)` only (a
file that needs a full unpickle is refused) or a safetensors state dict, checks every parameter name and
shape against the architecture (flex.load_release_state_dict), and writes `NAME.safetensors` into the
user's model store with the configuration and provenance in its metadata.

The release records no reference error. Imported without calibration the weights carry `e_ref` 0, so
the `global` strategy codes every window at beta, as `window` does. With a `measure` hook (the CLI's
`--calibrate DIR` passes train.calibrate.calibrate_model over the user's clips) the import measures
`e_ref` and `e_ref_probe` with the weights as stored and records them with what they were measured on.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..errors import WeightsError
from .bounds import parse_json
from .catalog import imported_models, sha256_file, shipped_models, user_model_dir
from .flex import FlexConfig, FlexTokenizer, release_tensors
from .store import FLEX_ARCHITECTURE, WEIGHTS_FORMAT, write_weights_file
from .weights_header import read_header, skeleton

# The released network configuration (`ours_discrete_video_4x8x8_256p_88`), used when no --config is given.
RELEASE_CONFIG = {
    "name": "OURS", "attn_resolutions": [32], "channels": 128, "channels_mult": [2, 4, 4], "dropout": 0.0,
    "in_channels": 3, "num_res_blocks": 2, "out_channels": 3, "resolution": 1024, "patch_size": 2,
    "patch_method": "haar", "z_channels": 256, "z_factor": 1, "num_groups": 1, "legacy_mode": False,
    "spatial_compression": 8, "temporal_compression": 4, "quantizer": "FSQ", "embedding_dim": 6,
    "levels": [8, 8, 8, 5, 5, 5], "encoder": "FACTORIZED", "decoder": "FACTORIZED", "rate_strategy": "elbo",
    "use_vit": True, "freeze_original": False,
    "vit_config": {"hidden_size": 256, "intermediate_size": 512, "num_encoder_layers": 8, "num_decoder_layers": 8,
                   "num_attention_heads": 32, "theta": 10000.0, "rms_norm_eps": 1e-05, "initializer_range": 0.02,
                   "max_num_video_frames": 49, "switch_rotary_to_1d": 1.0, "max_sequence_length": 96,
                   "max_sequence_length_1d": 8192, "concat_decode_2d": False, "special_attn": False,
                   "method": "mse"},
}
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Measures a model before it is written: returns at least "e_ref" and "e_ref_probe", and what they were
# measured on (train.calibrate.calibrate_model).
Measure = Callable[[nn.Module], dict]


def read_checkpoint(path: Path) -> dict:
    """The tensors of a checkpoint: safetensors, or a torch pickle read with weights_only=True."""
    if path.suffix == ".safetensors":
        read_header(path)  # bounded and checked before safetensors reads it
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsError(f"{path}: the checkpoint holds objects other than tensors and plain data; it would "
                           "need a full unpickle, which can run arbitrary code, so it is refused") from None
    except (RuntimeError, OSError, EOFError, ValueError, IndexError, KeyError, TypeError, AttributeError) as exc:
        # a malformed zip or pickle stream surfaces as any of these; the message may be empty
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None


def read_config(path: Path | None) -> dict:
    """The release's network configuration from a JSON file (the dict itself or a manifest with `config`)."""
    if path is None:
        return RELEASE_CONFIG
    try:
        with open(path, "rb") as f:
            data = parse_json(str(path), f.read(MAX_CONFIG_FILE_BYTES + 1))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable JSON configuration ({exc})") from None
    return data.get("config", data) if isinstance(data, dict) else {}


MAX_CONFIG_FILE_BYTES = 1 << 20  # the release's configuration is under 2 kB, a manifest with every shape ~60 kB


def import_checkpoint(src: str | os.PathLike, name: str, *, config: str | os.PathLike | None = None,
                      dtype: str = "float32", force: bool = False, measure: Measure | None = None) -> dict:
    """Import the checkpoint `src` as model `name` into the user's model store; returns what was written.

    With `measure` the reference errors it returns are recorded with the weights (the model it is given
    holds the weights as they are stored, in float32)."""
    src = Path(src)
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (at most 64)")
    if name in shipped_models():
        raise ValueError(f"--name {name!r} is a shipped model; choose another name")
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}")
    dst = user_model_dir() / f"{name}.safetensors"
    if dst.exists() and not force:
        raise FileExistsError(f"{dst}: model {name!r} is already imported (use --force to replace it)")
    release = read_config(Path(config) if config is not None else None)
    try:
        cfg = FlexConfig.from_release(release)
    except ValueError as exc:
        raise WeightsError(f"unsupported configuration: {exc}") from None
    # The config is bounded; check the checkpoint against a meta-device model before allocating one.
    shapes = {k: tuple(p.shape) for k, p in skeleton(lambda: FlexTokenizer(cfg), src).named_parameters()}
    try:
        checked = release_tensors(read_checkpoint(src), shapes, cfg.levels)
    except ValueError as exc:
        raise WeightsError(f"{src}: {exc}") from None
    model = FlexTokenizer(cfg)
    try:
        with torch.no_grad():
            for k, p in model.named_parameters():
                p.copy_(checked[k])
    except RuntimeError as exc:  # e.g. a sparse or quantized tensor of the right shape
        raise WeightsError(f"{src}: a tensor cannot be read as weights ({str(exc).splitlines()[0][:200]})") from None
    del checked
    tensors = {k: v.detach().to(DTYPES[dtype]).contiguous() for k, v in model.state_dict().items()}
    parameters = sum(p.numel() for p in model.parameters())
    metadata = {"format": WEIGHTS_FORMAT, "architecture": FLEX_ARCHITECTURE, "name": name,
                "config": json.dumps(release),
                "e_ref": "0.0", "source_file": src.name, "source_sha256": sha256_file(src),
                "parameters": str(parameters), "dtype": dtype, "training": "{}"}
    calibration = None
    if measure is not None:
        if dtype != "float32":  # measure the weights as they are stored (and later loaded)
            model.load_state_dict({k: v.float() for k, v in tensors.items()})
        calibration = measure(model)
        if not all(math.isfinite(calibration[k]) and calibration[k] > 0 for k in ("e_ref", "e_ref_probe")):
            raise WeightsError(f"calibration measured no usable reference error (e_ref {calibration['e_ref']}, "
                               f"e_ref_probe {calibration['e_ref_probe']}); the weights or the clips are degenerate")
        metadata["e_ref"], metadata["e_ref_probe"] = repr(calibration["e_ref"]), repr(calibration["e_ref_probe"])
        metadata["calibration"] = json.dumps({k: v for k, v in calibration.items()
                                              if k not in ("e_ref", "e_ref_probe", "skipped")})
    del model
    dst.parent.mkdir(parents=True, exist_ok=True)
    sha256 = write_weights_file(dst, tensors, metadata)
    out = {"name": name, "path": str(dst), "sha256": sha256, "parameters": parameters,
           "architecture": FLEX_ARCHITECTURE, "source_file": src.name, "source_sha256": metadata["source_sha256"],
           "dtype": dtype, "file_bytes": dst.stat().st_size, "e_ref": float(metadata["e_ref"])}
    if calibration is not None:
        out["e_ref_probe"] = calibration["e_ref_probe"]
        out["calibration"] = {k: v for k, v in calibration.items() if k not in ("e_ref", "e_ref_probe")}
    return out


def remove_model(name: str) -> Path:
    """Delete an imported model from the store (shipped models cannot be removed)."""
    if name not in imported_models():
        raise WeightsError(f"no imported model named {name!r}"
                           + (f" (imported: {', '.join(imported_models())})" if imported_models() else ""))
    path = user_model_dir() / f"{name}.safetensors"
    path.unlink()
    return path

