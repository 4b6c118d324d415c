"""Pack tokens into an .itok file: tokens built from arrays (a sequence model's output, an edited export),
an export file, or tokens from `Tokenizer.encode`, written as `compress` writes them.

Tokens only decode with the weights they were made for, so packing first checks that those weights are at
hand (the model named, or `model`): a file nobody here can decode is refused before anything is written.
Only the weights' identity is read for that (metadata and SHA-256), not the model.
"""

from __future__ import annotations

import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..errors import WeightsMismatchError
from ..format.arrays import Geometry
from ..format.header import Header
from ..format.tokens import TokenFile, Tokens, load
from ..io.files import write_tokens
from ..model.catalog import model_for_file, read_metadata, resolve_model_path, weights_identity


def require_weights(model_name: str, sha256: str, model: str | os.PathLike | None = None) -> Path:
    """The weights file that decodes tokens of `model_name` / `sha256`: `model` if given, else the installed
    model with those weights (model/catalog.py), else the default. Raises WeightsError when there is none or
    its weights differ."""
    path = resolve_model_path(model_for_file(model_name, model, sha256))
    found = weights_identity(path, read_metadata(path))
    if found != sha256:
        raise WeightsMismatchError(
            f"the tokens are for model {model_name} (weights {sha256[:12]}), but {path.name} has weights "
            f"{found[:12]}; pass the matching --model, or import it: `infotok models import CHECKPOINT --name "
            f"{model_name}`")
    return path


def header_for(tokens: Tokens | TokenFile, fps: float | Fraction | str | None = None) -> Header:
    """The container header of `tokens`: their own (from a file or `Tokens.from_arrays`), else (tokens from
    `Tokenizer.encode`, which carry no timing) the one `compress` gives their geometry at `fps`."""
    header = getattr(tokens, "header", None)
    if header is not None:
        return header
    if fps is None:
        raise ValueError("these tokens carry no frame rate (made by encode): pass fps=")
    return Geometry.for_video(tokens.width, tokens.height, tokens.num_frames, fps, tokens.model_name,
                              tokens.weights_sha256, window=tokens.window, overlap=tokens.overlap,
                              beta=tokens.beta, strategy=tokens.strategy).header


def pack_tokens(tokens: Tokens | TokenFile, dst: str | os.PathLike, *, model: str | os.PathLike | None = None,
                fps: float | Fraction | str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Write `tokens` to the .itok file `dst` (atomically; an existing `dst` only with `overwrite`) after
    checking that their weights are at hand (`require_weights`); returns what was written."""
    t0 = time.perf_counter()
    header = header_for(tokens, fps)
    require_weights(header.model_name, header.weights_sha256, model)
    result = write_tokens(tokens, header, dst, overwrite=overwrite)
    return {**result, "seconds": time.perf_counter() - t0}


def pack_file(src: str | os.PathLike, dst: str | os.PathLike, *, model: str | os.PathLike | None = None,
              overwrite: bool = False) -> dict[str, Any]:
    """`infotok pack SRC DST`: the tokens of an export (`.npz` / `.safetensors`, or an .itok file) written
    as an .itok file; returns what `--json` prints."""
    with load(src) as tf:
        return {"input": str(src), **pack_tokens(tf, dst, model=model, overwrite=overwrite)}
