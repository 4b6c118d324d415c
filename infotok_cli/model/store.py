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

import hashlib
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch.overrides import TorchFunctionMode

from ..errors import WeightsError
from .config import ModelConfig
from .infotok import InfoTok
from .router_head import METADATA_KEY as HEAD_METADATA_KEY
from .router_head import TENSOR_PREFIX as HEAD_PREFIX
from .router_head import RouterHead, feature_channels, head_from_tensors, head_tensors

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_MODEL = "infotok-m"
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


class SkipInit(TorchFunctionMode):
    """Builds modules without the random initialisation of their parameters (torch.nn.init's in-place
    functions do nothing), for a model whose every parameter is then loaded: a tenth of a second for
    infotok-m, a good part of a short command's start-up. Only the current thread is affected."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__module__", "") == "torch.nn.init" and func.__name__.endswith("_"):
            return args[0] if args else kwargs["tensor"]
        return func(*args, **(kwargs or {}))


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def user_model_dir() -> Path:
    """Where imported models live: $INFOTOK_HOME/models, else the platform's user data directory."""
    home = os.environ.get("INFOTOK_HOME")
    if home:
        return Path(home).expanduser() / "models"
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "infotok" / "models"


def shipped_models() -> list[str]:
    """Names of the models shipped in WEIGHTS_DIR."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))


def model_for_file(model_name: str, model: str | os.PathLike | None = None) -> str:
    """The model that decodes a file whose header names `model_name`: `model` if given, else that model
    if it is shipped, else the default model."""
    if model is not None:
        return str(model)
    if model_name in shipped_models() or model_name in imported_models():
        return model_name
    return DEFAULT_MODEL  # a model given by path when the file was made: its weights are checked next


def imported_models() -> list[str]:
    """Names of the models imported into the user's model store (`infotok models import`)."""
    store = user_model_dir()
    return sorted(p.stem for p in store.glob("*.safetensors")) if store.is_dir() else []


def resolve_model_path(name_or_path: str | Path | None) -> Path:
    """A shipped model name (e.g. "infotok-m"), an imported model's name, or a path to a .safetensors file."""
    name = str(name_or_path or DEFAULT_MODEL)
    if "/" not in name and "\\" not in name:
        for folder in (WEIGHTS_DIR, user_model_dir()):
            if (folder / f"{name}.safetensors").is_file():
                return folder / f"{name}.safetensors"
    path = Path(name)
    if path.is_file():
        return path
    installed = [*shipped_models(), *imported_models()]
    hint = f" (installed: {', '.join(installed)})" if installed else ""
    raise WeightsError(f"model not found: {name}{hint}")


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
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None


def load_model(name_or_path: str | Path | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model by shipped name or path (safetensors only), in eval mode on `device`."""
    path = resolve_model_path(name_or_path)
    meta = read_metadata(path)
    if meta.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(f"{path}: not an infotok weights file (format {meta.get('format')!r})")
    if meta.get("architecture") == FLEX_ARCHITECTURE:
        return load_flex(path, meta, device)
    tensors, head_group = {}, {}
    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                if key.startswith(HEAD_PREFIX):
                    head_group[key[len(HEAD_PREFIX):]] = f.get_tensor(key)
                else:
                    tensors[key] = f.get_tensor(key)
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: cannot read tensors ({exc})") from None
    try:
        config_dict = json.loads(meta["config"])
        if "layout" not in config_dict:  # written before the field existed: tell the layouts apart by name
            config_dict["layout"] = "serial" if "enc_in.weight" in tensors else "residual"
        config = ModelConfig.from_dict(config_dict)
        e_ref = float(meta["e_ref"])
        e_ref_probe = float(meta["e_ref_probe"]) if "e_ref_probe" in meta else None
        if e_ref_probe is not None and not (math.isfinite(e_ref_probe) and e_ref_probe > 0):
            raise ValueError(f"e_ref_probe must be a positive number, got {e_ref_probe}")
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise WeightsError(f"{path}: bad weights metadata ({exc})") from None
    with SkipInit():  # every parameter is loaded below (checked): no random initialisation first
        model = InfoTok(config)
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError:  # a tensor of the wrong shape for the config
        raise WeightsError(f"{path}: weights do not match the config (tensor shapes differ)") from None
    if missing or unexpected:
        raise WeightsError(f"{path}: weights do not match the config (missing {len(missing)}, "
                           f"unexpected {len(unexpected)} tensors)")
    model.eval().to(device)
    head = None
    if HEAD_METADATA_KEY in meta:
        try:
            head = head_from_tensors(meta[HEAD_METADATA_KEY], head_group).to(device)
            expected = feature_channels(head.cfg.features, config.latent_dim, len(config.levels))
            if head.cfg.in_channels != expected or config.layout != "residual":
                raise ValueError(f"it reads {head.cfg.in_channels} channels, the model gives {expected}")
        except (ValueError, TypeError, KeyError) as exc:
            raise WeightsError(f"{path}: bad router head ({exc})") from None
    training = json.loads(meta.get("training", "{}") or "{}")
    return LoadedModel(model=model, config=config, name=config.name, sha256=weights_identity(path, meta),
                       e_ref=e_ref, path=path, metadata={"training": training}, e_ref_probe=e_ref_probe,
                       router_head=head)


def weights_identity(path: Path, meta: dict) -> str:
    """The SHA-256 that .itok files record for these weights: `tokens_sha256` where a router head was
    added to an existing file, else the file's own (see the module docstring)."""
    declared = meta.get("tokens_sha256", "")
    if declared:
        if len(declared) != 64 or any(c not in "0123456789abcdef" for c in declared):
            raise WeightsError(f"{path}: bad weights metadata (tokens_sha256 {declared[:70]!r})")
        return declared
    return sha256_file(path)


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


def load_flex(path: Path, meta: dict, device: str | torch.device) -> LoadedModel:
    """An imported InfoTok-Flex model from its safetensors file (metadata already read)."""
    from .flex import FlexConfig, FlexTokenizer, load_release_state_dict  # only for these weights: a shorter start

    try:
        release = json.loads(meta["config"])
        cfg = FlexConfig.from_release(release)
        tensors = load_file(str(path))
    except (KeyError, ValueError, TypeError, SafetensorError, OSError) as exc:
        raise WeightsError(f"{path}: bad InfoTok-Flex weights ({exc})") from None
    model = FlexTokenizer(cfg)
    try:
        load_release_state_dict(model, {k: v.float() for k, v in tensors.items()})
    except ValueError as exc:
        raise WeightsError(f"{path}: {exc}") from None
    try:  # e_ref_probe and the calibration: only where `models import --calibrate` measured them
        e_ref = float(meta.get("e_ref", 0.0))
        e_ref_probe = float(meta["e_ref_probe"]) if "e_ref_probe" in meta else None
        if e_ref_probe is not None and not (math.isfinite(e_ref_probe) and e_ref_probe > 0):
            raise ValueError(f"e_ref_probe must be a positive number, got {e_ref_probe}")
        calibration = json.loads(meta.get("calibration", "null"))
    except ValueError as exc:
        raise WeightsError(f"{path}: bad weights metadata ({exc})") from None
    model.eval().to(device)
    info = {k: meta.get(k) for k in ("source_file", "source_sha256", "parameters", "dtype")}
    return LoadedModel(model=model, config=cfg, name=meta.get("name", path.stem), sha256=sha256_file(path),
                       e_ref=e_ref, path=path, e_ref_probe=e_ref_probe,
                       metadata={"training": {}, "architecture": FLEX_ARCHITECTURE, **info,
                                 "calibration": calibration})
