"""`infotok eval` (rate-distortion against the baselines) and `infotok train`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from .app import (
    EXIT_CODES_HELP,
    EXIT_INPUT,
    EXIT_INTERNAL,
    EXIT_MODEL,
    EXIT_USAGE,
    CliError,
    Device,
    DeviceOpt,
    ForceOpt,
    ModelOpt,
    OverlapOpt,
    PrecisionName,
    PrecisionOpt,
    QuietOpt,
    WindowOpt,
    app,
    check_window_options,
    errors,
    out_console,
    print_json,
    require_input,
    require_output,
    require_report_outputs,
    show_progress,
    step_progress,
)

VideosArg = Annotated[list[Path], typer.Argument(help="Videos to evaluate.", show_default=False)]
RatesOpt = Annotated[str, typer.Option(help="Keep rates (token budgets), comma-separated, each 1/16..1.")]
MethodsOpt = Annotated[str | None, typer.Option(
    metavar="LIST", help="Comma-separated subset of: elbo, elbo-error, elbo-global, random, raster, search, fixed, "
                         "x264, x265. Default: all.")]
NoCodecsOpt = Annotated[bool, typer.Option("--no-codecs", help="Skip the x264/x265 comparison.")]
EvalJsonOpt = Annotated[bool, typer.Option("--json", help="Print {settings, rows, averages, matched_quality} as one "
                                                          "JSON object.")]
EvalCsvOpt = Annotated[str | None, typer.Option("--csv", metavar="PATH|-",
                                                help="Write per-video rows and averages as CSV (- = stdout).")]
RdPlotOpt = Annotated[Path | None, typer.Option("--plot", metavar="PNG",
                                                help="Write PSNR, SSIM and ST-LPIPS against bits per pixel.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the random-placement baseline.")]
LpipsOpt = Annotated[str, typer.Option(
    metavar="NET", help="Perceptual metric (shift-tolerant LPIPS, lower is better): alex (built in), vgg "
                        "(needs `pip install --no-deps stlpips-pytorch`) or none (skip; it costs about as "
                        "much as decoding).")]


@app.command(name="eval", epilog=EXIT_CODES_HELP)
def eval_(inputs: VideosArg, rates: RatesOpt = "0.25,0.5,0.75,1", methods: MethodsOpt = None,
          no_codecs: NoCodecsOpt = False, json_out: EvalJsonOpt = False, csv_path: EvalCsvOpt = None,
          plot: RdPlotOpt = None, window: WindowOpt = 33, overlap: OverlapOpt = 3, seed: SeedOpt = 0,
          lpips: LpipsOpt = "alex", model: ModelOpt = None, device: DeviceOpt = Device("auto"),
          precision: PrecisionOpt = PrecisionName("auto"), force: ForceOpt = False, quiet: QuietOpt = False) -> None:
    """Rate-distortion of the ELBO router against random, raster, binary-search, fixed-rate and x264/x265:
    PSNR, SSIM and ST-LPIPS side by side."""
    if json_out and csv_path == "-":
        raise typer.BadParameter("--json and --csv - both want stdout; write the CSV to a file")
    check_window_options(window, overlap)
    with errors(codec_code=EXIT_INPUT):
        from ..coding.tokenizer import Tokenizer
        from ..eval.evaluate import evaluate, metric_network, parse_methods, parse_rates
        from ..eval.perceptual import NETS, PerceptualError

        rate_list, method_list = parse_rates(rates), parse_methods(methods, not no_codecs)
        for src in inputs:
            require_input(src)
        require_report_outputs(csv_path, plot, force, list(inputs))
        if lpips not in (*NETS, "none"):  # checked before the model loads
            metric_network(lpips)
        tok = Tokenizer(model, device.value, precision=precision.value)
        try:
            perceptual = metric_network(lpips, tok.device)
        except PerceptualError as exc:  # weights missing or damaged: a model problem
            raise CliError(str(exc), EXIT_MODEL) from None
        with step_progress("eval", show_progress(quiet)) as progress:
            report = evaluate(inputs, tok, rate_list, method_list, window=window, overlap=overlap, seed=seed,
                              progress=progress, lpips=perceptual)
        for line in report.write(None if csv_path == "-" else csv_path, plot, overwrite=force):
            if not quiet:
                sys.stderr.write(line + "\n")
    if json_out:
        print_json(report.to_dict())
    elif csv_path == "-":  # stdout is the CSV, not the report
        sys.stdout.write(report.to_csv())
    else:
        from ..report.text import eval_report

        eval_report(out_console, report)


TrainDataArg = Annotated[list[str], typer.Argument(help="Training videos or folders (searched recursively).",
                                                   show_default=False)]
TrainOutOpt = Annotated[Path, typer.Option("--out", "-o", help="Weights file to write.")]
StepsOpt = Annotated[int | None, typer.Option(min=1, help="Optimiser steps [default: 10000].")]
BatchOpt = Annotated[int | None, typer.Option(min=1, help="Clips per step and process [default: 8].")]
ResumeOpt = Annotated[bool, typer.Option(help="Continue from the run directory's checkpoint.")]
RunDirOpt = Annotated[Path, typer.Option(help="Checkpoints, log and data split.")]
TrainSeedOpt = Annotated[int | None, typer.Option(help="Random seed [default: 0].")]
LrOpt = Annotated[float | None, typer.Option(help="Peak learning rate [default: 1e-3].")]
StageOpt = Annotated[str | None, typer.Option(
    help="base (base tokenizer at full rate, adaptive path off), adaptive (base frozen, Flex "
         "objective) or full (everything, Flex objective) [default: full].")]
InitFromOpt = Annotated[Path | None, typer.Option(
    metavar="WEIGHTS", help="Start from these weights (a previous stage) with a fresh optimiser.")]
ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", metavar="JSON",
    help="JSON object of further TrainConfig fields (e.g. model, crops, clip_frames); "
         "options given on the command line win.")]


def load_train_overrides(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}: not valid JSON ({exc})", EXIT_USAGE) from None
    if not isinstance(data, dict):
        raise CliError(f"{path}: must hold a JSON object of TrainConfig fields", EXIT_USAGE)
    return data


@app.command(epilog=EXIT_CODES_HELP)
def train(data: TrainDataArg, out: TrainOutOpt = Path("model.safetensors"), steps: StepsOpt = None,
          batch: BatchOpt = None, resume: ResumeOpt = False, run_dir: RunDirOpt = Path("runs/train"),
          seed: TrainSeedOpt = None, lr: LrOpt = None, stage: StageOpt = None, init_from: InitFromOpt = None,
          config: ConfigOpt = None, precision: PrecisionOpt = PrecisionName("auto"), force: ForceOpt = False,
          quiet: QuietOpt = False) -> None:
    """Train a model (one process, or many with `torchrun --nproc_per_node N -m infotok_cli train ...`)."""
    with errors(codec_code=EXIT_INTERNAL):
        from ..train import config_from_dict, run

        for path in (config, init_from):
            if path is not None:
                require_input(path)
        overrides = load_train_overrides(config) if config is not None else {}
        given = {"steps": steps, "batch": batch, "seed": seed, "lr": lr, "stage": stage,
                 "init_from": str(init_from) if init_from is not None else None,
                 "precision": None if precision.value == "auto" else precision.value}
        overrides |= {k: v for k, v in given.items() if v is not None}
        overrides |= {"data": list(data), "out": str(out), "run_dir": str(run_dir), "resume": resume}
        cfg = config_from_dict(overrides)  # ValueError (exit 2) on unknown or malformed settings
        require_output(out, force, [], parent_must_exist=False)  # checked now, not after hours of training
        for d in data:
            if not Path(d).exists():
                raise CliError(f"{d}: training data not found", EXIT_INPUT)
        t0 = time.perf_counter()
        summary = run(cfg, progress=show_progress(quiet), echo=(lambda _m: None) if quiet else echo)
    if summary and not quiet:  # only rank 0 returns a summary
        sys.stderr.write(f"trained {summary['steps']} steps in {time.perf_counter() - t0:.0f} s -> {out}\n")


def echo(msg: str) -> None:
    """Training's progress lines, on stderr."""
    sys.stderr.write(f"{msg}\n")
    sys.stderr.flush()
