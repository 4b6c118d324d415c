"""Checked reading of configuration values: a configuration can come from an untrusted weights file.

A model's configuration (`--config`, or the JSON in a weights file's metadata) decides how much memory
the model takes and how long building it runs, before a single weight is read. Each family checks every
field of its configuration with these helpers where the configuration lives (model/config.py,
model/flex_config.py, model/router_head.py); the loaders then build the model on the meta device and
compare it with the file's header (model/weights_header.py) before anything is allocated.

Every helper raises ValueError with a one-line message naming the field. Bounds are chosen far above any
model that runs on one machine; they exist to refuse absurd values (20,000 channels, 100,000 layers, zero
heads, NaN), not to limit real models.
"""

from __future__ import annotations

import json
import math

from ..constants import CODEBOOK_SIZE

MAX_PARAMETERS = 1_000_000_000  # 8x the released InfoTok-Flex (123 M), 200x infotok-m: 4 GB in float32
MAX_CONFIG_CHARS = 1 << 20  # a configuration's JSON text; real ones are under 2 kB
MAX_NAME_CHARS = 256
MAX_LEVELS = 16  # FSQ digits per token


def bounded_int(name: str, value: object, low: int, high: int) -> int:
    """`value` as an int in low..high. Not a bool, float or string: a weights file has no reason to
    store a size any other way, and int() would silently truncate 2.7 or accept True."""
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{name}={short(value)} must be an integer in {low}..{high}")
    return value


def bounded_float(name: str, value: object, low: float, high: float) -> float:
    """`value` (an int or float, not a bool) as a finite float in [low, high]."""
    if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name}={short(value)} must be a finite number in [{low:g}, {high:g}]")
    return float(value)


def bounded_ints(name: str, value: object, low: int, high: int, min_length: int, max_length: int) -> tuple[int, ...]:
    """A JSON list of ints (each low..high) of min_length..max_length entries, as a tuple."""
    if not isinstance(value, (list, tuple)) or not min_length <= len(value) <= max_length:
        raise ValueError(f"{name}={short(value)} must be a list of {min_length}..{max_length} integers")
    return tuple(bounded_int(f"{name}[{i}]", v, low, high) for i, v in enumerate(value))


def boolean(name: str, value: object) -> bool:
    """A JSON boolean (a string such as "false" is truthy and would pass bool())."""
    if type(value) is not bool:
        raise ValueError(f"{name}={short(value)} must be true or false")
    return value


def bounded_text(name: str, value: object, max_chars: int = MAX_NAME_CHARS) -> str:
    if not isinstance(value, str) or len(value) > max_chars:
        raise ValueError(f"{name}={short(value)} must be a string of at most {max_chars} characters")
    return value


def power_of_two(name: str, value: object, low: int, high: int) -> int:
    value = bounded_int(name, value, low, high)
    if value & (value - 1):
        raise ValueError(f"{name}={value} must be a power of two")
    return value


def fsq_levels(name: str, value: object) -> tuple[int, ...]:
    """FSQ levels: at least 2 per digit (one level carries nothing and divides by zero), and a codebook
    no larger than the .itok format's (token values are stored below CODEBOOK_SIZE)."""
    levels = bounded_ints(name, value, 2, CODEBOOK_SIZE, 1, MAX_LEVELS)
    if math.prod(levels) > CODEBOOK_SIZE:
        raise ValueError(f"{name}={list(levels)}: a codebook of {math.prod(levels)} codes exceeds the "
                         f"format's {CODEBOOK_SIZE}")
    return levels


def parse_json(name: str, source: str | bytes) -> object:
    """JSON text from an untrusted source: bounded in length, and a nesting too deep for the parser's
    recursion is a ValueError like any other malformed text."""
    if len(source) > MAX_CONFIG_CHARS:
        raise ValueError(f"{name}: {len(source)} characters of JSON, more than {MAX_CONFIG_CHARS}")
    try:
        return json.loads(source)
    except RecursionError:
        raise ValueError(f"{name}: JSON nested too deeply") from None
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{name}: not valid JSON ({exc})") from None


def mapping(name: str, value: object) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object, got {type(value).__name__}")
    return value


def short(value: object, limit: int = 60) -> str:
    """repr() cut to `limit` characters, so a hostile value cannot flood the one-line message."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    try:
        shown = repr(value)
    except (ValueError, RecursionError):  # a huge int inside a list (Python refuses to print it); deep nesting
        shown = f"a {type(value).__name__} holding a huge integer"
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."

