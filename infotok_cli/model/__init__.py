"""Models: the network that turns windows of frames into tokens and back, and where its weights come from.

Holds the building blocks (`layers`), the quantiser (`fsq`), the configuration (`config`), the InfoTok
model (`infotok`) and weights loading / saving with the shipped-model store (`store`). The released
InfoTok-Flex architecture is a second model family in `flex` (config, FSQ, transformers, the tokenizer,
the release's checkpoint loader) and `flex_cnn` (its wavelet patcher and causal CNN).

May import: torch, rank 0 (`constants`, `errors`), `format` and `io`. Nothing from coding up.
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use, so that `model.catalog` (which commands without torch use) imports no torch.
_HOMES = {"ModelConfig": "config", "FSQ": "fsq", "InfoTok": "infotok", "count_parameters": "infotok",
          "grow": "infotok", "DEFAULT_MODEL": "catalog", "WEIGHTS_DIR": "catalog", "LoadedModel": "store",
          "WeightsError": "store", "load_model": "store", "save_weights": "store"}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)


def __dir__() -> list[str]:
    return __all__
