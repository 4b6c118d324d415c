"""infotok: compress videos into adaptive discrete tokens (InfoTok) and back.

The Python API (docs/API.md) is importable from here: `load`, `compress`, `decompress`, `pack`,
`Tokenizer`, `TokenFile`, `TokenWindow`, `Tokens`, `Geometry`. Each is imported on first use, so
`import infotok_cli` (and the CLI's quick paths) do not pay for torch and PyAV; reading token files
(`load`) never imports torch.

The package is layered; a module imports only from its own layer or lower ones (tests/test_layout.py):
`constants`, `errors` < `format` < `io` < `model` < `coding` < `eval` < `report`, `train` <
`integrations`, `api` < `cli`. Each subpackage's docstring says what it holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .constants import __version__

_TOKENS = ("load", "TokenFile", "TokenWindow", "Tokens", "Geometry")  # torch-free
_API = ("compress", "decompress", "pack", "Tokenizer", *_TOKENS)
__all__ = ["__version__", *_API]

if TYPE_CHECKING:  # pragma: no cover
    from .api import Geometry, TokenFile, Tokenizer, Tokens, TokenWindow, compress, decompress, load, pack  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _TOKENS:
        from .format import tokens

        return getattr(tokens, name)
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'infotok_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
