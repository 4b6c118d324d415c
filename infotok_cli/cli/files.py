"""Commands on token files and the installation: `inspect`, `export`, `pack`, `visualize`, `doctor`."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..constants import VIDEO_SUFFIXES
from .app import (
    EXIT_CODES_HELP,
    EXIT_CONTAINER,
    EXIT_INTERNAL,
    DecodeModelOpt,
    Device,
    DeviceOpt,
    ForceOpt,
    FromListOpt,
    JsonOpt,
    PrecisionName,
    PrecisionOpt,
    QuietOpt,
    ShardOpt,
    app,
    errors,
    frame_progress,
    out_console,
    print_json,
    require_input,
    require_output,
    require_report_outputs,
    show_progress,
    show_summary,
    tokenizer_for,
    warn_unreadable,
)
from .batch import inspect_batch

ExportFormat = enum.Enum("ExportFormat", {"npz": "npz", "safetensors": "safetensors"}, type=str)
ItokArg = Annotated[Path, typer.Argument(help="The .itok file.", show_default=False)]
InspectInputs = Annotated[list[Path] | None, typer.Argument(
    metavar="INPUT...", help="The .itok file(s) or exported token arrays to inspect (several: a report, or with "
                             "--json one JSON line, per file).", show_default=False)]
ArraysArg = Annotated[Path, typer.Argument(
    help="Token arrays as `export` writes them (.npz or .safetensors), tokens changed or generated.",
    show_default=False)]
PackOutArg = Annotated[Path, typer.Argument(help="The .itok file to write.", show_default=False)]
PackModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", metavar="NAME|PATH",
    help="The weights the tokens are for, when not installed under the name the arrays give.")]
InspectJsonOpt = Annotated[bool, typer.Option(
    "--json", help="Print {summary, windows, frames, token_entropy} as JSON.")]
FramesOpt = Annotated[bool, typer.Option("--frames", help="Also print the per-frame table.")]
FrameCsvOpt = Annotated[str | None, typer.Option(
    "--csv", metavar="PATH|-", help="Write one CSV row per frame (- = stdout).")]
UsagePlotOpt = Annotated[Path | None, typer.Option(
    "--plot", metavar="PNG", help="Write a per-frame bar chart of kept tokens.")]
ExportOutArg = Annotated[Path, typer.Argument(help="The file to write (.npz or .safetensors).", show_default=False)]
ExportFormatOpt = Annotated[ExportFormat | None, typer.Option(
    "--format", help="npz or safetensors [default: from OUTPUT's suffix].", show_default=False)]
DescribeJsonOpt = Annotated[bool, typer.Option("--json", help="Describe what was written as one JSON object.")]
VideoOutOpt = Annotated[Path, typer.Option("--output", "-o", help="Video to write (.mp4, .m4v, .mov or .mkv).",
                                           show_default=False)]
SourceOpt = Annotated[Path | None, typer.Option(
    "--source", "-s", metavar="VIDEO",
    help="The video the file was made from, shown as a first panel (same size and frame count).")]


@app.command(epilog=EXIT_CODES_HELP)
def inspect(inputs: InspectInputs = None, json_out: InspectJsonOpt = False, frames: FramesOpt = False,
            csv_path: FrameCsvOpt = None, plot: UsagePlotOpt = None, force: ForceOpt = False,
            from_list: FromListOpt = None, shard: ShardOpt = None) -> None:
    """Token-usage statistics of an .itok file (or exported token arrays): usage and coded sizes from its index,
    and the entropy of its tokens (every window is decoded for that; a window that does not decode is reported
    and left out)."""
    if json_out and csv_path == "-":
        raise typer.BadParameter("--json and --csv - both want stdout; write the CSV to a file")
    if from_list is not None or shard is not None or len(inputs or []) != 1:
        return inspect_batch(inputs, from_list, shard, json_out, frames, csv_path, plot)
    input = inputs[0]
    with errors(codec_code=EXIT_CONTAINER):
        from ..report.plots import frames_csv, write_inspection_outputs
        from ..report.stats import inspect_file

        require_input(input)
        require_report_outputs(csv_path, plot, force, [input])
        insp = inspect_file(input)
        warn_unreadable(insp)
        if csv_path == "-":
            sys.stdout.write(frames_csv(insp.frames))
        for line in write_inspection_outputs(insp, None if csv_path == "-" else csv_path, plot, overwrite=force):
            sys.stderr.write(line + "\n")
    if json_out:
        print_json(insp.to_dict())
    elif csv_path != "-":  # stdout is the report unless the CSV owns it
        from ..report.text import inspect_report

        inspect_report(out_console, insp, frames)


@app.command(epilog=EXIT_CODES_HELP)
def export(input: ItokArg, output: ExportOutArg, fmt: ExportFormatOpt = None, force: ForceOpt = False,
           json_out: DescribeJsonOpt = False, quiet: QuietOpt = False) -> None:
    """Write an .itok file's tokens and keep masks, with the metadata needed to use them, as plain arrays that
    numpy or safetensors load without infotok (see docs/API.md)."""
    with errors(codec_code=EXIT_CONTAINER):
        from ..format.export import format_for
        from ..io.files import export_tokens

        require_input(input)
        name = format_for(output, fmt.value if fmt is not None else None)  # ValueError: a usage error
        require_output(output, force, [input])
        result = export_tokens(input, output, name, force=force)
    if json_out:
        return print_json(result)
    from ..report.text import export_rows

    show_summary(f"{input.name} -> {output.name}", export_rows(result), quiet)


@app.command(epilog=EXIT_CODES_HELP)
def pack(input: ArraysArg, output: PackOutArg, model: PackModelOpt = None, force: ForceOpt = False,
         json_out: DescribeJsonOpt = False, quiet: QuietOpt = False) -> None:
    """Write token arrays (what `export` writes, with `tokens` changed or wholly generated) as an .itok file.
    Each window's keep mask is its keep_<i> array, or tokens_<i> != -1 where that is left out; codes must be
    in the codebook and shapes must match the metadata's geometry (see docs/USAGE.md)."""
    with errors(codec_code=EXIT_CONTAINER):
        require_input(input)
        require_output(output, force, [input])
        from ..coding.pack import pack_file

        result = pack_file(input, output, model=model, overwrite=force)
    if json_out:
        return print_json(result)
    from ..report.text import pack_rows

    show_summary(f"{input.name} -> {output.name}", pack_rows(result), quiet)


@app.command(epilog=EXIT_CODES_HELP)
def visualize(input: ItokArg, output: VideoOutOpt, source: SourceOpt = None, model: DecodeModelOpt = None,
              device: DeviceOpt = Device("auto"), precision: PrecisionOpt = PrecisionName("auto"),
              force: ForceOpt = False, json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Render a video of where the tokens go: per frame, the original (with --source), the reconstruction
    with dropped positions dimmed, the keep mask and a keep % bar."""
    with errors(codec_code=EXIT_CONTAINER):
        from ..format.reader import read_header_and_index

        require_input(input)
        if source is not None:
            require_input(source)
        require_output(output, force, [input] + ([source] if source else []), VIDEO_SUFFIXES)
        header, _, _ = read_header_and_index(input)
        from ..report.visualize import check_source, visualize

        if source is not None:
            check_source(source, header)  # up front; the wrong --source is a usage error
        tok = tokenizer_for(header, model, device.value, precision.value)
        with frame_progress("visualize", show_progress(quiet)) as progress:
            result = visualize(input, output, tok, source=source, overwrite=force, progress=progress)
    if json_out:
        return print_json(result)
    from ..report.text import visualize_rows

    model_line = f"{tok.name} on {tok.device}, {tok.precision.name}"
    show_summary(f"{input.name} -> {output.name}", visualize_rows(result, model_line, output.stat().st_size), quiet)


@app.command(epilog=EXIT_CODES_HELP)
def doctor(json_out: JsonOpt = False) -> None:
    """Show what infotok runs on: versions, devices, CPU vector extensions and bf16 support, the precision
    `auto` picks and why, threads, and where models are looked up. Run it when something is slow or fails."""
    with errors(codec_code=EXIT_INTERNAL):
        from ..report.doctor import environment

        env = environment()
    if json_out:
        return print_json(env)
    from ..report.text import doctor_rows, key_value_table

    out_console.print(key_value_table("infotok doctor", doctor_rows(env)))
