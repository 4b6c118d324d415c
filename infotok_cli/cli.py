"""The `infotok` command line: compress, decompress, inspect, export, visualize, eval and train.

The CLI is a thin layer: every capability lives in a library function (api, export, batch, stats, plots,
train); this module parses options, checks inputs and outputs up front, shows progress and summaries,
and turns errors into one-line messages with documented exit codes.

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
  4  invalid or corrupt .itok file
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
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from . import __version__

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
    "4 invalid or corrupt .itok file; 5 output exists (use --force); 6 model/weights problem; "
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


class Strategy(str, enum.Enum):
    global_ = "global"
    window = "window"
    video = "video"


class Placement(str, enum.Enum):
    drop_gain = "drop-gain"
    probe_gain = "probe-gain"
    error = "error"


class Device(str, enum.Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class PrecisionName(str, enum.Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


# ----------------------------------------------------------------------------- errors


class CliError(Exception):
    """A user-facing failure with its exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def die(message: object, code: int) -> NoReturn:
    # Plain write, not Rich: Rich would wrap a long message over several lines.
    sys.stderr.write(f"error: {one_line(message)}\n")
    sys.stderr.flush()
    raise typer.Exit(code)


def os_error_message(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def library_error_code(exc: Exception, codec_code: int) -> int | None:
    """Exit code of the package's own exception types, or None.

    The classes are looked up in sys.modules rather than imported: an exception can only come from a
    module that was loaded, and reporting a quick failure (say, a missing input) then never pays for
    importing torch or PyAV.
    """
    table = (("video_io", "VideoError", EXIT_INPUT), ("container", "ContainerError", EXIT_CONTAINER),
             ("weights", "WeightsError", EXIT_MODEL), ("codec", "CodecError", codec_code))
    for module, name, code in table:
        cls = getattr(sys.modules.get(f"infotok_cli.{module}"), name, None)
        if cls is not None and isinstance(exc, cls):
            return code
    return None


def classify(exc: Exception, codec_code: int) -> tuple[int, str]:
    """(exit code, one-line message) of an exception (see `errors` and the module docstring)."""
    if isinstance(exc, CliError):
        return exc.code, one_line(exc)
    if isinstance(exc, FileExistsError):  # incl. the writers' own: another process wrote the output first
        return EXIT_EXISTS, one_line(os_error_message(exc))
    code = library_error_code(exc, codec_code)
    if code is not None:
        return code, one_line(exc)
    if isinstance(exc, FileExistsError):
        return EXIT_EXISTS, one_line(os_error_message(exc))
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


def require_output(path: Path, force: bool, inputs: list[Path], suffixes: tuple[str, ...] = ()) -> None:
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
    if not path.absolute().parent.is_dir():
        raise CliError(f"{path}: output directory does not exist", EXIT_USAGE)


def check_window_options(window: int, overlap: int) -> None:
    from .codec import CodecError, check_window

    try:
        check_window(window, overlap)
    except CodecError as exc:
        raise typer.BadParameter(str(exc)) from None


def pick_device(name: str):
    from .codec import CodecError, resolve_device

    try:
        return resolve_device(name)
    except CodecError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def shipped_models() -> list[str]:
    from .weights import WEIGHTS_DIR

    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))


# ----------------------------------------------------------------------------- output helpers


def tokenizer_for(header, model: str | None, device: str, precision: str = "auto"):
    """The model that decodes a file: --model, else the shipped model the header names, else the default.
    Its weights must be the ones the file was made with (checked here, before decoding: exit 6, not 4)."""
    from .api import Tokenizer
    from .codec import CodecError
    from .weights import WeightsError

    dev = pick_device(device)
    try:
        tok = Tokenizer.for_file(header, model, dev, precision)
    except (WeightsError, CodecError) as exc:
        hint = "" if model else f" (the file was made with model {header.model_name!r}; pass --model)"
        raise CliError(f"{exc}{hint}", EXIT_MODEL) from None
    return tok


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


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def key_value_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for k, v in rows:
        table.add_row(k, v)
    return table


def print_notices(notices: list[str], quiet: bool) -> None:
    if not quiet:
        for note in notices:
            sys.stderr.write(f"notice: {one_line(note)}\n")


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


# ----------------------------------------------------------------------------- batch mode

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


def batch_inputs(positional: list[Path] | None, from_list: str | None, shard: str | None) -> list[Path]:
    """Every input of a batch (arguments, then the list), without repeats, restricted to the shard."""
    from .batch import parse_shard, read_list, select_shard, unique

    inputs = list(positional or [])
    if from_list is not None:
        if from_list != "-":
            require_input(Path(from_list))
        inputs += [Path(p) for p in read_list(from_list)]
    if not inputs:
        raise CliError("no inputs given (pass files, or --from-list FILE)", EXIT_USAGE)
    return select_shard(unique(inputs), parse_shard(shard) if shard is not None else None)


def batch_outputs(inputs: list[Path], out_dir: Path | None, suffix: str, force: bool, skip_existing: bool):
    """The batch's items, with every check that can be made before any work (exit 2 or 5)."""
    from .batch import plan

    if out_dir is None:
        raise CliError("batch mode (--from-list, --shard, --skip-existing or several inputs) needs -o DIR",
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


def is_batch(inputs: list[Path] | None, out_dir, from_list, shard, skip_existing: bool) -> bool:
    return out_dir is not None or from_list is not None or shard is not None or skip_existing


# ----------------------------------------------------------------------------- compress

ModelOpt = Annotated[str | None, typer.Option("--model", "-m", metavar="NAME|PATH",
                                              help="Shipped model name or path to a .safetensors file.")]
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


@app.command(epilog=EXIT_CODES_HELP)
def compress(
    inputs: Annotated[list[Path] | None, typer.Argument(
        metavar="INPUT OUTPUT | INPUTS... -o DIR",
        help="A video (mp4, mkv, mov, ...) and the .itok file to write; or, with -o DIR, any number of videos.",
        show_default=False)] = None,
    beta: Annotated[float, typer.Option(min=1 / 16, max=1.0, help="Target keep rate (1/16..1).")] = 0.5,
    strategy: Annotated[Strategy, typer.Option(help="How the token budget is shared between windows.")]
    = Strategy.global_,
    target_psnr: Annotated[float | None, typer.Option(
        "--target-psnr", min=1, max=99, metavar="DB",
        help="Quality instead of budget: each window keeps the fewest tokens whose reconstruction reaches "
             "this PSNR (replaces --beta and --strategy).", show_default=False)] = None,
    max_bpp16: Annotated[float | None, typer.Option(
        "--max-bpp16", min=0.125, max=1.0625, metavar="X",
        help="With --target-psnr: cap each window at this BPP16 (keep rate X - 1/16).", show_default=False)]
    = None,
    placement: Annotated[Placement, typer.Option(
        help="Which positions keep their tokens: probe-gain (what each token saves, from two probe decodes "
             "per window), drop-gain (the same against the full-rate decode: one more pass) or error "
             "(full-rate error alone: fewest passes, lowest quality).")] = Placement.probe_gain,
    no_audio: Annotated[bool, typer.Option("--no-audio", help="Do not keep the input's audio.")] = False,
    window: WindowOpt = 33,
    overlap: OverlapOpt = 3,
    model: ModelOpt = None,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = PrecisionName.auto,
    output_dir: OutDirOpt = None,
    from_list: FromListOpt = None,
    skip_existing: SkipExistingOpt = False,
    shard: ShardOpt = None,
    force: ForceOpt = False,
    json_out: BatchJsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Compress a video into an .itok token file (or many videos into a directory, loading the model once)."""
    check_window_options(window, overlap)
    if max_bpp16 is not None and target_psnr is None:
        die("--max-bpp16 caps the rate of --target-psnr; give --target-psnr too", EXIT_USAGE)
    options = {"beta": beta, "strategy": strategy.value, "window": window, "overlap": overlap,
               "target_psnr": target_psnr, "max_bpp16": max_bpp16, "audio": not no_audio}
    if is_batch(inputs, output_dir, from_list, shard, skip_existing):
        compress_batch(inputs, output_dir, from_list, shard, skip_existing, options, model, device.value, force,
                       json_out, quiet, placement.value, precision.value)
        return
    with errors(codec_code=EXIT_INPUT):
        input, output = single_pair(inputs, "videos")
        require_input(input)
        require_output(output, force, [input])
        from .api import Tokenizer

        tok = Tokenizer(model, pick_device(device.value), placement.value, precision.value)
        with frame_progress("compress", show_progress(quiet)) as progress:
            result = tok.compress_file(input, output, force=force, progress=progress, **options)
    print_notices(result.notices, quiet)
    if json_out:
        print_json(result.to_dict())
    elif not quiet:
        rate_control = (f"target {target_psnr:g} dB" + (f", max BPP16 {max_bpp16:g}" if max_bpp16 else "")
                        if target_psnr is not None else f"{strategy.value}, beta {beta:g}")
        rows = [
            ("frames", f"{result.frames} ({result.width}x{result.height})"),
            ("windows", f"{result.windows} ({rate_control}, window {window}, overlap {overlap})"),
            ("tokens kept", f"{result.tokens_kept:,} / {result.tokens_max:,}"),
            ("keep rate", f"{result.keep_rate:.4f}"),
            ("BPP16", f"{result.bpp16:.4f}"),
            ("bits per pixel", f"{result.bits_per_pixel:.5f}"),
            ("file size", human_size(result.file_bytes)),
            ("model", f"{tok.loaded.name} on {tok.device}, {tok.precision.name}"),
            ("time", f"{result.seconds:.2f} s ({result.frames_per_second:.1f} frames/s)"),
        ]
        if result.window_psnr:
            rows.insert(3, ("PSNR", psnr_line(result.window_psnr, result.windows_short)))
        if result.audio:
            rows.insert(-2, ("audio", audio_line(result.audio)))
        err_console.print(key_value_table(f"{input.name} -> {output.name}", rows))


def psnr_line(psnr: list[float], short: int) -> str:
    """Achieved PSNR of a --target-psnr file, over its windows."""
    return (f"mean {sum(psnr) / len(psnr):.2f} dB, min {min(psnr):.2f} dB; "
            f"{short} of {len(psnr)} windows short of the target")


def audio_line(a: dict) -> str:
    """One line about a kept audio stream (audio.AudioTrack.summary())."""
    return (f"{a['codec']}, {a['channels']} ch ({a['layout'] or '?'}), {a['sample_rate']} Hz, "
            f"{a['duration_seconds']:.2f} s, {human_size(a['bytes'])}")


def compress_batch(inputs, out_dir, from_list, shard, skip_existing: bool, options: dict, model, device: str,
                   force: bool, json_out: bool, quiet: bool, placement: str, precision: str) -> None:
    """`compress INPUTS... -o DIR`: every input to DIR/<stem>.itok with one model."""
    with errors(codec_code=EXIT_INPUT):
        from . import batch

        items = batch_outputs(batch_inputs(inputs, from_list, shard), out_dir, ".itok", force, skip_existing)
        from .api import Tokenizer  # torch only now: mistakes above are reported at once

        dev = pick_device(device)
        pending = [i for i in items if not (skip_existing and i.output.exists())]
        # a model problem stops the batch before any work
        tok = Tokenizer(model, dev, placement, precision) if pending else None

        def work(item) -> dict:
            check_batch_item(item)
            with frame_progress(item.input.name, show_progress(quiet)) as progress:
                result = tok.compress_file(item.input, item.output, force=force, progress=progress, **options)
            print_notices([f"{item.input}: {n}" for n in result.notices], quiet or json_out)
            return result.to_dict()

        def describe(r: dict) -> str:
            return (f"{r['frames']} frames, keep {r['keep_rate']:.3f}, {human_size(r['file_bytes'])}, "
                    f"{r['seconds']:.2f} s")

        code = report_batch(batch.run(items, work, skip_existing=skip_existing), len(items), EXIT_INPUT, json_out,
                            quiet, describe)
    if code:
        raise typer.Exit(code)


# ----------------------------------------------------------------------------- decompress

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")


@app.command(epilog=EXIT_CODES_HELP)
def decompress(
    inputs: Annotated[list[Path] | None, typer.Argument(
        metavar="INPUT OUTPUT | INPUTS... -o DIR",
        help="An .itok file and the video to write (.mp4, .m4v, .mov or .mkv); or, with -o DIR, any number "
             "of .itok files (written as DIR/<name>.mp4).", show_default=False)] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", metavar="NAME|PATH",
        help="Model to decode with; default: the one the file names if shipped, else the default.")] = None,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = PrecisionName.auto,
    lossless: Annotated[bool, typer.Option(help="Encode the output losslessly (RGB H.264, large).")] = False,
    no_audio: Annotated[bool, typer.Option("--no-audio", help="Leave out the audio the file keeps.")] = False,
    output_dir: OutDirOpt = None,
    from_list: FromListOpt = None,
    skip_existing: SkipExistingOpt = False,
    shard: ShardOpt = None,
    force: ForceOpt = False,
    json_out: BatchJsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Decode an .itok file back to a video with the source's size, frame count and timing (or many files
    into a directory)."""
    if is_batch(inputs, output_dir, from_list, shard, skip_existing):
        decompress_batch(inputs, output_dir, from_list, shard, skip_existing, lossless, model, device.value, force,
                         json_out, quiet, precision.value, audio=not no_audio)
        return
    with errors(codec_code=EXIT_CONTAINER):
        input, output = single_pair(inputs, ".itok files")
        require_input(input)
        require_output(output, force, [input], VIDEO_SUFFIXES)
        from .container import read_header_and_index

        header, _, _ = read_header_and_index(input)  # a bad file fails here, before torch is loaded
        tok = tokenizer_for(header, model, device.value, precision.value)
        with frame_progress("decompress", show_progress(quiet)) as progress:
            result = tok.decompress_file(input, output, lossless=lossless, force=force, progress=progress,
                                         audio=not no_audio)
    print_notices(result.notices, quiet)
    if json_out:
        print_json(result.to_dict())
    elif not quiet:
        rows = [
            ("frames", f"{result.frames} ({result.width}x{result.height})"),
            ("model", f"{tok.loaded.name} on {tok.device}, {tok.precision.name}"),
            ("output", f"{human_size(output.stat().st_size)}{' (lossless)' if lossless else ''}"),
            ("time", f"{result.seconds:.2f} s ({result.frames_per_second:.1f} frames/s)"),
        ]
        if result.audio:
            rows.insert(2, ("audio", audio_line(result.audio)))
        err_console.print(key_value_table(f"{input.name} -> {output.name}", rows))


def decompress_batch(inputs, out_dir, from_list, shard, skip_existing: bool, lossless: bool, model, device: str,
                     force: bool, json_out: bool, quiet: bool, precision: str, audio: bool) -> None:
    """`decompress INPUTS... -o DIR`: every file to DIR/<stem>.mp4, each model loaded once."""
    with errors(codec_code=EXIT_CONTAINER):
        from . import batch

        items = batch_outputs(batch_inputs(inputs, from_list, shard), out_dir, ".mp4", force, skip_existing)
        from .api import Tokenizer, model_for_file  # torch only now: mistakes above are reported at once
        from .container import read_header_and_index
        from .weights import WeightsError

        dev = pick_device(device)
        loaded: dict[str, Tokenizer] = {}
        if model is not None and any(not (skip_existing and i.output.exists()) for i in items):
            loaded[model] = Tokenizer(model, dev, precision=precision)  # a bad --model stops the batch before any work

        def work(item) -> dict:
            check_batch_item(item)
            header, _, _ = read_header_and_index(item.input)
            name = model_for_file(header, model)
            if name not in loaded:
                loaded[name] = Tokenizer(name, dev, precision=precision)
            tok = loaded[name]
            try:
                tok.check_weights(header.weights_sha256, header.model_name)
            except WeightsError as exc:
                hint = "" if model else f" (the file was made with model {header.model_name!r}; pass --model)"
                raise CliError(f"{exc}{hint}", EXIT_MODEL) from None
            with frame_progress(item.input.name, show_progress(quiet)) as progress:
                result = tok.decompress_file(item.input, item.output, lossless=lossless, force=force,
                                             progress=progress, audio=audio)
            return result.to_dict()

        def describe(r: dict) -> str:
            return f"{r['frames']} frames, {r['seconds']:.2f} s"

        code = report_batch(batch.run(items, work, skip_existing=skip_existing), len(items), EXIT_CONTAINER,
                            json_out, quiet, describe)
    if code:
        raise typer.Exit(code)


# ----------------------------------------------------------------------------- export


class ExportFormat(str, enum.Enum):
    npz = "npz"
    safetensors = "safetensors"


@app.command(epilog=EXIT_CODES_HELP)
def export(
    input: Annotated[Path, typer.Argument(help="The .itok file to export.", show_default=False)],
    output: Annotated[Path, typer.Argument(help="The file to write (.npz or .safetensors).", show_default=False)],
    fmt: Annotated[ExportFormat | None, typer.Option(
        "--format", help="npz or safetensors [default: from OUTPUT's suffix].", show_default=False)] = None,
    force: ForceOpt = False,
    json_out: Annotated[bool, typer.Option("--json", help="Describe what was written as one JSON object.")]
    = False,
    quiet: QuietOpt = False,
) -> None:
    """Write an .itok file's tokens and keep masks, with the metadata needed to use them, as plain arrays that
    numpy or safetensors load without infotok (see docs/API.md)."""
    with errors(codec_code=EXIT_CONTAINER):
        from .export import export_tokens, format_for

        require_input(input)
        try:
            name = format_for(output, fmt.value if fmt is not None else None)
        except ValueError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
        require_output(output, force, [input])
        result = export_tokens(input, output, name, force=force)
    if json_out:
        print_json(result)
    elif not quiet:
        err_console.print(key_value_table(f"{input.name} -> {output.name}", [
            ("format", result["format"]),
            ("windows", f"{result['windows']} (latent grid {result['latent_hw'][0]}x{result['latent_hw'][1]})"),
            ("tokens kept", f"{result['tokens_kept']:,} / {result['tokens_possible']:,}"),
            ("arrays", ", ".join(result["arrays"])),
            ("file size", human_size(result["file_bytes"])),
        ]))


# ----------------------------------------------------------------------------- inspect


def inspect_report(console: Console, insp, show_frames: bool) -> None:
    """Summary, per-window table and per-frame usage sparkline of an inspected file."""
    from .plots import sparkline

    s = insp.summary
    extra_rows = []
    if s.get("target_psnr") is not None:
        cap = f", max BPP16 {s['max_bpp16']:g}" if s.get("max_bpp16") else ""
        extra_rows.append(("target PSNR", f"{s['target_psnr']:g} dB{cap}; achieved "
                                          f"{psnr_line([w['psnr'] for w in insp.windows], s['windows_short'])}"))
    if s.get("audio"):
        extra_rows.append(("audio", audio_line(s["audio"])))
    te = insp.token_entropy
    if te is not None:
        unread = f"; windows {', '.join(map(str, te['unreadable_windows']))} unreadable" \
            if te["unreadable_windows"] else ""
        extra_rows.append(("token entropy", f"{te['bits_per_token']:.2f} bits per token (sum of digit entropies; "
                                            f"joint {te['joint_bits']:.2f}), {te['distinct_codes']:,} distinct "
                                            f"codes in {te['tokens']:,} tokens{unread}"))
    console.print(key_value_table(s["file"], [
        ("source", s["source"]),
        ("geometry", f"{s['width']}x{s['height']}, {s['frames']} frames"),
        ("frame rate", f"{s['fps']} ({s['fps_value']:.3f} fps), {s['duration_seconds']:.2f} s"),
        ("model", f"{s['model']} (weights {s['weights_sha256'][:12]})"),
        ("coding", (f"target PSNR {s['target_psnr']:g} dB" if s.get("target_psnr") is not None else
                    f"strategy {s['strategy']}, beta {s['beta']:g}")
                   + f", window {s['window']}, overlap {s['overlap']}, {s['windows']} windows"),
        ("tokens kept", f"{s['tokens_kept']:,} / {s['tokens_max']:,}"),
        ("keep rate", f"mean {s['keep_rate']:.4f}, min {s['window_keep_rate_min']:.4f}, "
                      f"max {s['window_keep_rate_max']:.4f} (over windows)"),
        ("BPP16", f"{s['bpp16']:.4f}"),
        ("bits per pixel", f"{s['bits_per_pixel']:.5f} ({human_size(s['file_bytes'])})"),
        ("compression", f"{s['compression_vs_raw_rgb']:.0f}x vs raw RGB, "
                        f"{s['compression_vs_fixed_rate_tokens']:.2f}x vs fixed-rate tokens"),
        ("coded", f"{s['bits_per_kept_token']:.2f} bits per kept token ({human_size(s['token_bytes'])}), "
                  f"{s['mask_bits_per_position']:.3f} mask bits per position ({human_size(s['mask_bytes'])}); "
                  f"format {s.get('format_version', '?')}"),
        *extra_rows,
    ]))
    table = Table(title="windows", title_justify="left")
    has_psnr = any("psnr" in w for w in insp.windows)
    cols = ("window", "frames", "latent txhxw", "kept", "possible", "keep rate", "bits/token", "mask bits/pos",
            *(("PSNR",) if has_psnr else ()), "per latent frame")
    for col in cols:
        table.add_column(col, justify="right" if col not in ("frames", "per latent frame") else "left")
    for w in insp.windows:
        t, h, ww = w["latent_shape"]
        last = w["frame_start"] + w["frame_count"] - 1
        psnr = (f"{w['psnr']:.2f}",) if has_psnr else ()
        table.add_row(str(w["window"]), f"{w['frame_start']}-{last}", f"{t}x{h}x{ww}",
                      f"{w['tokens_kept']:,}", f"{w['tokens_possible']:,}", f"{w['keep_rate']:.3f}",
                      f"{w['bits_per_kept_token']:.2f}", f"{w['mask_bits_per_position']:.3f}", *psnr,
                      sparkline([k / (h * ww) for k in w["kept_per_latent_frame"]], 40))
    console.print(table)
    if show_frames:
        ft = Table(title="frames", title_justify="left")
        for col in ("frame", "timestamp", "window", "latent frame", "kept", "possible", "keep fraction"):
            ft.add_column(col, justify="right")
        for r in insp.frames:
            ts = "" if r["timestamp"] is None else f"{r['timestamp']:.3f}"
            ft.add_row(str(r["frame"]), ts, str(r["window"]), str(r["latent_frame"]), str(r["tokens_kept"]),
                       str(r["tokens_possible"]), f"{r['keep_fraction']:.3f}")
        console.print(ft)
    label = "usage per frame "
    line = sparkline([r["keep_fraction"] for r in insp.frames], max(10, console.width - len(label)))
    console.print(f"[bold]{label}[/bold]{line}")


@app.command(epilog=EXIT_CODES_HELP)
def inspect(
    inputs: Annotated[list[Path] | None, typer.Argument(
        metavar="INPUT...", help="The .itok file(s) to inspect (several: a report, or with --json one JSON line, "
                                 "per file).", show_default=False)] = None,
    json_out: Annotated[bool, typer.Option("--json",
                                           help="Print {summary, windows, frames, token_entropy} as JSON.")]
    = False,
    frames: Annotated[bool, typer.Option("--frames", help="Also print the per-frame table.")] = False,
    csv_path: Annotated[str | None, typer.Option("--csv", metavar="PATH|-",
                                                 help="Write one CSV row per frame (- = stdout).")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", metavar="PNG",
                                              help="Write a per-frame bar chart of kept tokens.")] = None,
    force: ForceOpt = False,
    from_list: FromListOpt = None,
    shard: ShardOpt = None,
) -> None:
    """Token-usage statistics of an .itok file: usage and coded sizes from its index, and the entropy of its
    tokens (every window is decoded for that; a window that does not decode is reported and left out)."""
    if json_out and csv_path == "-":
        raise typer.BadParameter("--json and --csv - both want stdout; write the CSV to a file")
    if from_list is not None or shard is not None or len(inputs or []) != 1:
        inspect_batch(inputs, from_list, shard, json_out, frames, csv_path, plot)
        return
    input = inputs[0]
    with errors(codec_code=EXIT_CONTAINER):
        from .plots import frames_csv, plot_frame_usage, write_frames_csv
        from .stats import inspect_file

        require_input(input)
        outputs = [Path(p) for p in (csv_path, plot) if p is not None and str(p) != "-"]
        if len(outputs) == 2 and outputs[0].absolute() == outputs[1].absolute():
            raise CliError("--csv and --plot name the same file", EXIT_USAGE)
        for out in outputs:
            require_output(out, force, [input])
        if plot is not None and plot.suffix.lower() != ".png":
            raise CliError(f"{plot}: --plot writes a PNG; give a .png path", EXIT_USAGE)
        insp = inspect_file(input)
        warn_unreadable(insp)
        if csv_path == "-":
            sys.stdout.write(frames_csv(insp.frames))
        elif csv_path is not None:
            write_frames_csv(insp.frames, csv_path, overwrite=force)
            sys.stderr.write(f"wrote {csv_path} ({len(insp.frames)} frames)\n")
        if plot is not None:
            plot_frame_usage(insp.frames, insp.windows, plot, overwrite=force,
                             title=f"{insp.summary['source']}: tokens kept per frame")
            sys.stderr.write(f"wrote {plot}\n")
    if json_out:
        print_json(insp.to_dict())
    elif csv_path != "-":  # stdout is the report unless the CSV owns it
        inspect_report(out_console, insp, frames)


def warn_unreadable(insp) -> None:
    """One stderr line per window whose tokens did not decode (inspect still reports the rest)."""
    te = insp.token_entropy or {}
    for i, msg in zip(te.get("unreadable_windows", []), te.get("errors", [])):
        sys.stderr.write(f"warning: token entropy leaves out window {i}: {msg}\n")


def inspect_batch(inputs, from_list, shard, json_out: bool, frames: bool, csv_path, plot) -> None:
    """`inspect A.itok B.itok ...`: a report (or a JSON line) per file, a summary on stderr."""
    with errors(codec_code=EXIT_CONTAINER):
        from . import batch
        from .stats import inspect_file

        if csv_path is not None or plot is not None:
            raise CliError("--csv and --plot take one file at a time", EXIT_USAGE)
        paths = batch_inputs(inputs, from_list, shard)

        def work(item) -> dict:
            require_input(item.input)
            insp = inspect_file(item.input)
            warn_unreadable(insp)
            if not json_out:
                inspect_report(out_console, insp, frames)
            return insp.to_dict()

        code = report_batch(batch.run(batch.plan(paths, None, ""), work), len(paths), EXIT_CONTAINER, json_out,
                            False, lambda r: f"{r['summary']['tokens_kept']:,} tokens kept")
    if code:
        raise typer.Exit(code)


# ----------------------------------------------------------------------------- visualize


@app.command(epilog=EXIT_CODES_HELP)
def visualize(
    input: Annotated[Path, typer.Argument(help="The .itok file to show.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Video to write (.mp4, .m4v, .mov or .mkv).",
                                         show_default=False)],
    source: Annotated[Path | None, typer.Option(
        "--source", "-s", metavar="VIDEO",
        help="The video the file was made from, shown as a first panel (same size and frame count).")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", metavar="NAME|PATH",
        help="Model to decode with; default: the one the file names if shipped, else the default.")] = None,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = PrecisionName.auto,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Render a video of where the tokens go: per frame, the original (with --source), the reconstruction
    with dropped positions dimmed, the keep mask and a keep % bar."""
    with errors(codec_code=EXIT_CONTAINER):
        from .codec import CodecError
        from .container import read_header_and_index
        from .visualize import check_source
        from .visualize import visualize as render

        require_input(input)
        if source is not None:
            require_input(source)
        require_output(output, force, [input] + ([source] if source else []), VIDEO_SUFFIXES)
        header, _, _ = read_header_and_index(input)
        if source is not None:
            try:  # up front, and a usage error: the wrong --source was given
                check_source(source, header)
            except CodecError as exc:
                raise CliError(str(exc), EXIT_USAGE) from None
        tok = tokenizer_for(header, model, device.value, precision.value)
        with frame_progress("visualize", show_progress(quiet)) as progress:
            result = render(input, output, tok, source=source, overwrite=force, progress=progress)
    if json_out:
        print_json(result)
    elif not quiet:
        err_console.print(key_value_table(f"{input.name} -> {output.name}", [
            ("frames", f"{result['frames']} ({result['width']}x{result['height']})"),
            ("panels", " | ".join(result["panels"])),
            ("model", f"{tok.loaded.name} on {tok.device}"),
            ("output", human_size(output.stat().st_size)),
            ("time", f"{result['seconds']:.2f} s"),
        ]))


# ----------------------------------------------------------------------------- eval


@app.command(name="eval", epilog=EXIT_CODES_HELP)
def eval_(
    inputs: Annotated[list[Path], typer.Argument(help="Videos to evaluate.", show_default=False)],
    rates: Annotated[str, typer.Option(help="Keep rates (token budgets), comma-separated, each 1/16..1.")]
    = "0.25,0.5,0.75,1",
    methods: Annotated[str | None, typer.Option(
        metavar="LIST", help="Comma-separated subset of: elbo, elbo-error, elbo-global, random, raster, search, fixed, "
                             "x264, x265. Default: all.")] = None,
    no_codecs: Annotated[bool, typer.Option("--no-codecs", help="Skip the x264/x265 comparison.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print {settings, rows, averages, matched_quality} "
                                                          "as one JSON object.")] = False,
    csv_path: Annotated[str | None, typer.Option("--csv", metavar="PATH|-",
                                                 help="Write per-video rows and averages as CSV (- = stdout).")]
    = None,
    plot: Annotated[Path | None, typer.Option("--plot", metavar="PNG",
                                              help="Write PSNR, SSIM and ST-LPIPS against bits per pixel.")] = None,
    window: WindowOpt = 33,
    overlap: OverlapOpt = 3,
    seed: Annotated[int, typer.Option(help="Seed of the random-placement baseline.")] = 0,
    lpips: Annotated[str, typer.Option(
        metavar="NET", help="Perceptual metric (shift-tolerant LPIPS, lower is better): alex (built in), vgg "
                            "(needs `pip install --no-deps stlpips-pytorch`) or none (skip; it costs about as "
                            "much as decoding).")] = "alex",
    model: ModelOpt = None,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = PrecisionName.auto,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Rate-distortion of the ELBO router against random, raster, binary-search, fixed-rate and x264/x265:
    PSNR, SSIM and ST-LPIPS side by side."""
    if json_out and csv_path == "-":
        raise typer.BadParameter("--json and --csv - both want stdout; write the CSV to a file")
    check_window_options(window, overlap)
    with errors(codec_code=EXIT_INPUT):
        from .codec import Tokenizer
        from .evaluate import evaluate, parse_rates, plot_rd, resolve_methods
        from .perceptual import NETS, PerceptualError, load_stlpips
        from .weights import load_model

        rate_list = parse_rates(rates)
        method_list = resolve_methods(None if methods is None else
                                      [m.strip() for m in methods.split(",") if m.strip()], not no_codecs)
        for src in inputs:
            require_input(src)
        outputs = [Path(p) for p in (csv_path, plot) if p is not None and str(p) != "-"]
        if len(outputs) == 2 and outputs[0].absolute() == outputs[1].absolute():
            raise CliError("--csv and --plot name the same file", EXIT_USAGE)
        for out in outputs:
            require_output(out, force, list(inputs))
        if plot is not None and plot.suffix.lower() != ".png":
            raise CliError(f"{plot}: --plot writes a PNG; give a .png path", EXIT_USAGE)
        if lpips != "none" and lpips not in NETS:
            raise CliError(f"--lpips: unknown network {lpips!r}; choose from {', '.join(NETS)} or none", EXIT_USAGE)
        dev = pick_device(device.value)
        tok = Tokenizer(load_model(model, dev), dev, precision=precision.value)
        try:
            perceptual = None if lpips == "none" else load_stlpips(lpips, dev)
        except PerceptualError as exc:  # weights missing or damaged: a model problem
            raise CliError(str(exc), EXIT_MODEL) from None
        if show_progress(quiet):
            columns = (TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                       TimeElapsedColumn(), TimeRemainingColumn())
            with Progress(*columns, console=err_console, transient=True) as bar:
                task = bar.add_task("", total=None)
                report = evaluate(inputs, tok, rate_list, method_list, window=window, overlap=overlap, seed=seed,
                                  progress=lambda done, total, label: bar.update(
                                      task, completed=done, total=total, description=label), lpips=perceptual)
        else:
            report = evaluate(inputs, tok, rate_list, method_list, window=window, overlap=overlap, seed=seed,
                              lpips=perceptual)
        if csv_path == "-":
            sys.stdout.write(report.to_csv())
        elif csv_path is not None:
            report.to_csv(csv_path, overwrite=force)
            if not quiet:
                sys.stderr.write(f"wrote {csv_path} ({len(report.rows)} rows)\n")
        if plot is not None:
            plot_rd(report, plot, overwrite=force)
            if not quiet:
                sys.stderr.write(f"wrote {plot}\n")
    if json_out:
        print_json(report.to_dict())
    elif csv_path != "-":  # stdout is the report unless the CSV owns it
        eval_report(out_console, report)


def eval_report(console: Console, report) -> None:
    """Averages per method and rate, then the router against the search at matched quality."""
    from .evaluate import fmt

    # Piped output would be cut to 80 columns (Rich's default off a terminal) and truncate cells; Rich
    # caps print(width=...) at the console's own width, so a wider console is made for it.
    if not console.is_terminal:
        console = Console(file=console.file, width=160, highlight=False, no_color=console.no_color)
    width = None

    table = Table(title=f"mean over {len(report.settings['videos'])} video(s), model {report.settings['model']}",
                  title_justify="left")
    for col in ("method", "rate", "keep", "BPP16", "bits/pixel", "PSNR", "SSIM", "ST-LPIPS", "passes/window",
                "encode s", "decode s"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for a in report.averages():
        table.add_row(a["method"], f"{a['rate']:g}", fmt(a["keep_rate"]), fmt(a["bpp16"]),
                      fmt(a["bits_per_pixel"], 4), fmt(a["psnr"], 2), fmt(a["ssim"], 4), fmt(a.get("lpips"), 4),
                      fmt(a["passes_per_window"], 1), fmt(a["encode_seconds"], 2), fmt(a["decode_seconds"], 2))
    console.print(table, width=width)
    matched = report.matched()
    if matched:
        mt = Table(title="ELBO router vs binary search at matched quality", title_justify="left")
        for col in ("rate", "keep elbo", "keep search", "PSNR elbo", "PSNR search", "passes elbo",
                    "passes search", "encode s elbo", "encode s search"):
            mt.add_column(col, justify="right")
        for m in matched:
            mt.add_row(f"{m['rate']:g}", fmt(m["elbo_keep_rate"]), fmt(m["search_keep_rate"]),
                       fmt(m["elbo_psnr"], 2), fmt(m["search_psnr"], 2), fmt(m["elbo_passes_per_window"], 1),
                       fmt(m["search_passes_per_window"], 1), fmt(m["elbo_encode_seconds"], 2),
                       fmt(m["search_encode_seconds"], 2))
        console.print(mt, width=width)


# ----------------------------------------------------------------------------- train


def load_train_overrides(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}: not valid JSON ({exc})", EXIT_USAGE) from None
    if not isinstance(data, dict):
        raise CliError(f"{path}: must hold a JSON object of TrainConfig fields", EXIT_USAGE)
    return data


@app.command(epilog=EXIT_CODES_HELP)
def train(
    data: Annotated[list[str], typer.Argument(help="Training videos or folders (searched recursively).",
                                              show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Weights file to write.")] = Path(
        "model.safetensors"),
    steps: Annotated[int | None, typer.Option(min=1, help="Optimiser steps [default: 10000].")] = None,
    batch: Annotated[int | None, typer.Option(min=1, help="Clips per step and process [default: 8].")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run directory's checkpoint.")] = False,
    run_dir: Annotated[Path, typer.Option(help="Checkpoints, log and data split.")] = Path("runs/train"),
    seed: Annotated[int | None, typer.Option(help="Random seed [default: 0].")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate [default: 1e-3].")] = None,
    stage: Annotated[str | None, typer.Option(
        help="base (base tokenizer at full rate, adaptive path off), adaptive (base frozen, Flex "
             "objective) or full (everything, Flex objective) [default: full].")] = None,
    init_from: Annotated[Path | None, typer.Option(
        metavar="WEIGHTS", help="Start from these weights (a previous stage) with a fresh optimiser.")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", metavar="JSON",
        help="JSON object of further TrainConfig fields (e.g. model, crops, clip_frames); "
             "options given on the command line win.")] = None,
    precision: PrecisionOpt = PrecisionName.auto,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a model (one process, or many with `torchrun --nproc_per_node N -m infotok_cli train ...`)."""
    with errors(codec_code=EXIT_INTERNAL):
        from . import train as training

        overrides: dict = {}
        if config is not None:
            require_input(config)
            overrides = load_train_overrides(config)
        if init_from is not None:
            require_input(init_from)
        given = {"steps": steps, "batch": batch, "seed": seed, "lr": lr, "stage": stage,
                 "init_from": str(init_from) if init_from is not None else None,
                 "precision": None if precision == PrecisionName.auto else precision.value}
        overrides |= {k: v for k, v in given.items() if v is not None}
        overrides |= {"data": list(data), "out": str(out), "run_dir": str(run_dir), "resume": resume}
        cfg = training.config_from_dict(overrides)  # ValueError (exit 2) on unknown or malformed settings
        if out.is_dir():
            raise CliError(f"{out}: is a directory", EXIT_USAGE)
        if out.exists() and not force:  # checked now, not after hours of training
            raise CliError(f"{out}: output already exists (use --force to overwrite)", EXIT_EXISTS)
        for d in data:
            if not Path(d).exists():
                raise CliError(f"{d}: training data not found", EXIT_INPUT)

        def echo(msg: str) -> None:
            if not quiet:
                sys.stderr.write(f"{msg}\n")
                sys.stderr.flush()

        t0 = time.perf_counter()
        summary = training.run(cfg, progress=show_progress(quiet), echo=echo)
    if summary and not quiet:  # only rank 0 returns a summary
        sys.stderr.write(f"trained {summary['steps']} steps in {time.perf_counter() - t0:.0f} s -> {out}\n")


@app.command(epilog=EXIT_CODES_HELP)
def models(json_out: JsonOpt = False) -> None:
    """List the shipped models with their size and the quality and speed measured for them."""
    with errors(codec_code=EXIT_MODEL):
        from .weights import shipped_model_info

        infos = shipped_model_info()
    if json_out:
        print_json({"models": infos})
        return
    table = Table(title="shipped models")
    for col in ("name", "parameters", "size", "keep 1 / 0.5 / 0.25 PSNR", "compress / decompress fps"):
        table.add_column(col)
    for m in infos:
        q, s = m["measured"].get("quality", {}), m["measured"].get("speed", {})
        psnr = " / ".join(f"{q[k]:.2f}" for k in ("psnr@1", "psnr@0.5", "psnr@0.25") if k in q) or "not measured"
        fps = (f"{s['compress_fps']:.1f} / {s['decompress_fps']:.1f}" if "compress_fps" in s else "not measured")
        table.add_row(m["name"] + (" (default)" if m["default"] else ""), f"{m['parameters'] / 1e6:.2f} M",
                      human_size(m["file_bytes"]), psnr + (" dB" if q else ""), fps)
    Console().print(table)
    Console(stderr=True).print("PSNR: dev set, 256x256 centre crops, 33 frames (scripts/dev_quality.py); "
                               "fps: 256x256, 65 frames, defaults, on 2 CPU cores (the same script, --speed).")


@app.command(epilog=EXIT_CODES_HELP)
def doctor(json_out: JsonOpt = False) -> None:
    """Show what infotok runs on: versions, devices, CPU vector extensions and bf16 support, the precision
    `auto` picks and why, threads, and where models are looked up. Run it when something is slow or fails."""
    with errors(codec_code=EXIT_INTERNAL):
        from .doctor import environment

        env = environment()
    if json_out:
        print_json(env)
        return
    video, cpu, models_ = env["video"], env["cpu"], env["models"]
    encoders = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in video.get("encoders", {}).items())
    rows = [
        ("infotok", env["infotok"]), ("python", f"{env['python']} ({env['platform']})"),
        ("torch", f"{env['torch']['version']}, {env['torch']['threads']} threads"),
        ("PyAV", f"{video.get('pyav')} (FFmpeg libavcodec {video.get('ffmpeg_libraries', {}).get('libavcodec')})"),
        ("encoders", encoders), ("ffmpeg binary", video.get("ffmpeg_binary") or "not found (eval's x264/x265)"),
        ("CPU", f"{cpu['model']} ({cpu['cores']} cores)"),
        ("vector extensions", " ".join(cpu["vector_extensions"]) or "none detected"),
        ("bf16 native on CPU", "yes" if cpu["bf16_native"] else "no (emulated: very slow)"),
        *[(d["device"], d["name"]) for d in env["devices"] if d["device"] != "cpu"],
        *[(f"precision auto ({dev})", f"{p['precision']}: {p['reason']}")
          for dev, p in env["precision"].items() if isinstance(p, dict)],
        ("models", f"{', '.join(models_['shipped'])} (shipped, default {models_['default']})"
                   + (f"; {', '.join(models_['imported'])} (imported)" if models_["imported"] else "")),
        ("model store", models_["user_dir"]),
    ]
    out_console.print(key_value_table("infotok doctor", rows))


# ----------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (`infotok`), also used by `python -m infotok_cli`."""
    app(args=argv, prog_name="infotok")


if __name__ == "__main__":  # pragma: no cover
    main()
