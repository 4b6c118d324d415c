"""Token files on disk, written atomically: an `.itok` file (`itok_writer`), an export of its tokens to
`.npz` / `.safetensors` (`export_tokens`) and tokens held in memory packed into an `.itok` file
(`write_tokens`). The bytes are the format layer's; the file-system policy (an
output appears complete under its name, or not at all) is here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ..errors import ContainerError, OutputExistsContainerError
from ..format.export import format_for, write_export
from ..format.header import Header, pack_header
from ..format.tokens import TokenFile, Tokens
from ..format.writer import ItokWriter
from .atomic import AtomicFile, OutputExistsError

__all__ = ["export_tokens", "itok_writer", "write_tokens"]


def itok_writer(path: str | os.PathLike, header: Header, *, overwrite: bool = False) -> ItokWriter:
    """An `ItokWriter` of the .itok file `path`: `with itok_writer(path, header) as w: w.write_window(...)`.

    Writes through `AtomicFile` (an unnamed file linked into place, or a locked named temporary): the file
    appears complete when the writer closes, and on an exception or a crash nothing is left and `path` is
    untouched. Raises ContainerError for an invalid header (before anything is created), if `path` exists
    and not `overwrite` (OutputExistsContainerError, also when another writer created it meanwhile), and
    for I/O errors.
    """
    name = os.fspath(path)
    pack_header(header)  # an invalid header fails before any file is created
    try:
        out = AtomicFile(name, overwrite=overwrite)
    except OutputExistsError:
        raise OutputExistsContainerError(f"{name} already exists (use overwrite to replace it)") from None
    except OSError as e:
        raise ContainerError(f"cannot write {name}: {e.strerror or e}") from None
    try:
        return ItokWriter(out, header, name=name)
    except BaseException:
        out.abort()
        raise


def export_tokens(src: str | os.PathLike, dst: str | os.PathLike, fmt: str | None = None, *,
                  force: bool = False) -> dict[str, Any]:
    """Write the tokens and masks of the .itok file `src` to `dst` (.npz or .safetensors, atomically);
    returns a description of what was written (what `infotok export --json` prints)."""
    t0 = time.perf_counter()
    fmt = format_for(dst, fmt)
    with TokenFile(src) as tf, AtomicFile(dst, overwrite=force) as out:
        described = write_export(tf, out.file, fmt)
    return {"input": str(src), "output": str(dst), **described, "file_bytes": Path(dst).stat().st_size,
            "seconds": time.perf_counter() - t0}


def write_tokens(tokens: Tokens | TokenFile, header: Header, dst: str | os.PathLike, *,
                 overwrite: bool = False) -> dict[str, Any]:
    """Write the windows of `tokens` under `header` to the .itok file `dst` (atomically; each window coded
    in its smallest form, as `compress` writes it); returns what was written. Raises ContainerError when
    a window does not fit the header (nothing is written)."""
    with itok_writer(dst, header, overwrite=overwrite) as writer:
        for w in tokens.windows:
            writer.write_window(w.frame_start, w.frame_count, w.padded_frames, w.keep, w.kept_tokens)
        metas = writer.windows
    kept, possible = sum(m.kept for m in metas), sum(m.capacity for m in metas)
    return {"output": str(dst), "windows": len(metas), "frames": header.num_frames, "width": header.width,
            "height": header.height, "tokens_kept": kept, "tokens_possible": possible,
            "keep_rate": kept / possible, "window_keep_rates": [m.kept / m.capacity for m in metas],
            "model_name": header.model_name, "weights_sha256": header.weights_sha256,
            "file_bytes": Path(dst).stat().st_size}
