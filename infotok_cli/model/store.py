"""Model weights and the model store: safetensors files with the config, e_ref and a training summary in
the metadata.

Weights are only ever read with safetensors (no pickle). A model is named either by a name shipped in
`infotok_cli/weights/` (the default is `infotok-m`) or by a path to a `.safetensors` file.

A weights file may carry a learned router head (model/router_head.py) as the tensor group
`router_head.*`. Tokens do not depend on it, so a file made by adding a head keeps the identity of the
file it was made from: its metadata key `tokens_sha256` names that file's SHA-256, which is what .itok
files record and check (`LoadedModel.sha256`). Files without the key are identified by their own SHA-256.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..errors import WeightsError
from .bounds import mapping, parse_json
from .catalog import DEFAULT_MODEL, WEIGHTS_DIR, resolve_model_path, sha256_file, shipped_models, weights_identity
from .config import ModelConfig
from .infotok import InfoTok
from .router_head import METADATA_KEY as HEAD_METADATA_KEY
from .router_head import TENSOR_PREFIX as HEAD_PREFIX
from .router_head import HeadConfig, RouterHead, feature_channels, head_from_tensors, head_tensors
from .weights_header import SkipInit, WeightsHeader, check_tensors, expected_tensors, read_header, skeleton

WEIGHTS_FORMAT = "infotok-weights/1"
FLEX_ARCHITECTURE = "infotok-flex"  # the `architecture` metadata of imported InfoTok-Flex weights


@dataclass
class LoadedModel:
    model: InfoTok
    config: ModelConfig
    name: str
    sha256: str
    e_ref: float  # mean per-position full-rate error over the training data (the `global` strategy)
    path: Path
    metadata: dict = field(default_factory=dict)
    # The same mean for the drop-gain probes' errors where a position is sent (train.reference_errors);
    # with it the codec estimates a window's full-rate error from its probes and skips the full-rate decode.
    # None in weights written before it existed.
    e_ref_probe: float | None = None
    router_head: RouterHead | None = None  # the learned router head, where the weights carry one


def save_weights(path: str | Path, model: InfoTok, e_ref: float, summary: dict | None = None,
                 e_ref_probe: float | None = None) -> str:
    """Write the model's weights and metadata atomically; returns the file's SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {
        "format": WEIGHTS_FORMAT,
        "config": json.dumps(model.cfg.to_dict()),
        "e_ref": repr(float(e_ref)),
        "training": json.dumps(summary or {}),
    }
    if e_ref_probe is not None:
        metadata["e_ref_probe"] = repr(float(e_ref_probe))
    return write_weights_file(path, tensors, metadata)


def add_router_head(src: str | Path, head: RouterHead, dst: str | Path, summary: dict | None = None) -> str:
    """Write the weights `src` with `head` as their router head (replacing any) to `dst`, atomically.
    The result keeps `src`'s token identity (`tokens_sha256`), so files made with either decode with
    either. Returns the new file's SHA-256."""
    src, dst = Path(src), Path(dst)
    meta = read_metadata(src)
    if meta.get("format") != WEIGHTS_FORMAT or meta.get("architecture") == FLEX_ARCHITECTURE:
        raise WeightsError(f"{src}: a router head goes only into infotok-m style weights")
    tensors = {k: v for k, v in load_file(str(src)).items() if not k.startswith(HEAD_PREFIX)}
    meta["tokens_sha256"] = meta.get("tokens_sha256") or sha256_file(src)
    meta[HEAD_METADATA_KEY] = head.cfg.to_json()
    meta["router_head_training"] = json.dumps(summary or {})
    return write_weights_file(dst, {**tensors, **head_tensors(head)}, meta)


def write_weights_file(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """Write a safetensors weights file atomically (readers never see a partial file); returns its SHA-256."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; weights are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha256_file(path)


def read_metadata(path: str | Path) -> dict:
    """A weights file's metadata, from its header alone (checked: model/weights_header.py)."""
    return dict(read_header(path).metadata)


def load_model(name_or_path: str | Path | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model by shipped name or path (safetensors only), in eval mode on `device`.

    The file is untrusted: its config is bounded (ModelConfig.from_dict, HeadConfig.from_json) and the
    model it describes, built on the meta device, must match the header's tensor names, shapes and dtypes
    before the model is allocated and the data read. Anything else is a one-line WeightsError."""
    path = resolve_model_path(name_or_path)
    header = read_header(path)
    meta = header.metadata
    if meta.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(f"{path}: not an infotok weights file (format {meta.get('format')!r:.80})")
    if meta.get("architecture") == FLEX_ARCHITECTURE:
        return load_flex(path, header, device)
    body = {k: v for k, v in header.tensors.items() if not k.startswith(HEAD_PREFIX)}
    try:
        config_dict = mapping("config", parse_json("config", meta["config"]))
        if "layout" not in config_dict:  # written before the field existed: tell the layouts apart by name
            config_dict["layout"] = "serial" if "enc_in.weight" in body else "residual"
        config = ModelConfig.from_dict(config_dict)
        e_ref = reference_error("e_ref", meta["e_ref"], allow_zero=True)
        e_ref_probe = reference_error("e_ref_probe", meta["e_ref_probe"]) if "e_ref_probe" in meta else None
        training = mapping("training", parse_json("training", meta.get("training", "{}") or "{}"))
    except (KeyError, ValueError, TypeError) as exc:
        raise WeightsError(f"{path}: bad weights metadata ({exc})") from None
    check_tensors(path, body, expected_tensors(skeleton(lambda: InfoTok(config), path)), {"F32"})
    head_config = None
    if HEAD_METADATA_KEY in meta:
        try:
            head_config = HeadConfig.from_json(meta[HEAD_METADATA_KEY])
            expected = feature_channels(head_config.features, config.latent_dim, len(config.levels))
            if head_config.in_channels != expected or config.layout != "residual":
                raise ValueError(f"it reads {head_config.in_channels} channels, the model gives {expected}")
        except ValueError as exc:
            raise WeightsError(f"{path}: bad router head ({exc})") from None
        head_shapes = expected_tensors(skeleton(lambda: RouterHead(head_config), path), HEAD_PREFIX)
        check_tensors(path, {k: v for k, v in header.tensors.items() if k.startswith(HEAD_PREFIX)}, head_shapes,
                      {"F32"}, "the router head config")
    # Checked: allocate the model and read exactly the tensors the header listed.
    with SkipInit():  # every parameter is loaded below: no random initialisation first
        model = InfoTok(config)
    tensors, head_group = {}, {}
    try:
        with safe_open(str(path), framework="pt") as f:
            for key in body:
                tensors[key] = f.get_tensor(key)
            for key in header.tensors if head_config is not None else ():
                if key.startswith(HEAD_PREFIX):
                    head_group[key[len(HEAD_PREFIX):]] = f.get_tensor(key)
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: cannot read tensors ({exc})") from None
    model.load_state_dict(tensors)
    model.eval().to(device)
    head = None
    if head_config is not None:
        try:
            head = head_from_tensors(meta[HEAD_METADATA_KEY], head_group).to(device)
        except (ValueError, TypeError, KeyError) as exc:
            raise WeightsError(f"{path}: bad router head ({exc})") from None
    return LoadedModel(model=model, config=config, name=config.name, sha256=weights_identity(path, meta),
                       e_ref=e_ref, path=path, metadata={"training": training}, e_ref_probe=e_ref_probe,
                       router_head=head)


def reference_error(name: str, value: str, allow_zero: bool = False) -> float:
    """A reference error from the metadata: a finite positive number (0 where `allow_zero`: not measured)."""
    number = float(value)
    if not (math.isfinite(number) and (number > 0 or (allow_zero and number == 0))):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, got {value[:40]}")
    return number


MEASURED_FILE = WEIGHTS_DIR / "measured.json"  # quality and speed measured by `make bench`, per weights hash


def shipped_model_info() -> list[dict]:
    """One entry per shipped model: name, file size, parameters, SHA-256, training summary, and the
    quality and speed measured for exactly these weights (from weights/measured.json, if recorded)."""
    try:
        measured = json.loads(MEASURED_FILE.read_text()) if MEASURED_FILE.is_file() else {}
    except (OSError, ValueError):
        measured = {}
    out = []
    for path in (WEIGHTS_DIR / f"{name}.safetensors" for name in shipped_models()):
        meta = read_metadata(path)
        try:
            config = json.loads(meta.get("config", "{}"))
            training = json.loads(meta.get("training", "{}") or "{}")
        except ValueError:
            config, training = {}, {}
        with safe_open(str(path), framework="pt") as f:
            parameters = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
        sha = weights_identity(path, meta)
        record = measured.get(path.stem, {})
        out.append({
            "name": path.stem,
            "default": path.stem == DEFAULT_MODEL,
            "file_bytes": path.stat().st_size,
            "parameters": parameters,
            "sha256": sha,
            "training_steps": training.get("steps"),
            "training_stage": training.get("stage"),
            "config": config,
            "router_head": HEAD_METADATA_KEY in meta,
            # numbers only count for the weights they were measured with
            "measured": record.get("measured", {}) if record.get("sha256") == sha else {},
        })
    return out


def load_flex(path: Path, header: WeightsHeader, device: str | torch.device) -> LoadedModel:
    """An imported InfoTok-Flex model from its safetensors file (header already read), checked as
    load_model checks infotok weights."""
    meta = header.metadata
    from .flex import FlexTokenizer, load_release_state_dict  # only for these weights: a shorter start
    from .flex_config import FlexConfig

    try:
        cfg = FlexConfig.from_release(parse_json("config", meta["config"]))
        if meta.get("dtype", "float32") not in FLEX_DTYPES:
            raise ValueError(f"dtype {meta['dtype'][:40]!r} (only {', '.join(FLEX_DTYPES)})")
        stored = FLEX_DTYPES[meta.get("dtype", "float32")]
        # e_ref_probe and the calibration: only where `models import --calibrate` measured them
        e_ref = reference_error("e_ref", meta.get("e_ref", "0.0"), allow_zero=True)
        e_ref_probe = reference_error("e_ref_probe", meta["e_ref_probe"]) if "e_ref_probe" in meta else None
        calibration = parse_json("calibration", meta.get("calibration", "null"))
    except (KeyError, ValueError, TypeError) as exc:
        raise WeightsError(f"{path}: bad InfoTok-Flex weights ({exc})") from None
    check_tensors(path, header.tensors, expected_tensors(skeleton(lambda: FlexTokenizer(cfg), path)), {stored})
    model = FlexTokenizer(cfg)
    try:
        tensors = load_file(str(path))
        load_release_state_dict(model, {k: v.float() for k, v in tensors.items()})
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: {exc}") from None
    model.eval().to(device)
    info = {k: meta.get(k) for k in ("source_file", "source_sha256", "parameters", "dtype")}
    return LoadedModel(model=model, config=cfg, name=meta.get("name", path.stem), sha256=sha256_file(path),
                       e_ref=e_ref, path=path, e_ref_probe=e_ref_probe,
                       metadata={"training": {}, "architecture": FLEX_ARCHITECTURE, **info,
                                 "calibration": calibration})


FLEX_DTYPES = {"float32": "F32", "bfloat16": "BF16"}  # `models import --dtype` and the header's dtype names
