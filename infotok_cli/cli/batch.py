"""Batch runs over many inputs on the command line: the batch options' checks, `report_batch` (the
outcomes as lines, JSON and exit codes) and `compress_batch`, `decompress_batch` and `inspect_batch`, the
batch forms of those commands: a model is loaded once (per model, for decompress) for every file.

The planning itself (input lists, `--shard K/N`, output names, skip-existing, per-file outcomes) is the
library's, io/batch.py, shared with the Ray Data integration; its names are re-exported here.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import typer

from ..constants import VIDEO_SUFFIXES
from ..io.batch import BatchItem, gather, parse_shard, plan, run, select_shard
from .app import (
    EXIT_BATCH,
    EXIT_CONTAINER,
    EXIT_EXISTS,
    EXIT_INPUT,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    classify,
    errors,
    frame_progress,
    model_error,
    print_json,
    print_notices,
    require_input,
    show_progress,
)

# ----------------------------------------------------------------------------- the command line's batches


@dataclass
class BatchArgs:
    """The batch options of a command (`-o DIR`, `--from-list`, `--shard`, `--skip-existing`)."""

    inputs: list[Path] | None
    out_dir: Path | None
    from_list: str | None
    shard: str | None
    skip_existing: bool

    @property
    def active(self) -> bool:
        """Whether the command runs in batch mode."""
        return (self.out_dir is not None or self.from_list is not None or self.shard is not None
                or self.skip_existing)


def batch_inputs(positional: list[Path] | None, from_list: str | None, shard: str | None) -> list[Path]:
    """Every input of a batch (arguments, then the list), without repeats, restricted to the shard."""
    if from_list is not None and from_list != "-":
        require_input(Path(from_list))
    inputs = gather(positional or [], from_list)  # the shard last, so that "no inputs" means none at all
    if not inputs:
        raise CliError("no inputs given (pass files, or --from-list FILE)", EXIT_USAGE)
    if any(str(p) == "-" for p in inputs):
        raise CliError("- (stdin) holds one video: give it as the only input, without batch options", EXIT_USAGE)
    return select_shard(inputs, parse_shard(shard) if shard is not None else None)


def batch_outputs(inputs: list[Path], out_dir: Path | None, suffix: str, force: bool, skip_existing: bool):
    """The batch's items, with every check that can be made before any work (exit 2 or 5)."""
    if out_dir is None:
        raise CliError("batch mode (--from-list, --shard, --skip-existing or several inputs) needs -o DIR",
                       EXIT_USAGE)
    if str(out_dir) == "-":
        raise CliError("-o takes a directory; stdout (-) takes one video: give INPUT - without batch options",
                       EXIT_USAGE)
    if force and skip_existing:
        raise CliError("--force and --skip-existing contradict each other; pick one", EXIT_USAGE)
    if out_dir.exists() and not out_dir.is_dir():
        raise CliError(f"{out_dir}: -o must name a directory", EXIT_USAGE)
    items = plan(inputs, out_dir, suffix)
    existing = [i.output for i in items if i.output is not None and i.output.exists()]
    if existing and not force and not skip_existing:
        raise CliError(f"{len(existing)} of {len(items)} outputs already exist, e.g. {existing[0]} "
                       "(use --skip-existing to resume or --force to overwrite)", EXIT_EXISTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    return items


def check_batch_item(item) -> None:
    require_input(item.input)
    if item.output is not None and item.output.exists() and item.output.resolve() == item.input.resolve():
        raise CliError(f"{item.output}: the output is the input file; inputs are never modified", EXIT_USAGE)


def report_batch(outcomes, total: int, codec_code: int, json_out: bool, quiet: bool, describe) -> int:
    """Print each outcome as it comes (a line on stderr, or a JSON line on stdout) and a summary on stderr;
    returns the exit code (7 if any input failed)."""
    t0 = time.perf_counter()
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    for n, o in enumerate(outcomes, start=1):
        counts[o.status] += 1
        code, message = classify(o.error, codec_code) if o.error is not None else (EXIT_OK, None)
        if json_out:
            print_json({**(o.result or {}), "input": str(o.item.input),
                        "output": None if o.item.output is None else str(o.item.output), "status": o.status,
                        "exit_code": code, "error": message, "seconds": o.seconds})
        elif not quiet:
            target = f" -> {o.item.output}" if o.item.output is not None else ""
            if o.status == "ok":
                detail = describe(o.result)
            else:
                detail = "output exists" if o.status == "skipped" else f"{message} (exit {code})"
            sys.stderr.write(f"[{n}/{total}] {o.status} {o.item.input}{target}: {detail}\n")
            sys.stderr.flush()
    if not quiet:
        sys.stderr.write(f"{total} input(s): {counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} "
                         f"skipped in {time.perf_counter() - t0:.1f} s\n")
    return EXIT_BATCH if counts["failed"] else EXIT_OK


def single_pair(inputs: list[Path] | None, what: str) -> tuple[Path, Path]:
    """INPUT OUTPUT of the single-file form."""
    if not inputs or len(inputs) != 2:
        raise CliError(f"give INPUT OUTPUT, or several {what} with -o DIR (got {len(inputs or [])} argument(s))",
                       EXIT_USAGE)
    return inputs[0], inputs[1]


def compress_batch(args: BatchArgs, options: dict, tokenizer: dict, force: bool, json_out: bool, quiet: bool) -> None:
    """`compress INPUTS... -o DIR`: every input to DIR/<stem>.itok with one model."""
    from ..report.text import human_size

    with errors(codec_code=EXIT_INPUT):
        items = batch_outputs(batch_inputs(args.inputs, args.from_list, args.shard), args.out_dir, ".itok", force,
                              args.skip_existing)
        from ..coding.tokenizer import Tokenizer  # torch only now: mistakes above are reported at once

        pending = [i for i in items if not (args.skip_existing and i.output.exists())]
        tok = Tokenizer(**tokenizer) if pending else None  # a model problem stops the batch before any work

        def work(item: BatchItem) -> dict:
            check_batch_item(item)
            with frame_progress(item.input.name, show_progress(quiet)) as progress:
                result = tok.compress_file(item.input, item.output, force=force, progress=progress, **options)
            print_notices([f"{item.input}: {n}" for n in result.notices], quiet or json_out)
            return result.to_dict()

        def describe(r: dict) -> str:
            return (f"{r['frames']} frames, keep {r['keep_rate']:.3f}, {human_size(r['file_bytes'])}, "
                    f"{r['seconds']:.2f} s")

        code = report_batch(run(items, work, skip_existing=args.skip_existing), len(items), EXIT_INPUT, json_out,
                            quiet, describe)
    if code:
        raise typer.Exit(code)


def decompress_batch(args: BatchArgs, options: dict, model: str | None, device: str, precision: str, force: bool,
                     json_out: bool, quiet: bool, container: str | None = None) -> None:
    """`decompress INPUTS... -o DIR`: every file to DIR/<stem>.mp4 (or the suffix `container` names), each
    model loaded once."""
    with errors(codec_code=EXIT_CONTAINER):
        suffix = f".{container or 'mp4'}"
        if suffix not in VIDEO_SUFFIXES:
            raise CliError(f"--format {container} is for a stream (-); files are written as mkv, mp4 or mov",
                           EXIT_USAGE)
        items = batch_outputs(batch_inputs(args.inputs, args.from_list, args.shard), args.out_dir, suffix, force,
                              args.skip_existing)
        from ..coding.tokenizer import TokenizerCache  # torch only now: mistakes above are reported at once
        from ..errors import WeightsError
        from ..format.arrays import read_header_and_index

        models = TokenizerCache(model, device, precision)
        if model is not None and any(not (args.skip_existing and i.output.exists()) for i in items):
            models.load(model)  # a bad --model stops the batch before any work

        def work(item: BatchItem) -> dict:
            check_batch_item(item)
            header, _, _ = read_header_and_index(item.input)
            try:
                tok = models.get(header)
            except WeightsError as exc:
                raise model_error(exc, header, model) from None
            with frame_progress(item.input.name, show_progress(quiet)) as progress:
                result = tok.decompress_file(item.input, item.output, force=force, progress=progress, **options)
            return result.to_dict()

        code = report_batch(run(items, work, skip_existing=args.skip_existing), len(items), EXIT_CONTAINER,
                            json_out, quiet, lambda r: f"{r['frames']} frames, {r['seconds']:.2f} s")
    if code:
        raise typer.Exit(code)


def inspect_batch(inputs: list[Path] | None, from_list: str | None, shard: str | None, json_out: bool,
                  frames: bool, csv_path: str | None, plot: Path | None) -> None:
    """`inspect A.itok B.itok ...`: a report (or a JSON line) per file, a summary on stderr."""
    with errors(codec_code=EXIT_CONTAINER):
        from ..report.stats import inspect_file
        from ..report.text import inspect_report
        from .app import out_console, warn_unreadable

        if csv_path is not None or plot is not None:
            raise CliError("--csv and --plot take one file at a time", EXIT_USAGE)
        paths = batch_inputs(inputs, from_list, shard)

        def work(item: BatchItem) -> dict:
            require_input(item.input)
            insp = inspect_file(item.input)
            warn_unreadable(insp)
            if not json_out:
                inspect_report(out_console, insp, frames)
            return insp.to_dict()

        code = report_batch(run(plan(paths, None, ""), work), len(paths), EXIT_CONTAINER, json_out, False,
                            lambda r: f"{r['summary']['tokens_kept']:,} tokens kept")
    if code:
        raise typer.Exit(code)
