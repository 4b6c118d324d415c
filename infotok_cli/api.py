"""The public Python API: read token files, compress and decompress files, tokenize frames in memory.

* `load(path)` -> `TokenFile`: an .itok file's header and its windows; each window's keep mask and
  tokens are read only when asked for (`format.tokens`, which needs no torch).
* `compress(src, dst, **options)` / `decompress(src, dst, **options)`: what `infotok compress` /
  `infotok decompress` do, returning the statistics their `--json` prints.
* `Tokenizer` (`coding.tokenizer`): one model kept loaded; `encode` turns frames already in memory into
  tokens and masks, `decode` turns them back into frames, and `compress_file` / `decompress_file` reuse
  the loaded model for many files (what the batch CLI and the Ray module call).
* `Tokens.from_arrays(geometry, tokens | sequences)`: tokens from plain arrays (a sequence model's output),
  with the `Geometry` of an exported file (`Geometry.from_file`) or of a new clip (`Tokenizer.geometry`);
  `pack(tokens, dst)` writes them (or an export file's) as an .itok file.

Token layout everywhere: a window's `keep` is bool `[t, h, w]` over its latent grid and `tokens` is
int32 `[t, h, w]` with the code (0..63999) at kept positions and `-1` at dropped ones.
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Any

from .coding.pack import pack_file, pack_tokens
from .coding.tokenizer import Tokenizer
from .format.arrays import read_header_and_index
from .format.tokens import DROPPED, Geometry, TokenFile, Tokens, TokenWindow, load

__all__ = ["DROPPED", "Geometry", "TokenFile", "TokenWindow", "Tokenizer", "Tokens", "compress", "decompress", "load",
           "pack"]


def compress(src: str | os.PathLike, dst: str | os.PathLike, *, model: str | os.PathLike | None = None,
             device: str = "auto", tokenizer: Tokenizer | None = None, force: bool = False,
             placement: str | None = None, precision: str = "auto", **options: Any) -> dict[str, Any]:
    """`infotok compress SRC DST`: returns the statistics `--json` prints.

    Options as on the command line: beta (0.5), strategy (the model's default: "global", or "window" for
    an uncalibrated imported model), window (33), overlap (3), model, device, placement (the model's
    default: "predicted" for weights with a learned router head, such as infotok-m; "probe-gain" for
    other infotok weights; "error" for InfoTok-Flex), precision ("auto"), force, scale ("W:H", ffmpeg's
    meaning), start and duration (seconds, or "[HH:]MM:SS[.frac]"); `src` "-" reads stdin; `progress` takes a
    `(frames done, frames total)` callback. Pass a `tokenizer` to reuse a loaded model across calls (its
    own placement and precision then apply).
    """
    tok = tokenizer or Tokenizer(model, device, placement, precision)
    return tok.compress_file(src, dst, force=force, **options).to_dict()


def decompress(src: str | os.PathLike, dst: str | os.PathLike, *, model: str | os.PathLike | None = None,
               device: str = "auto", tokenizer: Tokenizer | None = None, force: bool = False,
               precision: str = "auto", **options: Any) -> dict[str, Any]:
    """`infotok decompress SRC DST`: returns the statistics `--json` prints. `src` is an .itok file or the
    arrays `export` writes.

    The model is the one the file names (if shipped) unless `model` or `tokenizer` is given; options:
    lossless (False), audio (True), precision ("auto"), force, progress; `dst` "-" writes the video to
    stdout in the container `format` ("mkv", "mp4", "mov" or "nut").
    """
    if tokenizer is None:
        header, _, _ = read_header_and_index(src)
        tokenizer = Tokenizer.for_file(header, model, device, precision)
    return tokenizer.decompress_file(src, dst, force=force, **options).to_dict()


def pack(tokens: Tokens | TokenFile | str | os.PathLike, dst: str | os.PathLike, *,
         model: str | os.PathLike | None = None, fps: float | Fraction | str | None = None,
         force: bool = False) -> dict[str, Any]:
    """Write tokens as an .itok file: `Tokens` (from `Tokens.from_arrays`, or from `encode` with `fps=`), an
    open `TokenFile`, or the path of an export (`infotok pack SRC DST`). The weights the tokens name
    (or `model`) must be at hand (WeightsError); bad arrays raise ContainerError; nothing is written then.
    Returns what `infotok pack --json` prints."""
    if isinstance(tokens, (str, os.PathLike)):
        return pack_file(tokens, dst, model=model, overwrite=force)
    return pack_tokens(tokens, dst, model=model, fps=fps, overwrite=force)
