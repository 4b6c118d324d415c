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
    speed_row = re.search(r"^\| 256x256 \| cpu \| \d+ \| .*$", bench, flags=re.M).group(0)
    edited = bench.replace(speed_row, "| 256x256 | cpu | 65 | 1.5 | 2.5 | 43.3 | 26.0 |")
    assert dict(readme_glance.glance_rows(edited))["compress / decompress, 256x256"] == "1.5 / 2.5 frames/s"


def test_missing_sections_give_dashes():
    rows = dict(readme_glance.glance_rows("# infotok benchmarks\n\nnothing measured\n"))
    assert rows["compress / decompress, 256x256"] == "-"
    assert rows["peak memory, 300 frames of 1280x720"] == "-"
