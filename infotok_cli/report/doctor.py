"""What a user needs to know when infotok is slow or fails: versions, devices, CPU, precision, models.

`environment()` gathers it as one JSON-able dict (what `infotok doctor --json` prints). Every probe is
guarded: a missing or broken piece is reported as such, never raised, because this is the command a user
runs when something is wrong.
"""

from __future__ import annotations

import os
import platform
import shutil

from ..constants import __version__

ENCODERS = ("libx264", "libx265", "aac", "mpeg4", "ffv1")  # what decompress, eval and audio use


def _video() -> dict:
    try:
        import av
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return {"pyav": None, "error": str(exc)}
    libs = {name: ".".join(map(str, v)) for name, v in getattr(av, "library_versions", {}).items()}
    available = set(getattr(av, "codecs_available", ()))
    return {"pyav": av.__version__, "ffmpeg_libraries": libs,
            "encoders": {name: name in available for name in ENCODERS},
            "ffmpeg_binary": shutil.which("ffmpeg")}


def _torch() -> tuple[dict, list[dict], dict]:
    import torch

    from ..coding.precision import choose_precision, cpu_info

    info = {"version": torch.__version__, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "cuda_build": torch.version.cuda}
    devices = [{"device": "cpu", "name": cpu_info().model}]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append({"device": f"cuda:{i}", "name": props.name,
                            "memory_bytes": props.total_memory, "bf16": torch.cuda.is_bf16_supported()})
    precision = {"cpu": choose_precision("auto", "cpu").to_dict()}
    if torch.cuda.is_available():
        precision["cuda"] = choose_precision("auto", "cuda").to_dict()
    precision["default_device"] = "cuda" if torch.cuda.is_available() else "cpu"
    return info, devices, precision


def _models() -> dict:
    from ..model.catalog import DEFAULT_MODEL, WEIGHTS_DIR, shipped_models, user_model_dir

    store = user_model_dir()
    imported = sorted(p.stem for p in store.glob("*.safetensors")) if store.is_dir() else []
    return {"default": DEFAULT_MODEL, "shipped_dir": str(WEIGHTS_DIR),
            "shipped": shipped_models(),
            "user_dir": str(store), "imported": imported}


def environment() -> dict:
    """Everything `infotok doctor` shows, as one dict."""
    from ..coding.precision import cpu_info

    torch_info, devices, precision = _torch()
    return {
        "infotok": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch_info,
        "video": _video(),
        "cpu": {**cpu_info().to_dict(), "cores": os.cpu_count()},
        "devices": devices,
        "precision": precision,
        "environment": {k: os.environ[k] for k in ("INFOTOK_HOME", "INFOTOK_PRECISION", "OMP_NUM_THREADS",
                                                   "CUDA_VISIBLE_DEVICES") if k in os.environ},
        "models": _models(),
    }
