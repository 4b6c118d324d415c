"""Batch planning over many inputs: input lists, deterministic shards, output names, skip-existing and
per-file outcomes. The rules of `infotok compress|decompress|inspect ... -o DIR` (cli/batch.py) and of the
Ray Data integration (integrations/ray_data.py), here so Python code can plan the same batches.

`gather` builds a batch's inputs (paths, then a list file, without repeats, restricted to a shard); `plan`
names each input's output, `<out_dir>/<input stem><suffix>`, refusing two inputs that would write the same
file; `run` calls a function per item and yields each one's outcome (ok, failed with its exception, or
skipped because its output exists), so one bad input never stops a batch.

Sharding: shard K of N keeps the inputs whose position in the (de-duplicated) input list is K modulo N,
K = 0..N-1. Every job of an array must see the same list in the same order; the N shards are then disjoint
and together hold every input exactly once, with no coordination between jobs.

Pure file-system policy: no torch, no PyAV.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

T = TypeVar("T")

MAX_LIST_BYTES = 1 << 30  # an input list larger than this is refused rather than read into memory
STATUSES = ("ok", "failed", "skipped")


@dataclass
class BatchItem:
    input: Path
    output: Path | None  # None for commands without an output file (inspect)


@dataclass
class Outcome:
    item: BatchItem
    status: str  # one of STATUSES
    result: dict[str, Any] | None = None
    error: BaseException | None = None
    seconds: float = 0.0


def read_list(source: str | os.PathLike, stdin: TextIO | None = None) -> list[str]:
    """Paths from a list file (or `-` for stdin): one per line; blank lines and lines starting with `#`
    are ignored, surrounding whitespace is stripped. Relative paths stay relative to the working
    directory (not to the list's folder), as they would on a command line."""
    if str(source) == "-":
        text = (stdin or sys.stdin).read()
    else:
        path = Path(source)
        if path.is_file() and path.stat().st_size > MAX_LIST_BYTES:
            raise ValueError(f"{path}: input list is larger than {MAX_LIST_BYTES >> 20} MiB")
        text = path.read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def parse_shard(text: str) -> tuple[int, int]:
    """`"K/N"` -> (K, N) with 0 <= K < N."""
    parts = text.split("/")
    try:
        k, n = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--shard must be K/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= k < n:
        raise ValueError(f"--shard K/N needs N >= 1 and 0 <= K < N (shards are numbered from 0), got {text!r}")
    return k, n


def unique(paths: Iterable[Path]) -> list[Path]:
    """The paths in order, without repeats of the same file (compared by absolute path)."""
    seen: set[str] = set()
    out = []
    for p in paths:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def select_shard(items: Sequence[T], shard: tuple[int, int] | None) -> list[T]:
    """The items of shard K of N: positions K, K+N, K+2N, ..."""
    if shard is None:
        return list(items)
    k, n = shard
    return list(items[k::n])


def gather(paths: Iterable[str | os.PathLike] = (), from_list: str | os.PathLike | None = None,
           shard: str | tuple[int, int] | None = None, stdin: TextIO | None = None) -> list[Path]:
    """Every input of a batch: `paths`, then the paths of the list file `from_list` (`-`: stdin), without
    repeats, restricted to `shard` ("K/N" or (K, N)). The same inputs, in the same order, as the command
    line's `INPUTS... --from-list FILE --shard K/N`."""
    inputs = [Path(p) for p in paths]
    if from_list is not None:
        inputs += [Path(p) for p in read_list(from_list, stdin)]
    return select_shard(unique(inputs), parse_shard(shard) if isinstance(shard, str) else shard)


def output_path(input: str | os.PathLike, out_dir: str | os.PathLike, suffix: str) -> Path:
    """Where a batch writes the output of `input`: `out_dir/<input stem><suffix>`."""
    return Path(out_dir) / (Path(input).stem + suffix)


def plan(inputs: Sequence[Path], out_dir: Path | None, suffix: str) -> list[BatchItem]:
    """One item per input; the output is `output_path(input, out_dir, suffix)`. Two inputs that would write
    the same output are refused up front (ValueError naming them)."""
    if out_dir is None:
        return [BatchItem(p, None) for p in inputs]
    items, owner = [], {}
    for p in inputs:
        out = output_path(p, out_dir, suffix)
        key = os.path.abspath(out)
        if key in owner:
            raise ValueError(f"{owner[key]} and {p} would both write {out}; rename one or run them separately")
        owner[key] = p
        items.append(BatchItem(p, out))
    return items


def run(items: Sequence[BatchItem], work: Callable[[BatchItem], dict[str, Any]], *,
        skip_existing: bool = False) -> Iterator[Outcome]:
    """Call `work` on each item in turn and yield its outcome. An exception fails that item only
    (KeyboardInterrupt and SystemExit still stop the batch); with `skip_existing`, an item whose output
    exists is skipped without calling `work` (outputs are written atomically, so an existing one is
    complete)."""
    for item in items:
        if skip_existing and item.output is not None and item.output.exists():
            yield Outcome(item, "skipped")
            continue
        t0 = time.perf_counter()
        try:
            result = work(item)
        except Exception as exc:  # noqa: BLE001 - one file's failure is reported, the batch goes on
            yield Outcome(item, "failed", error=exc, seconds=time.perf_counter() - t0)
        else:
            yield Outcome(item, "ok", result=result, seconds=time.perf_counter() - t0)
