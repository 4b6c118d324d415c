"""The .itok format, torch-free: what the bytes of a token file are.

Holds the byte layout (`layout`), the header and index records (`header`), the reader and the writer
(`reader`, `writer`; the writer writes to a stream it is given), the skippable chunks' bodies
(`chunks`: window quality, audio), the entropy coder of version 2 (`entropy`), token files as data
(`tokens`) and the export of tokens to plain arrays (`export`).

May import: the standard library, numpy, msgpack, constriction and safetensors' numpy API, and rank 0
of the package (`constants`, `errors`). Never torch or PyAV, and no file-system policy (atomic
outputs are `io`'s), so reading token files stays light.
"""

from ..errors import ContainerError, OutputExistsContainerError
from .header import Header, WindowMeta, WindowRecord
from .layout import CHUNK_AUDIO, CHUNK_QUALITY, CODEBOOK_SIZE
from .reader import ItokReader, read_header_and_index
from .writer import ItokWriter

__all__ = ["CHUNK_AUDIO", "CHUNK_QUALITY", "CODEBOOK_SIZE", "ContainerError", "Header", "ItokReader", "ItokWriter",
           "OutputExistsContainerError", "WindowMeta", "WindowRecord", "read_header_and_index"]
