"""Models: the network that turns windows of frames into tokens and back, and where its weights come from.

Holds the building blocks (`layers`), the quantiser (`fsq`), the configuration (`config`), the InfoTok
model (`infotok`) and weights loading / saving with the shipped-model store (`store`). The released
InfoTok-Flex architecture is a second model family in `flex` (config, FSQ, transformers, the tokenizer,
the release's checkpoint loader) and `flex_cnn` (its wavelet patcher and causal CNN).

May import: torch, rank 0 (`constants`, `errors`), `format` and `io`. Nothing from coding up.
"""

from .config import ModelConfig
from .fsq import FSQ
from .infotok import InfoTok, count_parameters, grow
from .store import DEFAULT_MODEL, WEIGHTS_DIR, LoadedModel, WeightsError, load_model, save_weights

__all__ = ["DEFAULT_MODEL", "FSQ", "WEIGHTS_DIR", "InfoTok", "LoadedModel", "ModelConfig", "WeightsError",
           "count_parameters", "grow", "load_model", "save_weights"]
