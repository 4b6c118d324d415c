"""The `infotok` command line: compress, decompress, inspect, export, pack, visualize, eval and train.

The CLI is a thin layer: every capability lives in a library function; a command parses options, checks
inputs and outputs up front, calls one library function, shows progress and prints its result (laid
out by `report.text`). This module holds the app, the options and checks the commands share, and the
turning of errors into one-line messages with documented exit codes; the commands are in `coding`
(compress, decompress), `files` (inspect, export, pack, visualize, models, doctor) and `evaluation` (eval,
train), batch mode in `batch`.

Output conventions: `--json` prints exactly one JSON object on stdout (in batch mode one per line and
input) and nothing else there; progress bars, summaries, notices and errors go to stderr (except
`inspect`'s report, which is its output).
Existing outputs are never overwritten without `--force` (checked before any work), outputs are
written atomically, inputs are never modified.

Exit codes:
  0  success
  1  unexpected internal error (one line; INFOTOK_DEBUG=1 shows the traceback)
  2  usage error: unknown or invalid option or argument
  3  input not found, unreadable, or not a video
  4  invalid or corrupt .itok file, or token arrays that do not fit (codes, positions, shapes, windows)
  5  output already exists (pass --force to overwrite)
  6  model or weights problem (missing or unreadable weights, weights that do not match the file)
  7  batch: at least one input failed (each failure is reported with its own code; the others were done)

Batch mode (`compress`/`decompress` with `-o DIR`, `--from-list`, `--shard` or `--skip-existing`;
`inspect` with several inputs): many inputs in one process and one model load. Each input succeeds or
fails on its own: a line per file and a summary on stderr, or one JSON object per line per file with
`--json`. Problems found before any work (options, model, outputs that exist) still exit with codes 2-6.
"""

from __future__ import annotations

import enum
import json
import math
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..constants import DEVICES, PLACEMENTS, PRECISIONS, STRATEGIES, __version__
from ..errors import CodecError, ContainerError, OptionError, VideoError, WeightsError, one_line

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_CONTAINER = 4
EXIT_EXISTS = 5
EXIT_MODEL = 6
EXIT_BATCH = 7

EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 internal error; 2 usage error; 3 input not found, unreadable or not a video; "
    "4 invalid or corrupt .itok file or token arrays; 5 output exists (use --force); 6 model/weights problem; "
    "7 batch: some inputs failed."
)

app = typer.Typer(
    name="infotok",
    help="Compress videos into adaptive discrete tokens (InfoTok) and back.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # errors are reported as one line by `errors()` below
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Human output goes to stderr so that stdout stays clean for --json / --csv -.
err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)

# Option choices, from the library's constants (global first: the default for models with a reference error).
Strategy = enum.Enum("Strategy", {s: s for s in sorted(STRATEGIES, key=lambda s: s != "global")}, type=str)
Placement = enum.Enum("Placement", {p: p for p in PLACEMENTS}, type=str)
Device = enum.Enum("Device", {d: d for d in DEVICES}, type=str)
PrecisionName = enum.Enum("PrecisionName", {p: p for p in PRECISIONS}, type=str)


# ----------------------------------------------------------------------------- errors


class CliError(Exception):
    """A user-facing failure with its exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def die(message: object, code: int) -> NoReturn:
    # Plain write, not Rich: Rich would wrap a long message over several lines.
    sys.stderr.write(f"error: {one_line(message)}\n")
    sys.stderr.flush()
    raise typer.Exit(code)


def os_error_message(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


# The package's exception types and their exit codes, most specific first (CodecError: `codec_code`).
LIBRARY_ERRORS = ((OptionError, EXIT_USAGE), (VideoError, EXIT_INPUT), (ContainerError, EXIT_CONTAINER),
                  (WeightsError, EXIT_MODEL), (CodecError, None))


def classify(exc: Exception, codec_code: int) -> tuple[int, str]:
    """(exit code, one-line message) of an exception (see `errors` and the module docstring)."""
    if isinstance(exc, CliError):
        return exc.code, one_line(exc)
    if isinstance(exc, FileExistsError):  # incl. the writers' own: another process wrote the output first
        return EXIT_EXISTS, one_line(os_error_message(exc))
    for cls, code in LIBRARY_ERRORS:
        if isinstance(exc, cls):
            return codec_code if code is None else code, one_line(exc)
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return EXIT_INPUT, one_line(os_error_message(exc))
    if isinstance(exc, ValueError):
        return EXIT_USAGE, one_line(exc)
    return EXIT_INTERNAL, one_line(f"internal error: {type(exc).__name__}: {exc}")


@contextmanager
def errors(codec_code: int) -> Iterator[None]:
    """Map exceptions to one `error: ...` line on stderr and an exit code (see the module docstring).

    `codec_code` is the exit code of a CodecError raised while the command works (options and model
    checks are done up front and raise CliError with their own codes): compress -> 3 (the video ended
    early), decompress -> 4 (the file decodes inconsistently).
    """
    try:
        yield
    except (typer.Exit, typer.Abort, typer.TyperException):  # Typer's own exits and usage errors
        raise
    except CliError as exc:
        die(exc, exc.code)
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        code, message = classify(exc, codec_code)
        if code != EXIT_INTERNAL:
            die(message, code)
        debug = os.environ.get("INFOTOK_DEBUG") == "1"
        if debug:
            traceback.print_exc()
        die(message + ("" if debug else " (INFOTOK_DEBUG=1 shows details)"), EXIT_INTERNAL)


# ----------------------------------------------------------------------------- preflight checks


def require_input(path: Path) -> None:
    if not path.exists():
        raise CliError(f"{path}: file does not exist", EXIT_INPUT)
    if not path.is_file():
        raise CliError(f"{path}: not a regular file", EXIT_INPUT)
    if not os.access(path, os.R_OK):
        raise CliError(f"{path}: file is not readable (permission denied)", EXIT_INPUT)


def require_output(path: Path, force: bool, inputs: list[Path], suffixes: tuple[str, ...] = (),
                   parent_must_exist: bool = True) -> None:
    """Fail fast, before any work, on outputs that cannot or must not be written."""
    if suffixes and path.suffix.lower() not in suffixes:
        raise CliError(f"{path}: unsupported output type {path.suffix or '(none)'!r}; use one of "
                       f"{', '.join(suffixes)}", EXIT_USAGE)
    for src in inputs:
        if path.exists() and src.exists() and path.resolve() == src.resolve():
            raise CliError(f"{path}: the output is the input file; inputs are never modified", EXIT_USAGE)
    if path.is_dir():
        raise CliError(f"{path}: is a directory", EXIT_USAGE)
    if path.exists() and not force:
        raise CliError(f"{path}: output already exists (use --force to overwrite)", EXIT_EXISTS)
    if parent_must_exist and not path.absolute().parent.is_dir():
        raise CliError(f"{path}: output directory does not exist", EXIT_USAGE)


def require_report_outputs(csv_path: str | None, plot: Path | None, force: bool, inputs: list[Path]) -> None:
    """The `--csv PATH|-` and `--plot PNG` outputs of inspect and eval: distinct, writable, a .png plot."""
    outputs = [Path(p) for p in (csv_path, plot) if p is not None and str(p) != "-"]
    if len(outputs) == 2 and outputs[0].absolute() == outputs[1].absolute():
        raise CliError("--csv and --plot name the same file", EXIT_USAGE)
    for out in outputs:
        require_output(out, force, inputs)
    if plot is not None and plot.suffix.lower() != ".png":
        raise CliError(f"{plot}: --plot writes a PNG; give a .png path", EXIT_USAGE)


def check_window_options(window: int, overlap: int) -> None:
    from ..coding.geometry import check_window  # torch: only once the command runs

    try:
        check_window(window, overlap)
    except CodecError as exc:
        raise typer.BadParameter(str(exc)) from None


def model_error(exc: Exception, header, model: str | None) -> CliError:
    """A weights problem while loading the model that decodes a file: exit 6, with a hint."""
    hint = "" if model else f" (the file was made with model {header.model_name!r}; pass --model)"
    return CliError(f"{exc}{hint}", EXIT_MODEL)


def tokenizer_for(header, model: str | None, device: str, precision: str = "auto"):
    """The model that decodes a file: --model, else the shipped model the header names, else the default.
    Its weights must be the ones the file was made with (checked here, before decoding: exit 6, not 4)."""
    from ..coding.tokenizer import Tokenizer

    try:
        return Tokenizer.for_file(header, model, device, precision)
    except WeightsError as exc:
        raise model_error(exc, header, model) from None


# ----------------------------------------------------------------------------- output helpers


def show_progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


@contextmanager
def frame_progress(label: str, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A Rich progress bar on stderr fed by the codec's (frames done, frames total) callback."""
    if not enabled:
        yield None
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@contextmanager
def step_progress(label: str, enabled: bool) -> Iterator[Callable[[int, int, str], None] | None]:
    """A Rich progress bar on stderr fed by a (steps done, steps total, what runs next) callback."""
    if not enabled:
        yield None
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("", total=None)
        yield lambda done, total, what: bar.update(task, completed=done, total=total, description=what)


def jsonable(value):
    """Replace non-finite floats (not valid JSON) with null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def print_json(obj: dict) -> None:
    sys.stdout.write(json.dumps(jsonable(obj), allow_nan=False) + "\n")
    sys.stdout.flush()


def print_notices(notices: list[str], quiet: bool) -> None:
    if not quiet:
        for note in notices:
            sys.stderr.write(f"notice: {one_line(note)}\n")


def warn_unreadable(insp) -> None:
    """One stderr line per window whose tokens did not decode (inspect still reports the rest)."""
    te = insp.token_entropy or {}
    for i, msg in zip(te.get("unreadable_windows", []), te.get("errors", [])):
        sys.stderr.write(f"warning: token entropy leaves out window {i}: {msg}\n")


def show_summary(title: str, rows: list[tuple[str, str]], quiet: bool) -> None:
    """A key-value summary on stderr (report.text lays it out)."""
    if not quiet:
        from ..report.text import key_value_table

        err_console.print(key_value_table(title, rows))


# ----------------------------------------------------------------------------- global options


def version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"infotok {__version__}\n")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """Compress videos into adaptive discrete tokens (InfoTok) and back."""
    warnings.showwarning = one_line_warning


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Library warnings (an emulated precision, ...) as one line on stderr, without source locations."""
    sys.stderr.write(f"warning: {one_line(message)}\n")


# ----------------------------------------------------------------------------- options shared by commands

ModelOpt = Annotated[str | None, typer.Option("--model", "-m", metavar="NAME|PATH",
                                              help="Shipped model name or path to a .safetensors file.")]
DecodeModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", metavar="NAME|PATH",
    help="Model to decode with; default: the one the file names if shipped, else the default.")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where the model runs.")]
PrecisionOpt = Annotated[PrecisionName, typer.Option(
    "--precision", help="Precision the model runs in: auto (bf16 where the CPU or GPU runs it natively, else "
                        "fp32), fp32, bf16, or fp16 (CUDA only). See `infotok doctor`.")]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing outputs.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
BatchJsonOpt = Annotated[bool, typer.Option(
    "--json", help="Print one JSON object on stdout (batch: one per line and input, with its status).")]
WindowOpt = Annotated[int, typer.Option(help="Frames per coding window (1 + 4k).")]
OverlapOpt = Annotated[int, typer.Option(help="Frames shared by consecutive windows.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, summary or notices.")]
OutDirOpt = Annotated[Path | None, typer.Option(
    "--output-dir", "-o", metavar="DIR",
    help="Batch mode: one output per input in DIR (created if missing), named after the input.")]
FromListOpt = Annotated[str | None, typer.Option(
    "--from-list", metavar="FILE|-", help="Batch mode: also read input paths from FILE, one per line (- = stdin).")]
SkipExistingOpt = Annotated[bool, typer.Option(
    "--skip-existing", help="Batch mode: skip inputs whose output exists (resumes an interrupted batch).")]
ShardOpt = Annotated[str | None, typer.Option(
    "--shard", metavar="K/N",
    help="Batch mode: only shard K of N (K = 0..N-1), the inputs at positions K, K+N, ... of the list.")]
CsvOpt = Annotated[str | None, typer.Option("--csv", metavar="PATH|-", help="Write the rows as CSV (- = stdout).")]


_skip_teardown = False


def skip_teardown() -> None:
    """Let `main` end the process without the interpreter's teardown (a command that loaded torch:
    unloading it takes a good part of a short run). Only for commands whose outputs are committed and
    temporaries removed by the time they return, and that start no helper processes."""
    global _skip_teardown
    _skip_teardown = True


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (`infotok`), also used by `python -m infotok_cli`. Run as the program
    (`argv` None), a command that asked for it (`skip_teardown`) ends the process at once when done; with
    `argv` given, e.g. from a script that goes on, it raises SystemExit as usual."""
    code = 0
    try:
        app(args=argv, prog_name="infotok")
    except SystemExit as exc:
        if not _skip_teardown or argv is not None:
            raise
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    if not _skip_teardown or argv is not None:
        return
    import logging

    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # e.g. the reader of a pipe went away
        code = code or 1
    logging.shutdown()
    os._exit(code)
