"""`infotok compress` and `infotok decompress`: videos to token files and back (one file, or a batch)."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from ..constants import STREAM_FORMATS, VIDEO_SUFFIXES
from .app import (
    EXIT_CODES_HELP,
    EXIT_CONTAINER,
    EXIT_INPUT,
    EXIT_USAGE,
    BatchJsonOpt,
    CliError,
    DecodeModelOpt,
    Device,
    DeviceOpt,
    ForceOpt,
    FromListOpt,
    ModelOpt,
    OutDirOpt,
    OverlapOpt,
    Placement,
    PrecisionName,
    PrecisionOpt,
    QuietOpt,
    ShardOpt,
    SkipExistingOpt,
    Strategy,
    WindowOpt,
    app,
    check_window_options,
    errors,
    frame_progress,
    print_json,
    print_notices,
    require_input,
    require_output,
    show_progress,
    show_summary,
    skip_teardown,
    tokenizer_for,
)
from .batch import BatchArgs, compress_batch, decompress_batch, single_pair

STDIO = "-"  # an input read from stdin (compress) or an output written to stdout (decompress)
StreamFormat = enum.Enum("StreamFormat", {f: f for f in STREAM_FORMATS}, type=str)

CompressInputs = Annotated[list[Path] | None, typer.Argument(
    metavar="INPUT OUTPUT | INPUTS... -o DIR",
    help="A video (mp4, mkv, mov, ...; - reads one from stdin) and the .itok file to write; or, with -o DIR, "
         "any number of videos.", show_default=False)]
DecompressInputs = Annotated[list[Path] | None, typer.Argument(
    metavar="INPUT OUTPUT | INPUTS... -o DIR",
    help="An .itok file (or exported token arrays, .npz / .safetensors) and the video to write (.mp4, .m4v, "
         ".mov or .mkv; - writes to stdout in --format); or, "
         "with -o DIR, any number of .itok files or exports (written as DIR/<name>.mp4, or --format's suffix).",
    show_default=False)]
ScaleOpt = Annotated[str | None, typer.Option(
    "--scale", metavar="W:H", help="Code the video at this size, as ffmpeg's scale filter: -1 for a side follows "
    "the aspect ratio, -2 the same rounded to an even size, 0 keeps the input's.", show_default=False)]
StartOpt = Annotated[str | None, typer.Option(
    "--start", metavar="TIME", help="Code from this time (seconds, or [HH:]MM:SS[.frac]) after the first frame; "
    "the first coded frame gets time 0 and the audio is cut to match.", show_default=False)]
DurationOpt = Annotated[str | None, typer.Option(
    "--duration", metavar="TIME", help="Code at most this long (seconds, or [HH:]MM:SS[.frac]).",
    show_default=False)]
FormatOpt = Annotated[StreamFormat | None, typer.Option(
    "--format", help="Container of the video written to - (stdout), e.g. `| ffplay -`; in batch mode the "
    "outputs' suffix (mkv, mp4 or mov).", show_default=False)]
BetaOpt = Annotated[float, typer.Option(min=1 / 16, max=1.0, help="Target keep rate (1/16..1).")]
StrategyOpt = Annotated[Strategy | None, typer.Option(
    help="How the token budget is shared between windows. Default: global, or window for a model without a "
         "reference error (an imported model that was not calibrated).", show_default=False)]
TargetPsnrOpt = Annotated[float | None, typer.Option(
    "--target-psnr", min=1, max=99, metavar="DB",
    help="Quality instead of budget: each window keeps the fewest tokens whose reconstruction reaches "
         "this PSNR (replaces --beta and --strategy).", show_default=False)]
MaxBpp16Opt = Annotated[float | None, typer.Option(
    "--max-bpp16", min=0.125, max=1.0625, metavar="X",
    help="With --target-psnr: cap each window at this BPP16 (keep rate X - 1/16).", show_default=False)]
PlacementOpt = Annotated[Placement | None, typer.Option(
    help="Which positions keep their tokens: probe-gain (what each token saves, from two probe decodes "
         "per window), drop-gain (the same against the full-rate decode: one more pass), error "
         "(full-rate error alone, the paper's router) or predicted (the model's learned router head: no "
         "decode, fastest; see the model card for its quality). Default: the model's own: predicted where its "
         "weights carry a router head (infotok-m), error for InfoTok-Flex, else probe-gain.",
    show_default=False)]
NoAudioOpt = Annotated[bool, typer.Option("--no-audio", help="Do not keep the input's audio.")]
LosslessOpt = Annotated[bool, typer.Option(help="Encode the output losslessly (RGB H.264, large).")]
NoAudioOutOpt = Annotated[bool, typer.Option("--no-audio", help="Leave out the audio the file keeps.")]


@app.command(epilog=EXIT_CODES_HELP)
def compress(inputs: CompressInputs = None, beta: BetaOpt = 0.5, strategy: StrategyOpt = None,
             target_psnr: TargetPsnrOpt = None, max_bpp16: MaxBpp16Opt = None, placement: PlacementOpt = None,
             no_audio: NoAudioOpt = False, scale: ScaleOpt = None, start: StartOpt = None,
             duration: DurationOpt = None, window: WindowOpt = 33,
             overlap: OverlapOpt = 3, model: ModelOpt = None, device: DeviceOpt = Device("auto"),
             precision: PrecisionOpt = PrecisionName("auto"), output_dir: OutDirOpt = None,
             from_list: FromListOpt = None, skip_existing: SkipExistingOpt = False, shard: ShardOpt = None,
             force: ForceOpt = False, json_out: BatchJsonOpt = False, quiet: QuietOpt = False) -> None:
    """Compress a video into an .itok token file (or many videos into a directory, loading the model once)."""
    skip_teardown()
    check_window_options(window, overlap)
    with errors(codec_code=EXIT_INPUT):
        from ..coding.rate import check_quality_options

        check_quality_options(target_psnr, max_bpp16)  # up front: a usage error, before any input is looked at
        from ..io.source import InputOptions

        InputOptions.parse(scale, start, duration)
    options = {"beta": beta, "strategy": strategy and strategy.value, "window": window, "overlap": overlap,
               "target_psnr": target_psnr, "max_bpp16": max_bpp16, "audio": not no_audio, "scale": scale,
               "start": start, "duration": duration}
    tokenizer = {"model": model, "device": device.value, "placement": placement and placement.value,
                 "precision": precision.value}
    batch = BatchArgs(inputs, output_dir, from_list, shard, skip_existing)
    if batch.active:
        return compress_batch(batch, options, tokenizer, force, json_out, quiet)
    with errors(codec_code=EXIT_INPUT):
        input, output = single_pair(inputs, "videos")
        stdin = str(input) == STDIO
        if not stdin:
            require_input(input)
        if str(output) == STDIO:
            raise CliError("the .itok output cannot go to stdout (it is written atomically); give a file", EXIT_USAGE)
        require_output(output, force, [] if stdin else [input])
        from ..coding.tokenizer import Tokenizer

        tok = Tokenizer(**tokenizer)
        with frame_progress("compress", show_progress(quiet)) as progress:
            result = tok.compress_file(input, output, force=force, progress=progress, **options)
    print_notices(result.notices, quiet)
    if json_out:
        return print_json(result.to_dict())
    from ..report.text import compress_rows

    model_line = f"{tok.name} on {tok.device}, {tok.precision.name}"
    name = "stdin" if stdin else input.name
    show_summary(f"{name} -> {output.name}", compress_rows(result.to_dict(), options, model_line), quiet)


@app.command(epilog=EXIT_CODES_HELP)
def decompress(inputs: DecompressInputs = None, model: DecodeModelOpt = None, device: DeviceOpt = Device("auto"),
               precision: PrecisionOpt = PrecisionName("auto"), lossless: LosslessOpt = False,
               no_audio: NoAudioOutOpt = False, fmt: FormatOpt = None, output_dir: OutDirOpt = None,
               from_list: FromListOpt = None,
               skip_existing: SkipExistingOpt = False, shard: ShardOpt = None, force: ForceOpt = False,
               json_out: BatchJsonOpt = False, quiet: QuietOpt = False) -> None:
    """Decode an .itok file back to a video with the source's size, frame count and timing (or many files
    into a directory)."""
    skip_teardown()
    options = {"lossless": lossless, "audio": not no_audio}
    container = fmt and fmt.value
    batch = BatchArgs(inputs, output_dir, from_list, shard, skip_existing)
    if batch.active:
        return decompress_batch(batch, options, model, device.value, precision.value, force, json_out, quiet,
                                container)
    with errors(codec_code=EXIT_CONTAINER):
        input, output = single_pair(inputs, ".itok files")
        require_input(input)
        to_stdout = str(output) == STDIO
        if to_stdout:
            if container is None:
                raise CliError(f"writing to - (stdout) needs --format ({', '.join(STREAM_FORMATS)})", EXIT_USAGE)
            if json_out:
                raise CliError("--json prints on stdout, where the video goes; drop one of them", EXIT_USAGE)
            options["format"] = container
        elif container is not None:
            raise CliError("--format names the container of - (stdout); a file's follows its suffix", EXIT_USAGE)
        else:
            require_output(output, force, [input], VIDEO_SUFFIXES)
        from ..format.arrays import read_header_and_index

        header, _, _ = read_header_and_index(input)  # a bad file fails here, before torch is loaded
        tok = tokenizer_for(header, model, device.value, precision.value)
        with frame_progress("decompress", show_progress(quiet)) as progress:
            result = tok.decompress_file(input, output, force=force, progress=progress, **options)
    print_notices(result.notices, quiet)
    if json_out:
        return print_json(result.to_dict())
    from ..report.text import decompress_rows

    model_line = f"{tok.name} on {tok.device}, {tok.precision.name}"
    show_summary(f"{input.name} -> {'stdout' if to_stdout else output.name}",
                 decompress_rows(result.to_dict(), model_line, result.file_bytes), quiet)
