"""A weights file's safetensors header, read and checked before any tensor data: weights are untrusted.

The loaders (model/store.py, model/flex_store.py) read the header here (bounded in size, every entry's
shape, dtype and byte range checked against the file), build the model its configuration describes on the
meta device (no memory, no initialisation cost), hold its parameter count to bounds.MAX_PARAMETERS and
compare every tensor name, shape and dtype with the header. Only then is the model allocated and the
data read, so a hostile file costs at most a small multiple of its own size.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import WeightsError
from .bounds import MAX_PARAMETERS, parse_json, short

MAX_HEADER_BYTES = 1 << 23  # safetensors allows 100 MB; the released InfoTok-Flex's header is about 60 kB
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
               "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}
TORCH_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16"}


@dataclass(frozen=True)
class TensorEntry:
    shape: tuple[int, ...]
    dtype: str  # the safetensors name: "F32", "BF16", ...


@dataclass(frozen=True)
class WeightsHeader:
    metadata: dict[str, str]
    tensors: dict[str, TensorEntry]


def read_header(path: str | Path) -> WeightsHeader:
    """The metadata and tensor table of a safetensors file, without reading tensor data. Raises
    WeightsError (one line) for anything but a well-formed header whose byte ranges fit the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = path.stat().st_size
            prefix = f.read(8)
            if len(prefix) < 8:
                raise ValueError("shorter than a header")
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER_BYTES or length + 8 > size:
                raise ValueError(f"a header of {length} bytes (at most {MAX_HEADER_BYTES}, within the file)")
            table = parse_json("header", f.read(length))
        if not isinstance(table, dict):
            raise ValueError("the header is not a JSON object")
        metadata = table.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise ValueError("__metadata__ must map names to strings")
        data_bytes = size - 8 - length
        tensors, end = {}, 0
        for name, entry in sorted(table.items(), key=lambda item: _start(item[1])):
            tensors[name] = _entry(name, entry, end, data_bytes)
            end = entry["data_offsets"][1]
        if end != data_bytes:
            raise ValueError(f"the tensors cover {end} of the file's {data_bytes} data bytes")
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    return WeightsHeader(metadata=metadata, tensors=tensors)


def _start(entry: object) -> int:
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    if not isinstance(offsets, list) or len(offsets) != 2 or any(type(v) is not int for v in offsets):
        raise ValueError(f"a tensor entry without two integer data_offsets: {short(entry)}")
    return offsets[0]


def _entry(name: str, entry: dict, start: int, data_bytes: int) -> TensorEntry:
    """One tensor's entry, checked: a known dtype, a shape of non-negative ints, and a byte range that
    starts where the previous one ended and holds exactly shape x dtype bytes."""
    dtype, shape = entry.get("dtype"), entry.get("shape")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"tensor {short(name)}: unknown dtype {short(dtype)}")
    if not isinstance(shape, list) or len(shape) > 8 or any(type(d) is not int or d < 0 for d in shape):
        raise ValueError(f"tensor {short(name)}: bad shape {short(shape)}")
    begin, end = entry["data_offsets"]
    if begin != start or end > data_bytes or end - begin != math.prod(shape) * DTYPE_BYTES[dtype]:
        raise ValueError(f"tensor {short(name)}: data_offsets {short([begin, end])} do not fit its shape "
                         f"{shape} and dtype {dtype}")
    return TensorEntry(tuple(shape), dtype)


class SkipInit(TorchFunctionMode):
    """Builds modules without the random initialisation of their parameters (torch.nn.init's in-place
    functions do nothing), for a model whose every parameter is then loaded: a tenth of a second for
    infotok-m, a good part of a short command's start-up. Only the current thread is affected."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__module__", "") == "torch.nn.init" and func.__name__.endswith("_"):
            return args[0] if args else kwargs["tensor"]
        return func(*args, **(kwargs or {}))


def skeleton(build: Callable[[], nn.Module], path: Path) -> nn.Module:
    """The module `build` makes, on the meta device (shapes only), with its parameter count checked."""
    # without SkipInit, torch's initialisers on meta tensors import its compiler (1.5 s of start-up)
    with torch.device("meta"), SkipInit():
        module = build()
    parameters = sum(p.numel() for p in module.parameters())
    if parameters > MAX_PARAMETERS:
        raise WeightsError(f"{path}: the config asks for {parameters:,} parameters, more than {MAX_PARAMETERS:,}")
    return module


def expected_tensors(module: nn.Module, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """{name: shape} of what a module stores (its state dict), from a meta-device skeleton."""
    return {prefix + name: tuple(t.shape) for name, t in module.state_dict().items()}


def check_tensors(path: Path, header: dict[str, TensorEntry], expected: dict[str, tuple[int, ...]],
                  dtypes: Collection[str], what: str = "the config") -> None:
    """WeightsError unless the header holds exactly the expected tensors, shapes and allowed dtypes."""
    missing = [name for name in expected if name not in header]
    unexpected = [name for name in header if name not in expected]
    wrong = [f"{name} {list(header[name].shape)}!={list(shape)}" for name, shape in expected.items()
             if name in header and header[name].shape != shape]
    dtype = [f"{name} {entry.dtype}" for name, entry in header.items()
             if name in expected and entry.dtype not in dtypes]
    parts = [f"{label} ({len(names)}): {', '.join(short(n, 80) for n in names[:3])}"
             f"{' ...' if len(names) > 3 else ''}"
             for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong),
                                  (f"not {'/'.join(dtypes)}", dtype)) if names]
    if parts:
        raise WeightsError(f"{path}: weights do not match {what}: " + "; ".join(parts))
