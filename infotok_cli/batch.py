"""Batch runs over many inputs: input lists, deterministic shards, output names and per-file outcomes.

Nothing here knows about models or the command line: `run` calls a function per file and reports
each file's outcome (ok, failed with its exception, or skipped because its output exists), so one bad
input never stops a batch. The CLI turns outcomes into lines, JSON and exit codes.

Sharding: `--shard K/N` keeps the inputs whose position in the (de-duplicated) input list is K modulo
N, K = 0..N-1. Every job of an array must see the same list in the same order; the N shards are then
disjoint and together hold every input exactly once, with no coordination between jobs.
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


@dataclass
class BatchItem:
    input: Path
    output: Path | None  # None for commands without an output file (inspect)


@dataclass
class Outcome:
    item: BatchItem
    status: str  # "ok", "failed" or "skipped"
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


def plan(inputs: Sequence[Path], out_dir: Path | None, suffix: str) -> list[BatchItem]:
    """One item per input; the output is `out_dir/<input stem><suffix>`. Two inputs that would write the
    same output are refused up front (ValueError naming them)."""
    if out_dir is None:
        return [BatchItem(p, None) for p in inputs]
    items, owner = [], {}
    for p in inputs:
        out = out_dir / (p.stem + suffix)
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
