"""The README's at-a-glance table is the one infotok_cli/bench/glance.py derives from docs/BENCHMARKS.md."""

import re
from pathlib import Path

from infotok_cli.bench import glance as readme_glance

ROOT = Path(__file__).resolve().parents[1]


def test_readme_table_matches_last_bench_report():
    readme = (ROOT / "README.md").read_text()
    bench = (ROOT / "docs" / "BENCHMARKS.md").read_text()
    assert readme_glance.render(readme, bench) == readme, "run `make glance` (python -m infotok_cli.bench.glance)"


def test_rows_follow_the_report():
    bench = (ROOT / "docs" / "BENCHMARKS.md").read_text()
    speed_row = re.search(r"^\| 256x256 \| cpu \| ((?:[\w-]+ \| )*)\d+ \| .*$", bench, flags=re.M)
    labels = speed_row.group(1)  # precision and placement, where the report has those columns
    edited = bench.replace(speed_row.group(0), f"| 256x256 | cpu | {labels}65 | 1.5 | 2.5 | 43.3 | 26.0 |")
    glance = dict(readme_glance.glance_rows(edited))["compress / decompress, 256x256"]
    assert glance.startswith("1.5 / 2.5 frames/s")


def test_speed_rows_name_their_precision():
    bench = ("## Speed\n\n| size | device | precision | frames | compress frames/s | decompress frames/s |\n"
             "|---|---|---|---|---|---|\n| 256x256 | cpu | fp32 | 65 | 7.9 | 15.8 |\n"
             "| 256x256 | cpu | bf16 | 65 | 20.1 | 46.3 |\n")
    assert dict(readme_glance.glance_rows(bench))["compress / decompress, 256x256"] == (
        "7.9 / 15.8 frames/s (fp32); 20.1 / 46.3 frames/s (bf16)")


def test_missing_sections_give_dashes():
    rows = dict(readme_glance.glance_rows("# infotok benchmarks\n\nnothing measured\n"))
    assert rows["compress / decompress, 256x256"] == "-"
    assert rows["peak memory, 300 frames of 1280x720"] == "-"


def test_placement_row():
    bench = ("## Placement\n\n| placement | decodes per window before coding | compress s | frames/s | speed vs "
             "probe-gain |\n|---|---|---|---|---|\n| probe-gain | 2 (probes) | 1.84 | 35.4 | 1.00x |\n"
             "| error | 1 (full rate) | 1.25 | 51.8 | 1.46x |\n| predicted | 0 (router head) | 0.68 | 96.3 | 2.72x |\n")
    assert dict(readme_glance.glance_rows(bench))[
        "compress with the learned router head (`predicted`) against `probe-gain`, 256x256"] == (
        "2.72x as fast: 96.3 against 35.4 frames/s")
