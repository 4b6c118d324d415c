"""The README's at-a-glance table is the one scripts/readme_glance.py derives from docs/BENCHMARKS.md."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_glance", ROOT / "scripts" / "readme_glance.py")
readme_glance = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_glance)


def test_readme_table_matches_last_bench_report():
    readme = (ROOT / "README.md").read_text()
    bench = (ROOT / "docs" / "BENCHMARKS.md").read_text()
    assert readme_glance.render(readme, bench) == readme, "run `python scripts/readme_glance.py` (make bench does)"


def test_rows_follow_the_report():
    bench = (ROOT / "docs" / "BENCHMARKS.md").read_text()
    speed_row = re.search(r"^\| 256x256 \| cpu \| (fp32 \| )?\d+ \| .*$", bench, flags=re.M)
    precision = speed_row.group(1) or ""
    edited = bench.replace(speed_row.group(0), f"| 256x256 | cpu | {precision}65 | 1.5 | 2.5 | 43.3 | 26.0 |")
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
