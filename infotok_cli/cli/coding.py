"""`infotok compress` and `infotok decompress`: videos to token files and back (one file, or a batch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..constants import VIDEO_SUFFIXES
from .app import (
    EXIT_CODES_HELP,
    EXIT_CONTAINER,
    EXIT_INPUT,
    BatchJsonOpt,
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
    tokenizer_for,
)
from .batch import BatchArgs, compress_batch, decompress_batch, single_pair

CompressInputs = Annotated[list[Path] | None, typer.Argument(
    metavar="INPUT OUTPUT | INPUTS... -o DIR",
    help="A video (mp4, mkv, mov, ...) and the .itok file to write; or, with -o DIR, any number of videos.",
    show_default=False)]
DecompressInputs = Annotated[list[Path] | None, typer.Argument(
    metavar="INPUT OUTPUT | INPUTS... -o DIR",
    help="An .itok file (or exported token arrays, .npz / .safetensors) and the video to write (.mp4, .m4v, "
         ".mov or .mkv); or, with -o DIR, any number of them (written as DIR/<name>.mp4).", show_default=False)]
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
             no_audio: NoAudioOpt = False, window: WindowOpt = 33,
             overlap: OverlapOpt = 3, model: ModelOpt = None, device: DeviceOpt = Device("auto"),
             precision: PrecisionOpt = PrecisionName("auto"), output_dir: OutDirOpt = None,
             from_list: FromListOpt = None, skip_existing: SkipExistingOpt = False, shard: ShardOpt = None,
             force: ForceOpt = False, json_out: BatchJsonOpt = False, quiet: QuietOpt = False) -> None:
    """Compress a video into an .itok token file (or many videos into a directory, loading the model once)."""
    check_window_options(window, overlap)
    with errors(codec_code=EXIT_INPUT):
        from ..coding.rate import check_quality_options

        check_quality_options(target_psnr, max_bpp16)  # up front: a usage error, before any input is looked at
    options = {"beta": beta, "strategy": strategy and strategy.value, "window": window, "overlap": overlap,
               "target_psnr": target_psnr, "max_bpp16": max_bpp16, "audio": not no_audio}
    tokenizer = {"model": model, "device": device.value, "placement": placement and placement.value,
                 "precision": precision.value}
    batch = BatchArgs(inputs, output_dir, from_list, shard, skip_existing)
    if batch.active:
        return compress_batch(batch, options, tokenizer, force, json_out, quiet)
    with errors(codec_code=EXIT_INPUT):
        input, output = single_pair(inputs, "videos")
        require_input(input)
        require_output(output, force, [input])
        from ..coding.tokenizer import Tokenizer

        tok = Tokenizer(**tokenizer)
        with frame_progress("compress", show_progress(quiet)) as progress:
            result = tok.compress_file(input, output, force=force, progress=progress, **options)
    print_notices(result.notices, quiet)
    if json_out:
        return print_json(result.to_dict())
    from ..report.text import compress_rows

    model_line = f"{tok.name} on {tok.device}, {tok.precision.name}"
    show_summary(f"{input.name} -> {output.name}", compress_rows(result.to_dict(), options, model_line), quiet)


@app.command(epilog=EXIT_CODES_HELP)
def decompress(inputs: DecompressInputs = None, model: DecodeModelOpt = None, device: DeviceOpt = Device("auto"),
               precision: PrecisionOpt = PrecisionName("auto"), lossless: LosslessOpt = False,
               no_audio: NoAudioOutOpt = False, output_dir: OutDirOpt = None, from_list: FromListOpt = None,
               skip_existing: SkipExistingOpt = False, shard: ShardOpt = None, force: ForceOpt = False,
               json_out: BatchJsonOpt = False, quiet: QuietOpt = False) -> None:
    """Decode an .itok file back to a video with the source's size, frame count and timing (or many files
    into a directory)."""
    options = {"lossless": lossless, "audio": not no_audio}
    batch = BatchArgs(inputs, output_dir, from_list, shard, skip_existing)
    if batch.active:
        return decompress_batch(batch, options, model, device.value, precision.value, force, json_out, quiet)
    with errors(codec_code=EXIT_CONTAINER):
        input, output = single_pair(inputs, ".itok files")
        require_input(input)
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
    show_summary(f"{input.name} -> {output.name}", decompress_rows(result.to_dict(), model_line,
                                                                   output.stat().st_size), quiet)
