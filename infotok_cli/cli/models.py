"""`infotok models`: list the shipped and imported models; `models import` / `models remove` manage imports."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .app import (
    EXIT_CODES_HELP,
    EXIT_MODEL,
    EXIT_USAGE,
    CliError,
    Device,
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    QuietOpt,
    app,
    errors,
    print_json,
    print_notices,
    require_input,
    show_progress,
    step_progress,
)

models_app = typer.Typer(help="List the shipped and imported models; import the released InfoTok-Flex weights.",
                         epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(models_app, name="models")


class StoreDtype(str, enum.Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"


@models_app.callback(invoke_without_command=True, epilog=EXIT_CODES_HELP)
def models(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List the shipped models (size, measured quality and speed) and the imported ones."""
    if ctx.invoked_subcommand is not None:
        return
    with errors(codec_code=EXIT_MODEL):
        from ..model.catalog import imported_models, user_model_dir
        from ..model.store import shipped_model_info

        infos, imported = shipped_model_info(), imported_models()
    if json_out:
        return print_json({"models": infos, "imported": imported, "store": str(user_model_dir())})
    from ..report.text import MODELS_NOTE, models_table

    Console().print(models_table(infos))
    Console().print(f"imported ({user_model_dir()}): {', '.join(imported) or 'none'}")
    Console(stderr=True).print(MODELS_NOTE)


@models_app.command("import", epilog=EXIT_CODES_HELP)
def import_(
    checkpoint: Annotated[Path, typer.Argument(
        help="The released InfoTok-Flex checkpoint (infotok_mse.pt from the model repository qyoo/infotok-flex), "
             "or a safetensors state dict. Read with weights_only=True: never a full unpickle.",
        show_default=False)],
    name: Annotated[str, typer.Option("--name", help="The name commands take with --model.")] = "infotok-flex",
    config: Annotated[Path | None, typer.Option(
        "--config", metavar="JSON", help="The release's network configuration (default: the released one).")]
    = None,
    dtype: Annotated[StoreDtype, typer.Option("--dtype", help="How the weights are stored.")] = StoreDtype.float32,
    calibrate: Annotated[Path | None, typer.Option(
        "--calibrate", metavar="DIR",
        help="Measure the model's reference errors on your own clips (the video files in DIR, of the kind and "
             "size you will compress) and store them with the weights. The release records none: without "
             "them the `global` strategy has no reference and codes every window at beta, as `window` does "
             "(what the authors' README recommends); with them `global` gives hard windows more tokens and "
             "easy ones fewer, and `probe-gain` placement skips the full-rate decode. Four network passes "
             "per 17-frame window: minutes per window for the released model on a CPU.")] = None,
    calibrate_frames: Annotated[int | None, typer.Option(
        "--calibrate-frames", metavar="N", show_default="17",
        help="--calibrate: frames from the start of each clip, coded in windows of 17 frames (at most 68, "
             "four windows).")] = None,
    calibrate_clips: Annotated[int | None, typer.Option(
        "--calibrate-clips", metavar="N", show_default="all",
        help="--calibrate: use only the first N clips of DIR (by name).")] = None,
    device: DeviceOpt = Device("auto"),
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Import the paper's released InfoTok-Flex weights into the model store ($INFOTOK_HOME/models, else the
    user data directory); then every command takes `--model NAME`. With `--calibrate DIR` the import also
    measures the reference errors the `global` strategy needs, in the precision `auto` picks."""
    with errors(codec_code=EXIT_MODEL):
        require_input(checkpoint)
        if config is not None:
            require_input(config)
        if calibrate is None and (calibrate_frames is not None or calibrate_clips is not None):
            raise CliError("--calibrate-frames and --calibrate-clips need --calibrate DIR", EXIT_USAGE)
        from ..model.flex_store import import_checkpoint
        from ..train.calibrate import (
            CALIBRATION_WINDOW,
            calibrate_model,
            calibration_clips,
            check_calibration_frames,
        )

        # Every check of the calibration input before the (slow) checkpoint read.
        frames = CALIBRATION_WINDOW if calibrate_frames is None else calibrate_frames
        clips = calibration_clips(calibrate, calibrate_clips) if calibrate is not None else []
        check_calibration_frames(frames)
        with step_progress("calibrate", calibrate is not None and show_progress(quiet)) as progress:
            measure = None if not clips else (
                lambda model: calibrate_model(model, clips, frames=frames, device=device.value, progress=progress))
            result = import_checkpoint(checkpoint, name, config=config, dtype=dtype.value, force=force,
                                       measure=measure)
    calibration = result.get("calibration")
    if calibration:
        print_notices([f"calibration left out {skipped}" for skipped in calibration["skipped"]], quiet)
    if json_out:
        return print_json(result)
    reference = "no reference error (not calibrated)" if not calibration else (
        f"e_ref {result['e_ref']:.5f}, e_ref_probe {result['e_ref_probe']:.5f} from {calibration['windows']} "
        f"window(s) of {calibration['clips']} clip(s) in {calibration['precision']}")
    Console(stderr=True).print(f"imported {result['name']}: {result['parameters']:,} parameters, "
                               f"weights {result['sha256'][:12]} -> {result['path']}; {reference}",
                               highlight=False, soft_wrap=True)


@models_app.command("remove", epilog=EXIT_CODES_HELP)
def remove(name: Annotated[str, typer.Argument(help="An imported model's name.", show_default=False)]) -> None:
    """Delete an imported model from the model store."""
    with errors(codec_code=EXIT_MODEL):
        from ..model.flex_store import remove_model

        path = remove_model(name)
    Console(stderr=True).print(f"removed {name} ({path})")
