"""Human-readable reports: the summaries the command line prints (Rich tables on a console) of a
compress, decompress, export, visualize, inspect, eval, models or doctor result. Every number comes from
the library's result objects; here it is only laid out.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..eval.tables import AVERAGE_COLUMNS, MATCHED_COLUMNS, average_cells
from .plots import sparkline


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def key_value_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for k, v in rows:
        table.add_row(k, v)
    return table


def psnr_line(psnr: list[float], short: int) -> str:
    """Achieved PSNR of a --target-psnr file, over its windows."""
    return (f"mean {sum(psnr) / len(psnr):.2f} dB, min {min(psnr):.2f} dB; "
            f"{short} of {len(psnr)} windows short of the target")


def audio_line(a: dict) -> str:
    """One line about a kept audio stream (audio.AudioTrack.summary())."""
    return (f"{a['codec']}, {a['channels']} ch ({a['layout'] or '?'}), {a['sample_rate']} Hz, "
            f"{a['duration_seconds']:.2f} s, {human_size(a['bytes'])}")


def source_size(r: dict) -> str:
    """`, scaled from WxH` where the coded size (`width` x `height`) is not the source's."""
    w, h = r.get("source_width") or r["width"], r.get("source_height") or r["height"]
    return "" if (w, h) == (r["width"], r["height"]) else f", scaled from {w}x{h}"


def compress_rows(r: dict, options: dict, model: str) -> list[tuple[str, str]]:
    """Summary of a compress result (`CompressResult.to_dict()`) coded with `options`."""
    target, cap = options.get("target_psnr"), options.get("max_bpp16")
    rate_control = (f"target {target:g} dB" + (f", max BPP16 {cap:g}" if cap else "") if target is not None
                    else f"{options['strategy'] or r['strategy']}, beta {options['beta']:g}")
    rows = [
        ("frames", f"{r['frames']} ({r['width']}x{r['height']}{source_size(r)})"
                   + (f", from {r['start_seconds']:.3f} s" if r.get("start_seconds") else "")),
        ("windows", f"{r['windows']} ({rate_control}, window {options['window']}, overlap {options['overlap']})"),
        ("tokens kept", f"{r['tokens_kept']:,} / {r['tokens_max']:,}"),
        ("keep rate", f"{r['keep_rate']:.4f}"),
        ("BPP16", f"{r['bpp16']:.4f}"),
        ("bits per pixel", f"{r['bits_per_pixel']:.5f}"),
        ("file size", human_size(r["file_bytes"])),
        ("model", model),
        ("time", f"{r['seconds']:.2f} s ({r['frames_per_second']:.1f} frames/s)"),
    ]
    if r["window_psnr"]:
        rows.insert(3, ("PSNR", psnr_line(r["window_psnr"], r["windows_short"])))
    if r["audio"]:
        rows.insert(-3, ("audio", audio_line(r["audio"])))
    return rows


def decompress_rows(r: dict, model: str, output_bytes: int) -> list[tuple[str, str]]:
    """Summary of a decompress result (`DecompressResult.to_dict()`)."""
    rows = [
        ("frames", f"{r['frames']} ({r['width']}x{r['height']})"),
        ("model", model),
        ("output", f"{human_size(output_bytes)}{' (lossless)' if r['lossless'] else ''}"),
        ("time", f"{r['seconds']:.2f} s ({r['frames_per_second']:.1f} frames/s)"),
    ]
    if r["audio"]:
        rows.insert(2, ("audio", audio_line(r["audio"])))
    return rows


def export_rows(r: dict) -> list[tuple[str, str]]:
    """Summary of an export (`io.files.export_tokens`)."""
    return [
        ("format", r["format"]),
        ("windows", f"{r['windows']} (latent grid {r['latent_hw'][0]}x{r['latent_hw'][1]})"),
        ("tokens kept", f"{r['tokens_kept']:,} / {r['tokens_possible']:,}"),
        ("arrays", ", ".join(r["arrays"])),
        ("file size", human_size(r["file_bytes"])),
    ]


def pack_rows(r: dict) -> list[tuple[str, str]]:
    """Summary of a pack (`coding.pack.pack_file`)."""
    return [
        ("frames", f"{r['frames']} ({r['width']}x{r['height']}), {r['windows']} windows"),
        ("tokens kept", f"{r['tokens_kept']:,} / {r['tokens_possible']:,} ({r['keep_rate']:.1%})"),
        ("model", f"{r['model_name']} (weights {r['weights_sha256'][:12]})"),
        ("file size", human_size(r["file_bytes"])),
    ]


def visualize_rows(r: dict, model: str, output_bytes: int) -> list[tuple[str, str]]:
    """Summary of a visualization (`report.visualize.visualize`)."""
    return [
        ("frames", f"{r['frames']} ({r['width']}x{r['height']})"),
        ("panels", " | ".join(r["panels"])),
        ("model", model),
        ("output", human_size(output_bytes)),
        ("time", f"{r['seconds']:.2f} s"),
    ]


def inspect_report(console: Console, insp, show_frames: bool) -> None:
    """Summary, per-window table and per-frame usage sparkline of an inspected file."""
    s = insp.summary
    extra_rows = []
    if s.get("target_psnr") is not None:
        cap = f", max BPP16 {s['max_bpp16']:g}" if s.get("max_bpp16") else ""
        extra_rows.append(("target PSNR", f"{s['target_psnr']:g} dB{cap}; achieved "
                                          f"{psnr_line([w['psnr'] for w in insp.windows], s['windows_short'])}"))
    if s.get("audio"):
        extra_rows.append(("audio", audio_line(s["audio"])))
    te = insp.token_entropy
    if te is not None:
        unread = f"; windows {', '.join(map(str, te['unreadable_windows']))} unreadable" \
            if te["unreadable_windows"] else ""
        extra_rows.append(("token entropy", f"{te['bits_per_token']:.2f} bits per token (sum of digit entropies; "
                                            f"joint {te['joint_bits']:.2f}), {te['distinct_codes']:,} distinct "
                                            f"codes in {te['tokens']:,} tokens{unread}"))
    console.print(key_value_table(s["file"], [
        ("source", s["source"]),
        ("geometry", f"{s['width']}x{s['height']}{source_size(s)}, {s['frames']} frames"
                     + (f" from {s['start_seconds']:.3f} s of the source" if s.get("start_seconds") else "")),
        ("frame rate", f"{s['fps']} ({s['fps_value']:.3f} fps), {s['duration_seconds']:.2f} s"),
        ("model", f"{s['model']} (weights {s['weights_sha256'][:12]})"),
        ("decodes with", ", ".join(s["decodes_with"]) if s.get("decodes_with") else
         "no installed model has these weights (import them: `infotok models import`)"),
        ("coding", (f"target PSNR {s['target_psnr']:g} dB" if s.get("target_psnr") is not None else
                    f"strategy {s['strategy']}, beta {s['beta']:g}")
                   + (f", placement {s['placement']}" if s.get("placement") else "")
                   + f", window {s['window']}, overlap {s['overlap']}, {s['windows']} windows"),
        ("tokens kept", f"{s['tokens_kept']:,} / {s['tokens_max']:,}"),
        ("keep rate", f"mean {s['keep_rate']:.4f}, min {s['window_keep_rate_min']:.4f}, "
                      f"max {s['window_keep_rate_max']:.4f} (over windows)"),
        ("BPP16", f"{s['bpp16']:.4f}"),
        ("bits per pixel", f"{s['bits_per_pixel']:.5f} ({human_size(s['file_bytes'])})"),
        ("compression", f"{s['compression_vs_raw_rgb']:.0f}x vs raw RGB, "
                        f"{s['compression_vs_fixed_rate_tokens']:.2f}x vs fixed-rate tokens"),
        ("coded", f"{s['bits_per_kept_token']:.2f} bits per kept token ({human_size(s['token_bytes'])}), "
                  f"{s['mask_bits_per_position']:.3f} mask bits per position ({human_size(s['mask_bytes'])}); "
                  f"format {s.get('format_version', '?')}"),
        *extra_rows,
    ]))
    table = Table(title="windows", title_justify="left")
    has_psnr = any("psnr" in w for w in insp.windows)
    cols = ("window", "frames", "latent txhxw", "kept", "possible", "keep rate", "bits/token", "mask bits/pos",
            *(("PSNR",) if has_psnr else ()), "per latent frame")
    for col in cols:
        table.add_column(col, justify="right" if col not in ("frames", "per latent frame") else "left")
    for w in insp.windows:
        t, h, ww = w["latent_shape"]
        last = w["frame_start"] + w["frame_count"] - 1
        psnr = (f"{w['psnr']:.2f}",) if has_psnr else ()
        table.add_row(str(w["window"]), f"{w['frame_start']}-{last}", f"{t}x{h}x{ww}",
                      f"{w['tokens_kept']:,}", f"{w['tokens_possible']:,}", f"{w['keep_rate']:.3f}",
                      f"{w['bits_per_kept_token']:.2f}", f"{w['mask_bits_per_position']:.3f}", *psnr,
                      sparkline([k / (h * ww) for k in w["kept_per_latent_frame"]], 40))
    console.print(table)
    if show_frames:
        ft = Table(title="frames", title_justify="left")
        for col in ("frame", "timestamp", "window", "latent frame", "kept", "possible", "keep fraction"):
            ft.add_column(col, justify="right")
        for r in insp.frames:
            ts = "" if r["timestamp"] is None else f"{r['timestamp']:.3f}"
            ft.add_row(str(r["frame"]), ts, str(r["window"]), str(r["latent_frame"]), str(r["tokens_kept"]),
                       str(r["tokens_possible"]), f"{r['keep_fraction']:.3f}")
        console.print(ft)
    label = "usage per frame "
    line = sparkline([r["keep_fraction"] for r in insp.frames], max(10, console.width - len(label)))
    console.print(f"[bold]{label}[/bold]{line}")


def eval_report(console: Console, report) -> None:
    """Averages per method and rate, then the router against the search at matched quality (the columns of
    `eval.evaluate.AVERAGE_COLUMNS` / `MATCHED_COLUMNS`, as `markdown_table` writes them)."""
    # Piped output would be cut to 80 columns (Rich's default off a terminal) and truncate cells; Rich
    # caps print(width=...) at the console's own width, so a wider console is made for it.
    if not console.is_terminal:
        console = Console(file=console.file, width=160, highlight=False, no_color=console.no_color)
    table = Table(title=f"mean over {len(report.settings['videos'])} video(s), model {report.settings['model']}",
                  title_justify="left")
    for name, _ in AVERAGE_COLUMNS:
        table.add_column(name, justify="left" if name == "method" else "right")
    for a in report.averages():
        table.add_row(*average_cells(a))
    console.print(table)
    matched = report.matched()
    if matched:
        mt = Table(title="ELBO router vs binary search at matched quality", title_justify="left")
        for name, _ in MATCHED_COLUMNS:
            mt.add_column(name, justify="right")
        for m in matched:
            mt.add_row(*[cell(m) for _, cell in MATCHED_COLUMNS])
        console.print(mt)


def models_table(infos: list[dict]) -> Table:
    """The shipped models (`model.store.shipped_model_info`) with their measured quality and speed."""
    table = Table(title="shipped models")
    for col in ("name", "parameters", "size", "keep 1 / 0.5 / 0.25 PSNR", "compress / decompress fps"):
        table.add_column(col)
    for m in infos:
        q, s = m["measured"].get("quality", {}), m["measured"].get("speed", {})
        psnr = " / ".join(f"{q[k]:.2f}" for k in ("psnr@1", "psnr@0.5", "psnr@0.25") if k in q) or "not measured"
        fps = (f"{s['compress_fps']:.1f} / {s['decompress_fps']:.1f}" if "compress_fps" in s else "not measured")
        table.add_row(m["name"] + (" (default)" if m["default"] else ""), f"{m['parameters'] / 1e6:.2f} M",
                      human_size(m["file_bytes"]), psnr + (" dB" if q else ""), fps)
    return table


MODELS_NOTE = ("PSNR: dev set, 256x256 centre crops, 33 frames (scripts/dev_quality.py); "
               "fps: 256x256, 65 frames, defaults, on 2 CPU cores (the same script, --speed).")


def doctor_rows(env: dict) -> list[tuple[str, str]]:
    """What `report.doctor.environment()` found, one row per item."""
    video, cpu, models_ = env["video"], env["cpu"], env["models"]
    encoders = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in video.get("encoders", {}).items())
    return [
        ("infotok", env["infotok"]), ("python", f"{env['python']} ({env['platform']})"),
        ("torch", f"{env['torch']['version']}, {env['torch']['threads']} threads"),
        ("PyAV", f"{video.get('pyav')} (FFmpeg libavcodec {video.get('ffmpeg_libraries', {}).get('libavcodec')})"),
        ("encoders", encoders), ("ffmpeg binary", video.get("ffmpeg_binary") or "not found (eval's x264/x265)"),
        ("CPU", f"{cpu['model']} ({cpu['cores']} cores)"),
        ("vector extensions", " ".join(cpu["vector_extensions"]) or "none detected"),
        ("bf16 native on CPU", "yes" if cpu["bf16_native"] else "no (emulated: very slow)"),
        *[(d["device"], d["name"]) for d in env["devices"] if d["device"] != "cpu"],
        *[(f"precision auto ({dev})", f"{p['precision']}: {p['reason']}")
          for dev, p in env["precision"].items() if isinstance(p, dict)],
        ("models", f"{', '.join(models_['shipped'])} (shipped, default {models_['default']})"
                   + (f"; {', '.join(models_['imported'])} (imported)" if models_["imported"] else "")),
        ("model store", models_["user_dir"]),
    ]
