"""Where weights files live and which one a file needs, without importing torch (`inspect` uses it).

Shipped weights are in `infotok_cli/weights/`, imported ones in the user's model store. Every weights
file has a token identity (`weights_identity`): the SHA-256 that `.itok` files record. A file decodes
only with weights of that identity, so the catalog looks it up among everything installed: the model the
file names first, then any other (earlier shipped weights, such as infotok-m 03445d4a, are shipped under
their own names so that files made with them keep decoding after the default model changes).
"""

from __future__ import annotations

import hashlib
import os
import sys
from functools import lru_cache
from pathlib import Path

from safetensors import SafetensorError, safe_open

from ..errors import WeightsError

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_MODEL = "infotok-m"


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


def imported_models() -> list[str]:
    """Names of the models imported into the user's model store (`infotok models import`)."""
    store = user_model_dir()
    return sorted(p.stem for p in store.glob("*.safetensors")) if store.is_dir() else []


def installed_path(name: str) -> Path | None:
    """The weights file of a shipped or imported model name, or None."""
    for folder in (WEIGHTS_DIR, user_model_dir()):
        if (folder / f"{name}.safetensors").is_file():
            return folder / f"{name}.safetensors"
    return None


def resolve_model_path(name_or_path: str | Path | None) -> Path:
    """A shipped model name (e.g. "infotok-m"), an imported model's name, or a path to a .safetensors file."""
    name = str(name_or_path or DEFAULT_MODEL)
    if "/" not in name and "\\" not in name:
        found = installed_path(name)
        if found is not None:
            return found
    path = Path(name)
    if path.is_file():
        return path
    installed = [*shipped_models(), *imported_models()]
    hint = f" (installed: {', '.join(installed)})" if installed else ""
    raise WeightsError(f"model not found: {name}{hint}")


def read_metadata(path: str | Path) -> dict:
    try:
        with safe_open(str(path), framework="numpy") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None


def weights_identity(path: Path, meta: dict) -> str:
    """The SHA-256 that .itok files record for these weights: `tokens_sha256` where a router head was
    added to an existing file, else the file's own."""
    declared = meta.get("tokens_sha256", "")
    if declared:
        if len(declared) != 64 or any(c not in "0123456789abcdef" for c in declared):
            raise WeightsError(f"{path}: bad weights metadata (tokens_sha256 {declared[:70]!r})")
        return declared
    return sha256_file(path)


@lru_cache(maxsize=64)
def _identity_of(path: str, size: int, mtime_ns: int) -> str | None:
    """Cached per file version: hashing a file without `tokens_sha256` reads all of it."""
    try:
        return weights_identity(Path(path), read_metadata(path))
    except (WeightsError, OSError):
        return None


def identity_of_installed(name: str) -> str | None:
    path = installed_path(name)
    if path is None:
        return None
    st = path.stat()
    return _identity_of(str(path), st.st_size, st.st_mtime_ns)


def models_with_identity(sha256: str, prefer: str = "") -> list[str]:
    """Installed models (shipped or imported) whose weights have this token identity, `prefer` first."""
    names = [n for n in dict.fromkeys([prefer, *shipped_models(), *imported_models()]) if n]
    return [n for n in names if identity_of_installed(n) == sha256]


def model_for_file(model_name: str, model: str | os.PathLike | None = None, weights_sha256: str = "") -> str:
    """The model that decodes a file whose header names `model_name` and `weights_sha256`: `model` if
    given; else the installed model with those weights (the named one first); else the named model if it
    is installed, else the default (its weights are checked next, which gives the error and its hint)."""
    if model is not None:
        return str(model)
    if weights_sha256:
        matches = models_with_identity(weights_sha256, prefer=model_name)
        if matches:
            return matches[0]
    if model_name in shipped_models() or model_name in imported_models():
        return model_name
    return DEFAULT_MODEL
