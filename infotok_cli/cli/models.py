"""`infotok models`: list the shipped and imported models; `models import` / `models remove` manage imports."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .app import EXIT_CODES_HELP, EXIT_MODEL, ForceOpt, JsonOpt, app, errors, print_json, require_input

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
        from ..model.store import imported_models, shipped_model_info, user_model_dir

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
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Import the paper's released InfoTok-Flex weights into the model store ($INFOTOK_HOME/models, else the
    user data directory); then every command takes `--model NAME`."""
    with errors(codec_code=EXIT_MODEL):
        require_input(checkpoint)
        if config is not None:
            require_input(config)
        from ..model.flex_store import import_checkpoint

        result = import_checkpoint(checkpoint, name, config=config, dtype=dtype.value, force=force)
    if json_out:
        return print_json(result)
    Console(stderr=True).print(f"imported {result['name']}: {result['parameters']:,} parameters, "
                               f"weights {result['sha256'][:12]} -> {result['path']}")


@models_app.command("remove", epilog=EXIT_CODES_HELP)
def remove(name: Annotated[str, typer.Argument(help="An imported model's name.", show_default=False)]) -> None:
    """Delete an imported model from the model store."""
    with errors(codec_code=EXIT_MODEL):
        from ..model.flex_store import remove_model

        path = remove_model(name)
    Console(stderr=True).print(f"removed {name} ({path})")
