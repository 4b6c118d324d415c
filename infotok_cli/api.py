"""The public Python API: read token files, compress and decompress files, tokenize frames in memory.

* `load(path)` -> `TokenFile`: an .itok file's header and its windows; each window's keep mask and
  tokens are read only when asked for (`format.tokens`, which needs no torch).
* `compress(src, dst, **options)` / `decompress(src, dst, **options)`: what `infotok compress` /
  `infotok decompress` do, returning the statistics their `--json` prints.
* `Tokenizer` (`coding.tokenizer`): one model kept loaded; `encode` turns frames already in memory into
  tokens and masks, `decode` turns them back into frames, and `compress_file` / `decompress_file` reuse
  the loaded model for many files (what the batch CLI and the Ray module call).

Token layout everywhere: a window's `keep` is bool `[t, h, w]` over its latent grid and `tokens` is
int32 `[t, h, w]` with the code (0..63999) at kept positions and `-1` at dropped ones.
"""

from __future__ import annotations

import os
from typing import Any

from .coding.tokenizer import Tokenizer
from .format.reader import read_header_and_index
from .format.tokens import DROPPED, TokenFile, Tokens, TokenWindow, load

__all__ = ["DROPPED", "TokenFile", "TokenWindow", "Tokenizer", "Tokens", "compress", "decompress", "load"]


def compress(src: str | os.PathLike, dst: str | os.PathLike, *, model: str | os.PathLike | None = None,
             device: str = "auto", tokenizer: Tokenizer | None = None, force: bool = False,
             placement: str | None = None, precision: str = "auto", **options: Any) -> dict[str, Any]:
    """`infotok compress SRC DST`: returns the statistics `--json` prints.

    Options as on the command line: beta (0.5), strategy (the model's default: "global", or "window" for
    an uncalibrated imported model), window (33), overlap (3), model, device, placement (the model's
    default: "probe-gain", "error" for InfoTok-Flex), precision ("auto"), force, scale ("W:H", ffmpeg's
    meaning), start and duration (seconds, or "[HH:]MM:SS[.frac]"); `src` "-" reads stdin; `progress` takes a
    `(frames done, frames total)` callback. Pass a `tokenizer` to reuse a loaded model across calls (its
    own placement and precision then apply).
    """
    tok = tokenizer or Tokenizer(model, device, placement, precision)
    return tok.compress_file(src, dst, force=force, **options).to_dict()


def decompress(src: str | os.PathLike, dst: str | os.PathLike, *, model: str | os.PathLike | None = None,
               device: str = "auto", tokenizer: Tokenizer | None = None, force: bool = False,
               precision: str = "auto", **options: Any) -> dict[str, Any]:
    """`infotok decompress SRC DST`: returns the statistics `--json` prints.

    The model is the one the file names (if shipped) unless `model` or `tokenizer` is given; options:
    lossless (False), audio (True), precision ("auto"), force, progress; `dst` "-" writes the video to
    stdout in the container `format` ("mkv", "mp4", "mov" or "nut").
    """
    if tokenizer is None:
        header, _, _ = read_header_and_index(src)
        tokenizer = Tokenizer.for_file(header, model, device, precision)
    return tokenizer.decompress_file(src, dst, force=force, **options).to_dict()
