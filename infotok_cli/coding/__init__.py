"""Coding: turning videos into tokens and back with a loaded model.

Holds the tokenizer engine (`tokenizer`: one class, one way to build it), the router's placement
(`router`), rate control (`rate`), window geometry (`geometry`), the device and precision
(`precision`), quality metrics the rate control needs (`metrics`: PSNR, SSIM) and the two pipelines
(`compress`, `decompress`).

May import: torch, rank 0 (`constants`, `errors`), `format`, `io` and `model`. Nothing from eval up.
"""

from ..errors import CodecError, OptionError
from .compress import CompressResult, compress_video
from .decompress import DecompressResult, decompress_video, iter_decoded
from .tokenizer import Tokenizer, TokenizerCache, WindowAnalysis

__all__ = ["CodecError", "CompressResult", "DecompressResult", "OptionError", "Tokenizer", "TokenizerCache",
           "WindowAnalysis", "compress_video", "decompress_video", "iter_decoded"]
