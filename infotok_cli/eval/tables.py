"""The evaluation's tables, torch-free: cell formatting and the columns of the averages and of the router
against the search, shared by `markdown_table` (the bench, infotok_cli/bench/) and the command line's Rich tables."""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["AVERAGE_COLUMNS", "MATCHED_COLUMNS", "average_cells", "fmt", "markdown_table"]


def fmt(v, digits: int = 3) -> str:
    """Table cell: '-' for missing, 'inf' for identical videos."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.{digits}f}"
    return str(v)

# Columns of the averages table (header, cell of an `averages()` entry): the CLI's table and
# `markdown_table` both use them.
AVERAGE_COLUMNS: tuple[tuple[str, Callable[[dict], str]], ...] = (
    ("method", lambda a: a["method"]), ("rate", lambda a: f"{a['rate']:g}"), ("keep", lambda a: fmt(a["keep_rate"])),
    ("BPP16", lambda a: fmt(a["bpp16"])), ("bits/pixel", lambda a: fmt(a["bits_per_pixel"], 4)),
    ("PSNR", lambda a: fmt(a["psnr"], 2)), ("SSIM", lambda a: fmt(a["ssim"], 4)),
    ("ST-LPIPS", lambda a: fmt(a.get("lpips"), 4)), ("passes/window", lambda a: fmt(a["passes_per_window"], 1)),
    ("encode s", lambda a: fmt(a["encode_seconds"], 2)), ("decode s", lambda a: fmt(a["decode_seconds"], 2)),
)
# Columns of the ELBO-router-vs-search table (`EvalReport.matched()` entries).
MATCHED_COLUMNS: tuple[tuple[str, Callable[[dict], str]], ...] = (
    ("rate", lambda m: f"{m['rate']:g}"), ("keep elbo", lambda m: fmt(m["elbo_keep_rate"])),
    ("keep search", lambda m: fmt(m["search_keep_rate"])), ("PSNR elbo", lambda m: fmt(m["elbo_psnr"], 2)),
    ("PSNR search", lambda m: fmt(m["search_psnr"], 2)),
    ("passes elbo", lambda m: fmt(m["elbo_passes_per_window"], 1)),
    ("passes search", lambda m: fmt(m["search_passes_per_window"], 1)),
    ("encode s elbo", lambda m: fmt(m["elbo_encode_seconds"], 2)),
    ("encode s search", lambda m: fmt(m["search_encode_seconds"], 2)),
)


def average_cells(a: dict) -> list[str]:
    """The cells of one `averages()` entry, in AVERAGE_COLUMNS order."""
    return [cell(a) for _, cell in AVERAGE_COLUMNS]


def markdown_table(report) -> str:
    """The averages as a Markdown table (the bench; the CLI prints the same columns with Rich)."""
    head = [name for name, _ in AVERAGE_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(average_cells(a)) + " |" for a in report.averages()]
    return "\n".join(lines)
