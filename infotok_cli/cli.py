"""The `infotok` command line: compress, decompress, inspect, eval and train.

The CLI is a thin layer: every capability lives in a library function (codec, stats, plots, train);
this module parses options, checks inputs and outputs up front, shows progress and summaries, and
turns errors into one-line messages with documented exit codes.

Output conventions: `--json` prints exactly one JSON object on stdout and nothing else there; progress
bars, summaries, notices and errors go to stderr (except `inspect`'s report, which is its output).
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
"""

from __future__ import annotations

import enum
import json
import math
import os
import sys
import time
import traceback
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

EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 internal error; 2 usage error; 3 input not found, unreadable or not a video; "
    "4 invalid or corrupt .itok file; 5 output exists (use --force); 6 model/weights problem."
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


class Device(str, enum.Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


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
        code = library_error_code(exc, codec_code)
        if code is not None:
            die(exc, code)
        if isinstance(exc, FileExistsError):
            die(os_error_message(exc), EXIT_EXISTS)
        if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
            die(os_error_message(exc), EXIT_INPUT)
        if isinstance(exc, ValueError):
            die(exc, EXIT_USAGE)
        debug = os.environ.get("INFOTOK_DEBUG") == "1"
        if debug:
            traceback.print_exc()
        die(f"internal error: {type(exc).__name__}: {exc}" + ("" if debug else " (INFOTOK_DEBUG=1 shows details)"),
            EXIT_INTERNAL)


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


def tokenizer_for(header, model: str | None, device: str):
    """The model that decodes a file: --model, else the shipped model the header names, else the default.
    Its weights must be the ones the file was made with (checked here, before decoding: exit 6, not 4)."""
    from .codec import CodecError, Tokenizer, check_model_matches
    from .weights import DEFAULT_MODEL, WeightsError, load_model

    dev = pick_device(device)
    name = model or (header.model_name if header.model_name in shipped_models() else DEFAULT_MODEL)
    try:
        tok = Tokenizer(load_model(name, dev), dev)
        check_model_matches(header, tok)
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


# ----------------------------------------------------------------------------- compress

ModelOpt = Annotated[str | None, typer.Option("--model", "-m", metavar="NAME|PATH",
                                              help="Shipped model name or path to a .safetensors file.")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where the model runs.")]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing outputs.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
WindowOpt = Annotated[int, typer.Option(help="Frames per coding window (1 + 4k).")]
OverlapOpt = Annotated[int, typer.Option(help="Frames shared by consecutive windows.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, summary or notices.")]


@app.command(epilog=EXIT_CODES_HELP)
def compress(
    input: Annotated[Path, typer.Argument(help="Video to compress (mp4, mkv, mov, ...).",
                                          show_default=False)],
    output: Annotated[Path, typer.Argument(help="The .itok file to write.", show_default=False)],
    beta: Annotated[float, typer.Option(min=1 / 16, max=1.0, help="Target keep rate (1/16..1).")] = 0.5,
    strategy: Annotated[Strategy, typer.Option(help="How the token budget is shared between windows.")]
    = Strategy.global_,
    window: WindowOpt = 33,
    overlap: OverlapOpt = 3,
    model: ModelOpt = None,
    device: DeviceOpt = Device.auto,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Compress a video into an .itok token file."""
    check_window_options(window, overlap)
    with errors(codec_code=EXIT_INPUT):
        require_input(input)
        require_output(output, force, [input])
        from .codec import Tokenizer, compress_video
        from .weights import load_model

        dev = pick_device(device.value)
        tok = Tokenizer(load_model(model, dev), dev)
        with frame_progress("compress", show_progress(quiet)) as progress:
            result = compress_video(input, output, tok, beta=beta, strategy=strategy.value, window=window,
                                    overlap=overlap, overwrite=force, progress=progress)
    print_notices(result.notices, quiet)
    if json_out:
        print_json(result.to_dict())
    elif not quiet:
        err_console.print(key_value_table(f"{input.name} -> {output.name}", [
            ("frames", f"{result.frames} ({result.width}x{result.height})"),
            ("windows", f"{result.windows} ({strategy.value}, beta {beta:g}, window {window}, "
                        f"overlap {overlap})"),
            ("tokens kept", f"{result.tokens_kept:,} / {result.tokens_max:,}"),
            ("keep rate", f"{result.keep_rate:.4f}"),
            ("BPP16", f"{result.bpp16:.4f}"),
            ("bits per pixel", f"{result.bits_per_pixel:.5f}"),
            ("file size", human_size(result.file_bytes)),
            ("time", f"{result.seconds:.2f} s ({result.frames_per_second:.1f} frames/s)"),
        ]))


# ----------------------------------------------------------------------------- decompress

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")


@app.command(epilog=EXIT_CODES_HELP)
def decompress(
    input: Annotated[Path, typer.Argument(help="The .itok file to decode.", show_default=False)],
    output: Annotated[Path, typer.Argument(help="Video to write (.mp4, .m4v, .mov or .mkv).",
                                           show_default=False)],
    model: Annotated[str | None, typer.Option(
        "--model", "-m", metavar="NAME|PATH",
        help="Model to decode with; default: the one the file names if shipped, else the default.")] = None,
    device: DeviceOpt = Device.auto,
    lossless: Annotated[bool, typer.Option(help="Encode the output losslessly (RGB H.264, large).")] = False,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Decode an .itok file back to a video with the source's size, frame count and timing."""
    with errors(codec_code=EXIT_CONTAINER):
        require_input(input)
        require_output(output, force, [input], VIDEO_SUFFIXES)
        from .container import read_header_and_index

        header, _, _ = read_header_and_index(input)  # a bad file fails here, before torch is loaded
        from .codec import decompress_video

        tok = tokenizer_for(header, model, device.value)
        with frame_progress("decompress", show_progress(quiet)) as progress:
            result = decompress_video(input, output, tok, lossless=lossless, overwrite=force,
                                      progress=progress)
    if json_out:
        print_json(result.to_dict())
    elif not quiet:
        err_console.print(key_value_table(f"{input.name} -> {output.name}", [
            ("frames", f"{result.frames} ({result.width}x{result.height})"),
            ("model", f"{tok.loaded.name} on {tok.device}"),
            ("output", f"{human_size(output.stat().st_size)}{' (lossless)' if lossless else ''}"),
            ("time", f"{result.seconds:.2f} s ({result.frames_per_second:.1f} frames/s)"),
        ]))


# ----------------------------------------------------------------------------- inspect


def inspect_report(console: Console, insp, show_frames: bool) -> None:
    """Summary, per-window table and per-frame usage sparkline of an inspected file."""
    from .plots import sparkline

    s = insp.summary
    console.print(key_value_table(s["file"], [
        ("source", s["source"]),
        ("geometry", f"{s['width']}x{s['height']}, {s['frames']} frames"),
        ("frame rate", f"{s['fps']} ({s['fps_value']:.3f} fps), {s['duration_seconds']:.2f} s"),
        ("model", f"{s['model']} (weights {s['weights_sha256'][:12]})"),
        ("coding", f"strategy {s['strategy']}, beta {s['beta']:g}, window {s['window']}, "
                   f"overlap {s['overlap']}, {s['windows']} windows"),
        ("tokens kept", f"{s['tokens_kept']:,} / {s['tokens_max']:,}"),
        ("keep rate", f"mean {s['keep_rate']:.4f}, min {s['window_keep_rate_min']:.4f}, "
                      f"max {s['window_keep_rate_max']:.4f} (over windows)"),
        ("BPP16", f"{s['bpp16']:.4f}"),
        ("bits per pixel", f"{s['bits_per_pixel']:.5f} ({human_size(s['file_bytes'])})"),
        ("compression", f"{s['compression_vs_raw_rgb']:.0f}x vs raw RGB, "
                        f"{s['compression_vs_fixed_rate_tokens']:.2f}x vs fixed-rate tokens"),
    ]))
    table = Table(title="windows", title_justify="left")
    for col in ("window", "frames", "latent txhxw", "kept", "possible", "keep rate", "per latent frame"):
        table.add_column(col, justify="right" if col not in ("frames", "per latent frame") else "left")
    for w in insp.windows:
        t, h, ww = w["latent_shape"]
        last = w["frame_start"] + w["frame_count"] - 1
        table.add_row(str(w["window"]), f"{w['frame_start']}-{last}", f"{t}x{h}x{ww}",
                      f"{w['tokens_kept']:,}", f"{w['tokens_possible']:,}", f"{w['keep_rate']:.3f}",
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
    input: Annotated[Path, typer.Argument(help="The .itok file to inspect.", show_default=False)],
    json_out: Annotated[bool, typer.Option("--json",
                                           help="Print {summary, windows, frames} as JSON.")] = False,
    frames: Annotated[bool, typer.Option("--frames", help="Also print the per-frame table.")] = False,
    csv_path: Annotated[str | None, typer.Option("--csv", metavar="PATH|-",
                                                 help="Write one CSV row per frame (- = stdout).")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", metavar="PNG",
                                              help="Write a per-frame bar chart of kept tokens.")] = None,
    force: ForceOpt = False,
) -> None:
    """Token-usage statistics of an .itok file (reads only its header and index; decodes nothing)."""
    if json_out and csv_path == "-":
        raise typer.BadParameter("--json and --csv - both want stdout; write the CSV to a file")
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
        tok = tokenizer_for(header, model, device.value)
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
        metavar="LIST", help="Comma-separated subset of: elbo, elbo-global, random, raster, search, fixed, "
                             "x264, x265. Default: all.")] = None,
    no_codecs: Annotated[bool, typer.Option("--no-codecs", help="Skip the x264/x265 comparison.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print {settings, rows, averages, matched_quality} "
                                                          "as one JSON object.")] = False,
    csv_path: Annotated[str | None, typer.Option("--csv", metavar="PATH|-",
                                                 help="Write per-video rows and averages as CSV (- = stdout).")]
    = None,
    plot: Annotated[Path | None, typer.Option("--plot", metavar="PNG",
                                              help="Write PSNR and SSIM against bits per pixel.")] = None,
    window: WindowOpt = 33,
    overlap: OverlapOpt = 3,
    seed: Annotated[int, typer.Option(help="Seed of the random-placement baseline.")] = 0,
    model: ModelOpt = None,
    device: DeviceOpt = Device.auto,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Rate-distortion of the ELBO router against random, raster, binary-search, fixed-rate and x264/x265."""
    if json_out and csv_path == "-":
        raise typer.BadParameter("--json and --csv - both want stdout; write the CSV to a file")
    check_window_options(window, overlap)
    with errors(codec_code=EXIT_INPUT):
        from .codec import Tokenizer
        from .evaluate import evaluate, parse_rates, plot_rd, resolve_methods
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
        dev = pick_device(device.value)
        tok = Tokenizer(load_model(model, dev), dev)
        if show_progress(quiet):
            columns = (TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                       TimeElapsedColumn(), TimeRemainingColumn())
            with Progress(*columns, console=err_console, transient=True) as bar:
                task = bar.add_task("", total=None)
                report = evaluate(inputs, tok, rate_list, method_list, window=window, overlap=overlap, seed=seed,
                                  progress=lambda done, total, label: bar.update(
                                      task, completed=done, total=total, description=label))
        else:
            report = evaluate(inputs, tok, rate_list, method_list, window=window, overlap=overlap, seed=seed)
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

    # Piped output would be cut to 80 columns (Rich's default off a terminal) and truncate cells.
    width = None if console.is_terminal else 140

    table = Table(title=f"mean over {len(report.settings['videos'])} video(s), model {report.settings['model']}",
                  title_justify="left")
    for col in ("method", "rate", "keep", "BPP16", "bits/pixel", "PSNR", "SSIM", "passes/window", "encode s",
                "decode s"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for a in report.averages():
        table.add_row(a["method"], f"{a['rate']:g}", fmt(a["keep_rate"]), fmt(a["bpp16"]),
                      fmt(a["bits_per_pixel"], 4), fmt(a["psnr"], 2), fmt(a["ssim"], 4),
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
                 "init_from": str(init_from) if init_from is not None else None}
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


# ----------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (`infotok`), also used by `python -m infotok_cli`."""
    app(args=argv, prog_name="infotok")


if __name__ == "__main__":  # pragma: no cover
    main()
