"""Entropy coding (.itok version 2): sizes against version 1, and the coder's share of the time."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ..coding.compress import compress_video
from ..coding.decompress import decompress_video
from ..coding.tokenizer import Tokenizer
from ..eval.clips import prepare
from ..format.layout import V2_INDEX_ENTRY_EXTRA, v1_record_size
from ..format.reader import ItokReader
from ..model.store import (
    load_model,
)
from .common import THROUGHPUT_SIZES, log


def entropy_coder_seconds(itok: Path) -> tuple[float, float]:
    """Seconds the v2 entropy coder takes on the windows of `itok`, timed from the outside by running
    `infotok_cli.format.entropy` on them: encoding as the writer does (every window's mask and tokens, whose
    smaller form is then kept) and decoding as the reader does (the streams stored entropy-coded)."""
    from infotok_cli.format import entropy
    from infotok_cli.format.layout import CODEC_ENTROPY, MASK_ENTROPY

    encode = decode = 0.0
    with ItokReader(itok) as reader:
        for rec in reader.iter_windows():
            meta = rec.meta
            t0 = time.perf_counter()
            mask = entropy.encode_mask(rec.keep_mask)
            tokens = entropy.encode_tokens(rec.keep_mask, rec.tokens) if rec.tokens.size else b""
            t1 = time.perf_counter()
            if meta.mask_codec == MASK_ENTROPY:
                entropy.decode_mask(mask, meta.latent_shape, meta.kept_per_frame)
            if meta.token_codec == CODEC_ENTROPY:
                entropy.decode_tokens(tokens, rec.keep_mask)
            encode, decode = encode + t1 - t0, decode + time.perf_counter() - t1
    return encode, decode


def v1_equivalent_size(path: Path) -> tuple[int, int, list]:
    """Size of the version 1 file (packed mask, best of raw and zlib tokens) with the same header and
    windows as the version 2 file at `path`, its token payload bytes, and the decoded windows. Exact: the
    two versions differ only in the WINDOW records and in 8 bytes per index entry."""
    import zlib

    with ItokReader(path) as r:
        recs = list(r.iter_windows())
        size = r.file_size
    payloads = 0
    for rec in recs:
        raw = rec.tokens.astype("<u2").tobytes()
        payload = min(len(raw), len(zlib.compress(raw, 6))) if raw else 0
        size += v1_record_size(rec.meta.capacity, payload) - rec.meta.record_size - V2_INDEX_ENTRY_EXTRA
        payloads += payload
    return size, payloads, recs


def entropy_sizes(tok: Tokenizer, clips: list[Path], frames: int, tmp: Path) -> list[dict]:
    """v1 vs v2 file sizes, coded bits and order-0 entropy per dev-set clip, at 256x256 and native size,
    keep 1.0 and 0.5 (strategy window: every window keeps exactly that share)."""
    from infotok_cli.eval.codebook import token_entropy
    from infotok_cli.format.entropy import LEVELS

    rows = []
    for clip in clips:
        for label, size in (("256x256", (256, 256)), ("native", None)):
            src = prepare(clip, tmp / f"ent-{clip.stem}-{label}.mp4", size, frames)
            for beta in (1.0, 0.5):
                dst = tmp / "ent.itok"
                compress_video(src, dst, tok, beta=beta, strategy="window", overwrite=True)
                v1, v1_payload, recs = v1_equivalent_size(dst)
                metas = [r.meta for r in recs]
                kept = sum(m.kept for m in metas)
                te = token_entropy(np.concatenate([r.tokens for r in recs]).astype(np.int64), LEVELS)
                rows.append({
                    "clip": clip.name, "size": label, "beta": beta, "v1_bytes": v1, "v2_bytes": dst.stat().st_size,
                    "kept": kept, "positions": sum(m.capacity for m in metas),
                    "token_bytes": sum(m.token_size for m in metas), "mask_bytes": sum(m.mask_size for m in metas),
                    "v1_token_bytes": v1_payload,
                    "order0_joint_bits": te["joint_bits"], "order0_digit_bits": te["bits_per_token"],
                })  # fmt: skip
                log(f"entropy sizes {clip.name} {label} keep {beta}: v1 {v1} B, v2 {rows[-1]['v2_bytes']} B")
    return rows


def entropy_overhead(model: str | None, content: Path, frames: int, runs: int, tmp: Path) -> list[dict]:
    """Share of compress / decompress time spent in the entropy coder at 256x256 and 640x360 (medians)."""
    tok = Tokenizer(load_model(model, "cpu"), "cpu")
    rows = []
    for w, h in THROUGHPUT_SIZES:
        clip = prepare(content, tmp / f"ent-speed-{w}x{h}.mp4", (w, h), frames, lossless=False, loop=True)
        itok, out = tmp / "ent-speed.itok", tmp / "ent-speed.mp4"
        compress_video(clip, itok, tok, overwrite=True)  # warm-up
        c_total, c_ent, d_total, d_ent = [], [], [], []
        for _ in range(runs):
            c_total.append(compress_video(clip, itok, tok, overwrite=True).seconds)
            d_total.append(decompress_video(itok, out, tok, overwrite=True).seconds)
            encode, decode = entropy_coder_seconds(itok)
            c_ent.append(encode)
            d_ent.append(decode)
        med = statistics.median
        rows.append({"size": f"{w}x{h}", "frames": frames, "runs": runs,
                     "compress_s": med(c_total), "encode_s": med(c_ent),
                     "compress_overhead": med(c_ent) / (med(c_total) - med(c_ent)),
                     "decompress_s": med(d_total), "decode_s": med(d_ent),
                     "decompress_overhead": med(d_ent) / (med(d_total) - med(d_ent))})
        log(f"entropy overhead {w}x{h}: compress {100 * rows[-1]['compress_overhead']:.1f}%, "
            f"decompress {100 * rows[-1]['decompress_overhead']:.1f}%")
    return rows


def entropy_section(tok: Tokenizer, model: str | None, content: Path, clips: list[Path], rd_frames: int,
                    speed_frames: int, runs: int) -> list[str]:
    """The markdown of the entropy-coding section: v1 vs v2 sizes on the dev set and the time overhead."""
    with tempfile.TemporaryDirectory(prefix="infotok-bench-ent-") as tmpdir:
        tmp = Path(tmpdir)
        sizes = entropy_sizes(tok, clips, rd_frames, tmp) if clips else []
        overhead = entropy_overhead(model, content, speed_frames, runs, tmp)
    md = ["## Entropy coding (.itok version 2)", "",
          "Version 2 entropy-codes each window's keep mask and tokens (docs/FORMAT.md section 14); version 1 "
          "stored packed mask bits and the smaller of raw and zlib tokens. The version 1 size is exact: the same "
          "file with version 1 WINDOW records and index entries. Dev set (the clips of the rate-distortion "
          f"section), first {rd_frames} frames, strategy window. Bits per kept token = coded token bytes x 8 / "
          "kept tokens (version 1: its payload); mask bits per position = coded mask bytes x 8 / positions; "
          "order-0 entropy = empirical entropy of the kept tokens (joint: whole tokens; digits: sum over the 6 "
          "FSQ digits).", ""]
    if sizes:
        md += ["| size | keep | clips | v1 bytes | v2 bytes | smaller by | worst clip v2/v1 | bits/kept token v1 -> v2 "
               "| mask bits/position v2 | order-0 joint / digits |", "|---|---|---|---|---|---|---|---|---|---|"]
        for label in ("256x256", "native"):
            for beta in (1.0, 0.5):
                g = [r for r in sizes if r["size"] == label and r["beta"] == beta]
                v1, v2, kept = sum(r["v1_bytes"] for r in g), sum(r["v2_bytes"] for r in g), sum(r["kept"] for r in g)
                pos = sum(r["positions"] for r in g)
                joint = sum(r["order0_joint_bits"] * r["kept"] for r in g) / kept
                digits = sum(r["order0_digit_bits"] * r["kept"] for r in g) / kept
                md.append(f"| {label} | {beta:g} | {len(g)} | {v1:,} | {v2:,} | {100 * (1 - v2 / v1):.1f}% | "
                          f"{max(r['v2_bytes'] / r['v1_bytes'] for r in g):.3f} | "
                          f"{8 * sum(r['v1_token_bytes'] for r in g) / kept:.2f} -> "
                          f"{8 * sum(r['token_bytes'] for r in g) / kept:.2f} | "
                          f"{8 * sum(r['mask_bytes'] for r in g) / pos:.3f} | {joint:.2f} / {digits:.2f} |")
        md.append("")
    md += ["Time in the entropy coder (encode during compress, decode during decompress), as a share of the rest "
           f"of the command's time; medians of {runs} run(s), `compress` defaults, {speed_frames} frames.", "",
           "| size | compress s | of which encode s | overhead | decompress s | of which decode s | overhead |",
           "|---|---|---|---|---|---|---|"]
    for r in overhead:
        md.append(f"| {r['size']} | {r['compress_s']:.2f} | {r['encode_s']:.3f} | {100 * r['compress_overhead']:.1f}% "
                  f"| {r['decompress_s']:.2f} | {r['decode_s']:.3f} | {100 * r['decompress_overhead']:.1f}% |")
    md.append("")
    return md

