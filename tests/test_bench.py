"""The bench (infotok_cli/bench/): its plan, its tables and, end to end on a tiny model, that it writes its
report and nothing else."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from infotok_cli.bench.__main__ import make_plan
from infotok_cli.bench.common import ROOT, command_arg, display_path
from infotok_cli.bench.entropy import entropy_coder_seconds, v1_equivalent_size
from infotok_cli.bench.quality import tokens_at_psnr
from infotok_cli.bench.speed import Speed, parts_table, speed_table
from infotok_cli.format.reader import ItokReader

V2_FILE = Path(__file__).resolve().parent / "data" / "v2-small.itok"


def args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**{"quick": False, "runs": None, "frames": None, "rd_frames": None, "rates": None, **kw})


def test_plan_follows_the_options() -> None:
    full, quick = make_plan(args()), make_plan(args(quick=True))
    assert (full.runs, full.speed_frames, full.rates) == (3, 65, [0.25, 0.5, 0.75, 1.0])
    assert (quick.runs, quick.rd_frames, quick.native_methods) == (1, 17, ["elbo", "fixed", "x264"])
    plan = make_plan(args(frames=9, rd_frames=5, rates="0.5,0.25", runs=2))
    assert (plan.speed_frames, plan.mem_base_frames, plan.rd_frames, plan.runs) == (9, 9, 5, 2)
    assert plan.rates == plan.native_rates == [0.5, 0.25]


def test_report_paths_are_relative_to_the_checkout() -> None:
    assert display_path(ROOT / "docs" / "BENCHMARKS.md") == os.path.join("docs", "BENCHMARKS.md")
    assert command_arg(f"--out={ROOT / 'x.md'}") == "--out=x.md" and command_arg("--quick") == "--quick"


def test_tables() -> None:
    s = Speed((256, 256), "cpu", "fp32", "error", 10, compress_s=[2.0, 1.0, 3.0], decompress_s=[0.5],
              parts_c={"encoder": 1.0, "full-rate decode": 0.5, "probe decodes": 0.0, "router": 0.25,
                       "container + I/O": 0.25},
              parts_d={"decoder": 0.4, "container + I/O": 0.1})
    assert speed_table([s]).splitlines()[-1] == "| 256x256 | cpu | fp32 | error | 10 | 5.0 | 20.0 | 2.00 | 0.50 |"
    assert "| 1.00 s (50%) | 0.50 s (25%) |" in parts_table([s]) and "0.40 s (80%)" in parts_table([s])
    curve = [(30.0, 100), (34.0, 300), (26.0, 40)]
    assert tokens_at_psnr(curve, 32.0) == 200 and tokens_at_psnr(curve, 40.0) is None


def test_entropy_measures_a_real_file() -> None:
    size, payload, recs = v1_equivalent_size(V2_FILE)
    with ItokReader(V2_FILE) as reader:
        assert len(recs) == len(list(reader.iter_windows()))
    assert size > 0 and 0 <= payload < size
    encode, decode = entropy_coder_seconds(V2_FILE)
    assert encode > 0 and decode >= 0


def test_bench_writes_its_report_and_nothing_else(tiny_weights: Path, moving_video: Path, tmp_path: Path) -> None:
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "moving.mp4").write_bytes(moving_video.read_bytes())
    out = tmp_path / "report" / "BENCH.md"
    readme = (ROOT / "README.md").read_bytes()
    proc = subprocess.run([sys.executable, "-m", "infotok_cli.bench", "--model", str(tiny_weights), "--out", str(out),
                           "--samples", str(samples), "--data", str(tmp_path / "none"), "--max-val-clips", "0",
                           "--frames", "5", "--runs", "1", "--lpips", "none", "--device", "cpu",
                           "--skip", "memory,batch,flex,rd,entropy,quality"],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = out.read_text()
    assert report.startswith("# infotok benchmarks") and "python -m infotok_cli.bench --model" in report
    for heading in ("## Machine and model", "## Speed", "### Where the time goes", "## Placement", "## Bench run time"):
        assert heading in report
    assert "| 256x256 | cpu | fp32 |" in report and "| probe-gain |" in report
    assert sorted(p.name for p in out.parent.iterdir()) == ["BENCH.md"]
    assert (ROOT / "README.md").read_bytes() == readme
