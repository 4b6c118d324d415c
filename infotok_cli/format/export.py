"""Export an .itok file's tokens to plain arrays: `.npz` (numpy) or `.safetensors`.

The export needs no infotok to read. Arrays, for window i (numbered with six digits, `000000`..):

* `tokens_<i>`: int32 `[t, h, w]`, the code (0..63999) at kept positions, -1 at dropped ones;
* `keep_<i>`: bool `[t, h, w]`, True where a token was kept;
* `frame_ranges`: int64 `[windows, 2]`, (first source frame, frame count) of each window;
* `padded_frames`: int64 `[windows]`, frames repeated at the end of a window to reach 1 + 4k;
* `latent_shapes`: int64 `[windows, 3]`, (t, h, w) of each window;
* `pts`: int64 `[frames]`, source timestamps in units of `time_base`;
* metadata (JSON): geometry, fps, time base, aspect ratio, model name and weights hash, coding
  parameters, the header's free-form `extra`, counts.
  In an `.npz` it is the 0-d string array `metadata`; in a `.safetensors` file the header metadata
  key `infotok`.

The `.npz` is written window by window (memory: one window); a `.safetensors` file is assembled in
memory (its format puts all offsets first). This module writes to a stream; `io.files.export_tokens`
writes a file atomically. `arrays.py` reads an export back (`infotok pack`, `decompress`, `inspect`).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..constants import CODEBOOK_SIZE
from .arrays import EXPORT_FORMAT
from .tokens import DROPPED, TokenFile

FORMATS = ("npz", "safetensors")


def format_for(path: str | os.PathLike, fmt: str | None) -> str:
    """The export format: `fmt` if given, else from the output's suffix."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown export format {fmt!r}; use {' or '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise ValueError(f"{path}: cannot tell the format from the suffix; name it .npz or .safetensors or "
                         "pass --format")
    return suffix


def metadata(tf: TokenFile) -> dict[str, Any]:
    """What a consumer of the arrays needs to know, JSON-friendly."""
    h = tf.header
    return {"format": EXPORT_FORMAT, "file": tf.path.name, **tf.info(), "sar": f"{h.sar_num}/{h.sar_den}",
            "extra": h.extra, "codebook_size": CODEBOOK_SIZE, "dropped_token": DROPPED, "window_key_digits": 6}


def _index_arrays(tf: TokenFile) -> dict[str, np.ndarray]:
    return {
        "frame_ranges": np.array([[w.frame_start, w.frame_count] for w in tf.windows], dtype=np.int64),
        "padded_frames": np.array([w.padded_frames for w in tf.windows], dtype=np.int64),
        "latent_shapes": np.array([w.latent_shape for w in tf.windows], dtype=np.int64),
        "pts": np.array(tf.header.pts, dtype=np.int64),
    }


def _write_npz(tf: TokenFile, out: BinaryIO, meta: dict[str, Any]) -> None:
    # np.savez would need every window in memory at once; the same zip of .npy members, written one by one.
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:

        def put(name: str, array: np.ndarray) -> None:
            with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)

        for name, array in _index_arrays(tf).items():
            put(name, array)
        put("metadata", np.array(json.dumps(meta)))
        for w in tf.iter_windows():
            put(f"tokens_{w.index:06d}", w.tokens)
            put(f"keep_{w.index:06d}", w.keep)


def _write_safetensors(tf: TokenFile, out: BinaryIO, meta: dict[str, Any]) -> None:
    from safetensors.numpy import save

    tensors = _index_arrays(tf)
    for w in tf.iter_windows():
        tensors[f"tokens_{w.index:06d}"] = w.tokens
        tensors[f"keep_{w.index:06d}"] = np.ascontiguousarray(w.keep)
    out.write(save(tensors, metadata={"format": EXPORT_FORMAT, "infotok": json.dumps(meta)}))


def write_export(tf: TokenFile, out: BinaryIO, fmt: str) -> dict[str, Any]:
    """Write the tokens and masks of the open token file `tf` to the stream `out` in `fmt` ("npz" or
    "safetensors"); returns a description of what was written (without the file's size and time)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use {' or '.join(FORMATS)}")
    meta = metadata(tf)
    (_write_npz if fmt == "npz" else _write_safetensors)(tf, out, meta)
    n = len(tf.windows)
    return {
        "format": fmt, "windows": n, "frames": tf.num_frames, "latent_hw": list(tf.latent_hw),
        "tokens_kept": tf.tokens_kept, "tokens_possible": tf.tokens_possible, "model_name": tf.model_name,
        "weights_sha256": tf.weights_sha256, "fps": meta["fps"],
        "arrays": ["frame_ranges", "padded_frames", "latent_shapes", "pts"]
        + ([] if fmt == "safetensors" else ["metadata"])
        + [f"{kind}_{{000000..{n - 1:06d}}}" for kind in ("tokens", "keep")],
    }
