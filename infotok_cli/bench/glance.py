"""Regenerate the README's "Quality and speed at a glance" table from docs/BENCHMARKS.md.

The one step that writes the README: `make glance` runs it after `make bench` (which writes only its
report), so every figure in that table comes from the last bench report and none is typed by hand. Only
the table and the line that dates it are rewritten; the prose around them is left alone. A section the
bench skipped gives a row of "-" rather than a stale figure. Reads and writes text only (no torch).

    python -m infotok_cli.bench.glance [--bench docs/BENCHMARKS.md] [--readme README.md]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

GLANCE_HEADING = "## Quality and speed at a glance"
DATED_LINE = re.compile(r"^These are numbers from the last `make bench` \([^)]*\)")

Table = list[dict[str, str]]


def sections(markdown: str) -> dict[str, str]:
    """Heading text (without the #s) -> the text up to the next heading of any level."""
    out: dict[str, str] = {}
    title, body = "", []
    for line in markdown.splitlines():
        if line.startswith("#"):
            out[title] = "\n".join(body)
            title, body = line.lstrip("#").strip(), []
        else:
            body.append(line)
    out[title] = "\n".join(body)
    return out


def tables(text: str) -> list[Table]:
    """Every Markdown table in text, each as a list of rows keyed by the header cells."""
    found: list[Table] = []
    block: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if len(block) >= 2:
            cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in block]
            header: list[str] = []
            for name in cells[0]:  # a repeated header cell (two "overhead" columns) gets a suffix: "overhead 2"
                header.append(name if name not in header else f"{name} {header.count(name) + 1}")
            found.append([dict(zip(header, row)) for row in cells[2:]])
        block = []
    return found


def section_tables(secs: dict[str, str], prefix: str) -> list[Table]:
    """The tables of the first section whose heading starts with prefix ([] if there is none)."""
    return next((tables(body) for title, body in secs.items() if title.startswith(prefix)), [])


def first_table(secs: dict[str, str], prefix: str) -> Table:
    found = section_tables(secs, prefix)
    return found[0] if found else []


def row(table: Table, **match: str) -> dict[str, str]:
    for r in table:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return {}


def num(value: str | None) -> float | None:
    try:
        return float(str(value).replace(",", "").rstrip("%"))
    except ValueError:
        return None


def glance_rows(bench: str) -> list[tuple[str, str]]:
    secs = sections(bench)
    rd = first_table(secs, "Dev set at 256x256")
    speed = first_table(secs, "Speed")
    memory = first_table(secs, "Memory")
    control = first_table(secs, "Quality control")
    entropy_tables = section_tables(secs, "Entropy coding")

    router_rows = sorted((r for r in rd if r.get("method") == "elbo"), key=lambda r: float(r["rate"]), reverse=True)
    psnr = [row(rd, method="fixed").get("PSNR", "-"), *(r["PSNR"] for r in router_rows)]
    keep_labels = " / ".join(["1.0", *(r["rate"] for r in router_rows)])
    rows = [(f"PSNR, dev set 256x256, keep {keep_labels}", " / ".join(psnr) + " dB" if rd else "-")]

    elbo = row(rd, method="elbo", rate="0.5")
    router, random_ = num(elbo.get("PSNR")), num(row(rd, method="random", rate="0.5").get("PSNR"))
    rows.append(("ELBO router vs uniform random placement, keep 0.5",
                 f"{router - random_:+.2f} dB" if router is not None and random_ is not None else "-"))

    search = row(rd, method="search", rate="0.5")
    rows.append(("ElasticTok-style search at the router's quality",
                 f"{search['keep']} of the tokens where the router keeps 0.5; {search['passes/window']} passes "
                 f"per window instead of {elbo.get('passes/window', '-')}" if search else "-"))

    x264 = row(rd, method="x264", rate="0.5")
    rows.append(("x264 at the router's file size, keep 0.5",
                 f"{x264['PSNR']} dB against {elbo['PSNR']} dB" if x264 and elbo else "-"))

    for size in ("256x256", "640x360"):
        runs = [r for r in speed if r.get("size") == size]
        rows.append((f"compress / decompress, {size}",
                     "; ".join(f"{r['compress frames/s']} / {r['decompress frames/s']} frames/s"
                               + (f" ({r['precision']})" if "precision" in r else "") for r in runs) or "-"))

    placement = first_table(secs, "Placement")
    probe, predicted = row(placement, placement="probe-gain"), row(placement, placement="predicted")
    rows.append(("compress with the learned router head (`predicted`) against `probe-gain`, 256x256",
                 f"{predicted['speed vs probe-gain']} as fast: {predicted['frames/s']} against {probe['frames/s']} "
                 "frames/s" if probe and predicted else "-"))

    big = row(memory, input="1280x720, 300 frames")
    rows.append(("peak memory, 300 frames of 1280x720",
                 f"{num(big['compress peak RSS'].split()[0]):,.0f} MiB compress, "
                 f"{num(big['decompress peak RSS'].split()[0]):,.0f} MiB decompress" if big else "-"))

    sizes, timing = (entropy_tables + [[], []])[:2]
    smaller = {(r["size"], r["keep"]): r["smaller by"] for r in sizes}
    rows.append(("`.itok` v2 against v1, dev set, keep 1.0 / 0.5",
                 f"{smaller.get(('256x256', '1'), '-')} / {smaller.get(('256x256', '0.5'), '-')} smaller at "
                 f"256x256; {smaller.get(('native', '1'), '-')} / {smaller.get(('native', '0.5'), '-')} at native "
                 "size" if smaller else "-"))
    share = row(timing, size="256x256")
    rows.append(("entropy coder's share of the time, 256x256",
                 f"{share['overhead']} of compress, {share['overhead 2']} of decompress" if share else "-"))

    if control:
        windows = sum(int(r["windows"]) for r in control)
        within = all(r["short"] == "0" for r in control)
        worst = max(num(r["worst above target"].split()[0]) or 0.0 for r in control)
        passes = [num(r["passes/window"]) for r in control]
        below = [r["target below full rate"].split()[0] for r in control]
        rows.append((f"`--target-psnr`, {windows} windows at {below[0]}-{below[-1]} dB below full rate",
                     f"{'every window at or above its target' if within else 'some windows short of target'}, "
                     f"at most {worst:.2f} dB above; {min(passes):.1f}-{max(passes):.1f} passes per window"))
    return rows


def bench_date_and_frames(bench: str) -> tuple[str, str]:
    date = re.search(r"Date \(UTC\): (\d{4}-\d{2}-\d{2})", bench)
    frames = re.search(r"--rd-frames (\d+)", bench)
    return (date.group(1) if date else "unknown date", frames.group(1) if frames else "all")


def render(readme: str, bench: str) -> str:
    lines = readme.splitlines()
    try:
        start = lines.index(GLANCE_HEADING)
    except ValueError:
        sys.exit(f"error: README has no '{GLANCE_HEADING}' section")
    top = next(i for i in range(start, len(lines)) if lines[i] == "| | |")
    end = top + 2
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    table = ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in glance_rows(bench))]
    lines[top:end] = table
    date, frames = bench_date_and_frames(bench)
    for i in range(top + len(table), min(len(lines), top + len(table) + 4)):
        if DATED_LINE.match(lines[i]):
            lines[i] = DATED_LINE.sub(
                f"These are numbers from the last `make bench` ({date}; the dev set here is {frames} frames "
                "per clip)", lines[i])
            break
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m infotok_cli.bench.glance", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", default="docs/BENCHMARKS.md")
    ap.add_argument("--readme", default="README.md")
    args = ap.parse_args(argv)
    readme = Path(args.readme)
    new = render(readme.read_text(), Path(args.bench).read_text())
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(new)
    tmp.replace(readme)
    print(f"{readme}: at-a-glance table regenerated from {args.bench}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
