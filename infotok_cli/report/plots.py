"""Report outputs of `infotok inspect`: the per-frame usage sparkline, the per-frame CSV and the PNG
bar chart of kept tokens.

Everything here works on the plain row dicts of `stats.inspect_file` (no tokens, no model), and every
file is written atomically (temporary file in the same directory, then rename) so an interrupted run
never leaves a half-written report under the real name.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from ..io.atomic import atomic_write

SPARK_CHARS = "▁▂▃▄▅▆▇█"
FRAME_COLUMNS = ("frame", "timestamp", "window", "latent_frame", "tokens_kept", "tokens_possible",
                 "keep_fraction")


def sparkline(values: Sequence[float], width: int) -> str:
    """Unicode block sparkline of values in [0, 1], averaged down to at most `width` characters.

    The scale is absolute (empty block = nothing kept, full block = everything kept) so sparklines of
    different files compare directly.
    """
    n = len(values)
    width = max(1, int(width))
    if n == 0:
        return ""
    if n > width:  # average equal-ish bins: each character stands for n/width frames
        values = [sum(values[i * n // width:(i + 1) * n // width]) / ((i + 1) * n // width - i * n // width)
                  for i in range(width)]
    top = len(SPARK_CHARS) - 1
    return "".join(SPARK_CHARS[min(top, max(0, round(float(v) * top)))] for v in values)


def frames_csv(frame_rows: Sequence[dict]) -> str:
    """One CSV row per frame with the columns of FRAME_COLUMNS (and a header line)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FRAME_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in frame_rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in FRAME_COLUMNS})
    return buf.getvalue()


def write_frames_csv(frame_rows: Sequence[dict], path: str | Path, overwrite: bool = False) -> Path:
    text = frames_csv(frame_rows)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline=""), overwrite)


def plot_frame_usage(frame_rows: Sequence[dict], window_rows: Sequence[dict], path: str | Path,
                     overwrite: bool = False, title: str | None = None) -> Path:
    """Bar chart (PNG) of the tokens kept per frame, coloured by window, with the capacity as a dashed
    line, window starts as vertical lines and overlapping frames shaded.

    Uses matplotlib's object API with the Agg canvas (no pyplot, no display, no global state).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frames = [r["frame"] for r in frame_rows]
    kept = [r["tokens_kept"] for r in frame_rows]
    possible = [r["tokens_possible"] for r in frame_rows]
    palette = ("#3b75af", "#ef8636")  # alternate colours so neighbouring windows stay distinguishable
    colours = [palette[r["window"] % 2] for r in frame_rows]

    fig = Figure(figsize=(min(16.0, max(6.0, len(frames) / 25)), 3.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar(frames, kept, width=1.0, color=colours, linewidth=0, label="tokens kept")
    if frames:
        ax.step(frames, possible, where="mid", color="0.4", linestyle="--", linewidth=1,
                label="tokens possible")
    for prev, cur in zip(window_rows[:-1], window_rows[1:], strict=True):
        prev_end = prev["frame_start"] + prev["frame_count"]
        ax.axvline(cur["frame_start"] - 0.5, color="crimson", linewidth=0.8)
        if prev_end > cur["frame_start"]:  # frames coded by both windows (blended on decode)
            ax.axvspan(cur["frame_start"] - 0.5, prev_end - 0.5, color="crimson", alpha=0.12, linewidth=0)
    ax.set_xlabel("frame")
    ax.set_ylabel("tokens per latent frame")
    ax.set_xlim(-0.5, max(frames, default=0) + 0.5)
    ax.set_ylim(0, max(possible, default=1) * 1.05 or 1)
    # Legend above the axes, right-aligned, so that it never hides bars; the title goes on the left.
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize="small", frameon=False)
    if title:
        ax.set_title(title, fontsize="medium", loc="left")
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"), overwrite)


def write_inspection_outputs(insp, csv_path: str | Path | None = None, plot: str | Path | None = None,
                             overwrite: bool = False) -> list[str]:
    """The per-frame CSV and PNG of an inspection (`stats.inspect_file`) written to files (atomically);
    returns a line per file written."""
    written = []
    if csv_path is not None:
        write_frames_csv(insp.frames, csv_path, overwrite=overwrite)
        written.append(f"wrote {csv_path} ({len(insp.frames)} frames)")
    if plot is not None:
        plot_frame_usage(insp.frames, insp.windows, plot, overwrite=overwrite,
                         title=f"{insp.summary['source']}: tokens kept per frame")
        written.append(f"wrote {plot}")
    return written
