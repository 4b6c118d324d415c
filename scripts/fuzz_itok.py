"""Coverage-guided fuzzing of the .itok reader with atheris (`make fuzz`; not part of `make test`).

Every input is opened, fully verified (`ItokReader.verify`: every chunk walked, every window decoded) and
summarised the way `infotok inspect` does. Any exception other than `ContainerError` is a crash; libFuzzer
flags inputs that take longer than -timeout seconds (hangs) or push the process past -rss_limit_mb.

Random bytes rarely get past the checksums, so a structure-aware mutator does most of the work: it parses
an input into preamble, HEADER map, the chunks between header and index, index entries and trailer,
mutates one of them (a header field, a window's geometry or codec fields, an index entry, the coded mask
or token streams, the chunk sequence, the version bytes), re-serialises it with consistent offsets (most
of the time) and recomputes every CRC, so the code behind the checksums is exercised. The rest of the
time libFuzzer's own byte-level mutations run.

Usage: python scripts/fuzz_itok.py [libFuzzer flags] [corpus dirs]
  e.g. python scripts/fuzz_itok.py -runs=100000 -timeout=1 -rss_limit_mb=2048 fuzz-corpus
The seeds (valid version 2 files written here, plus tests/data/*.itok) are added to the first corpus
directory when it is empty. libFuzzer stops at the first crash or hang and writes the input next to
-artifact_prefix; with -print_final_stats=1 it ends with the number of inputs run and the peak RSS.
"""

from __future__ import annotations

import io
import random
import struct
import sys
import tempfile
import zlib
from pathlib import Path

import atheris
import msgpack
import numpy as np

with atheris.instrument_imports():
    from infotok_cli.errors import ContainerError
    from infotok_cli.format import chunks, entropy  # noqa: F401  (instrumented for coverage)
    from infotok_cli.format.header import Header
    from infotok_cli.format.reader import ItokReader
    from infotok_cli.io.files import itok_writer
    from infotok_cli.report import stats

ROOT = Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------- target


def test_one_input(data: bytes) -> None:
    try:
        with ItokReader(io.BytesIO(data)) as r:
            stats.summarize(r.header, r.windows, r.file_size)
            stats.window_rows(r.windows)
            r.verify()
    except ContainerError:
        pass


# ----------------------------------------------------------------------------- structure


def parse(data: bytes) -> dict | None:
    """The parts of a file, or None when it is too broken to have parts."""
    try:
        if len(data) < 6 + 9 + 32 or data[:4] != b"ITOK":
            return None
        hsize = struct.unpack_from("<I", data, 7)[0]
        header = data[11 : 11 + hsize]
        index_offset, total_kept, _count, index_size = struct.unpack_from("<QQII", data, len(data) - 32)
        if not 15 + hsize <= index_offset <= len(data) - 32 - 9:
            return None
        chunks, pos = [], 15 + hsize
        while pos < index_offset:
            ctype, size = struct.unpack_from("<BI", data, pos)
            if pos + 9 + size > index_offset:
                return None
            chunks.append([ctype, bytearray(data[pos + 5 : pos + 5 + size])])
            pos += 9 + size
        isize = struct.unpack_from("<I", data, index_offset + 1)[0]
        index = bytearray(data[index_offset + 5 : index_offset + 5 + isize])
        return {"major": data[4], "minor": data[5], "header": bytearray(header), "chunks": chunks,
                "index": index, "total_kept": total_kept}
    except struct.error:
        return None


def _entries(f: dict) -> list[int]:
    """Offsets of the index entries in the index body (fixed part then kept_per_frame)."""
    idx = f["index"]
    if len(idx) < 8:
        return []
    count, esize = struct.unpack_from("<II", idx, 0)
    out, pos = [], 8
    for _ in range(min(count, 4096)):
        if pos + max(esize, 24) > len(idx):
            break
        out.append(pos)
        t = struct.unpack_from("<I", idx, pos + 20)[0]
        pos += esize + 4 * min(t, 1 << 20)
    return out


def serialize(f: dict, fix_offsets: bool) -> bytes:
    pre = b"ITOK" + bytes([f["major"] & 0xFF, f["minor"] & 0xFF])
    head = struct.pack("<BI", 1, len(f["header"]))
    out = bytearray(pre + head + f["header"])
    out += struct.pack("<I", zlib.crc32(bytes(out)))
    records = []
    for ctype, body in f["chunks"]:
        records.append((ctype, len(out), len(body) + 9))
        c = struct.pack("<BI", ctype, len(body)) + bytes(body)
        out += c + struct.pack("<I", zlib.crc32(c))
    index = bytearray(f["index"])
    total_kept = f["total_kept"]
    if fix_offsets:
        windows = [r for r in records if r[0] == 2]
        total_kept = 0
        for j, pos in enumerate(_entries({"index": index})):
            if j < len(windows):
                struct.pack_into("<QI", index, pos, windows[j][1], windows[j][2])
            esize = struct.unpack_from("<I", index, 4)[0]
            t = struct.unpack_from("<I", index, pos + 20)[0]
            kpf = index[pos + esize : pos + esize + 4 * t]
            total_kept += int(np.frombuffer(bytes(kpf[: len(kpf) // 4 * 4]), "<u4").sum())
    index_offset = len(out)
    c = struct.pack("<BI", 3, len(index)) + bytes(index)
    out += c + struct.pack("<I", zlib.crc32(c))
    count = struct.unpack_from("<I", index, 0)[0] if len(index) >= 4 else 0
    tr = struct.pack("<QQII", index_offset, total_kept & (2**64 - 1), count, len(c) + 4)
    out += tr + struct.pack("<I", zlib.crc32(tr)) + b"KOTI"
    return bytes(out)


INTERESTING = [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 255, 256, 4095, 4096, 65535, 65536,
               2**24, 2**26, 2**26 + 1, 2**31 - 1, 2**31, 2**32 - 1]


def _value(rng: random.Random, old: int, bits: int) -> int:
    choice = rng.random()
    if choice < 0.4:
        v = rng.choice(INTERESTING)
    elif choice < 0.7:
        v = old + rng.choice([-4, -3, -2, -1, 1, 2, 3, 4])
    else:
        v = rng.getrandbits(bits)
    return v % (1 << bits)


# (offset, struct format) of the fields a mutator changes
WINDOW_FIELDS_V2 = [(0, "I"), (4, "I"), (8, "I"), (12, "I"), (16, "H"), (18, "H"), (20, "B"), (21, "B"), (22, "B"),
                    (23, "B"), (24, "I"), (28, "I"), (32, "I")]
ENTRY_FIELDS_V2 = [(0, "Q"), (8, "I"), (12, "I"), (16, "I"), (20, "I"), (24, "H"), (26, "H"), (28, "B"), (29, "B"),
                   (30, "B"), (31, "B"), (32, "I"), (36, "I")]
BITS = {"B": 8, "H": 16, "I": 32, "Q": 64}


def _mutate_field(rng: random.Random, buf: bytearray, fields: list[tuple[int, str]], base: int = 0) -> bool:
    off, fmt = rng.choice(fields)
    if base + off + struct.calcsize(fmt) > len(buf):
        return False
    (old,) = struct.unpack_from("<" + fmt, buf, base + off)
    struct.pack_into("<" + fmt, buf, base + off, _value(rng, old, BITS[fmt]))
    return True


def _mutate_stream(rng: random.Random, body: bytearray) -> tuple[int, int] | None:
    """Change the coded mask or token stream of a version 2 window body; returns (offset of the size field
    in an index entry, new size) so that the index can agree."""
    if len(body) < 36:
        return None
    msize, tsize = struct.unpack_from("<II", body, 28)
    which = rng.randrange(2)
    start = 36 + (msize if which else 0)
    size = tsize if which else msize
    stream = bytearray(body[start : start + size])
    op = rng.randrange(6)
    if op == 0 and stream:
        i = rng.randrange(len(stream))
        stream[i] ^= 1 << rng.randrange(8)
    elif op == 1 and stream:
        stream[rng.randrange(len(stream))] = rng.randrange(256)
    elif op == 2:
        stream = stream[: rng.randrange(len(stream) + 1) // 4 * 4]
    elif op == 3:
        stream += bytes(rng.randrange(256) for _ in range(4 * rng.randint(1, 4)))
    elif op == 4:
        stream = bytearray(rng.getrandbits(8) for _ in range(len(stream)))
    else:  # a valid-looking tail: a non-zero last word
        stream += struct.pack("<I", rng.randrange(1, 2**32))
    body[start : start + size] = stream
    struct.pack_into("<I", body, 32 if which else 28, len(stream))
    return (36 if which else 32), len(stream)


def _mutate_header(rng: random.Random, f: dict) -> None:
    try:
        m = msgpack.unpackb(bytes(f["header"]), raw=False, strict_map_key=False)
    except Exception:
        return
    if not isinstance(m, dict) or not m:
        return
    key = rng.choice(list(m))
    old = m[key]
    choices = [rng.choice(INTERESTING), -1, 0.5, float("nan"), "x", None, b"\0", [1], {"a": 1}, True,
               2**63 - 1, -(2**63)]
    if isinstance(old, int) and not isinstance(old, bool):
        choices += [old + 1, old - 1, old * 2, old // 2]
    if key == "pts" and isinstance(old, bytes):
        choices += [old[:-1], old + b"\0", zlib.compress(b"\0" * rng.randrange(0, 200))]
    m[key] = rng.choice(choices)
    if rng.random() < 0.1:
        del m[key]
    try:
        f["header"] = bytearray(msgpack.packb(m, use_bin_type=True))
    except (OverflowError, ValueError, TypeError):
        pass  # a value MessagePack cannot hold: leave the header as it was


def mutate(data: bytes, max_size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    f = parse(data)
    if f is None or rng.random() < 0.2:
        return atheris.Mutate(data, max_size)
    windows = [c for c in f["chunks"] if c[0] == 2]
    op = rng.randrange(10)
    if op == 0:
        _mutate_header(rng, f)
    elif op in (1, 2) and windows:
        _mutate_field(rng, rng.choice(windows)[1], WINDOW_FIELDS_V2)
    elif op in (3, 4):
        entries = _entries(f)
        if entries:
            base = rng.choice(entries)
            if rng.random() < 0.8:
                _mutate_field(rng, f["index"], ENTRY_FIELDS_V2, base)
            else:  # a kept_per_frame count
                esize = struct.unpack_from("<I", f["index"], 4)[0]
                t = struct.unpack_from("<I", f["index"], base + 20)[0]
                if t:
                    _mutate_field(rng, f["index"], [(esize + 4 * rng.randrange(min(t, 64)), "I")], base)
        elif len(f["index"]) >= 8:
            _mutate_field(rng, f["index"], [(0, "I"), (4, "I")])
    elif op in (5, 6, 7) and windows:
        j = rng.randrange(len(windows))
        changed = _mutate_stream(rng, windows[j][1])
        entries = _entries(f)
        if changed and j < len(entries) and entries[j] + changed[0] + 4 <= len(f["index"]) and rng.random() < 0.9:
            struct.pack_into("<I", f["index"], entries[j] + changed[0], changed[1])
    elif op == 8:
        k = rng.randrange(4)
        if k == 0 and f["chunks"]:
            del f["chunks"][rng.randrange(len(f["chunks"]))]
        elif k == 1 and f["chunks"]:
            f["chunks"].insert(rng.randrange(len(f["chunks"]) + 1), list(rng.choice(f["chunks"])))
        else:
            ctype = rng.choice([0x00, 0x04, 0x10, 0x7F, 0x80, 0x81, 0xFF])
            body = bytearray(rng.randbytes(rng.randrange(16)))
            f["chunks"].insert(rng.randrange(len(f["chunks"]) + 1), [ctype, body])
    else:
        f["major"], f["minor"] = rng.choice([(1, 0), (2, 0), (2, 1), (3, 0), (0, 0), (2, 255)])
    out = serialize(f, fix_offsets=rng.random() < 0.9)
    return out if len(out) <= max_size else atheris.Mutate(data, max_size)


# ----------------------------------------------------------------------------- seeds


def seed_files() -> list[bytes]:
    """Small valid version 2 files (entropy-coded and packed/raw windows, padding, overlap, empty and full
    masks) and the committed test files."""
    rng = np.random.default_rng(0)
    seeds = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, (width, height, frames, window, overlap) in enumerate(
            [(30, 12, 15, 9, 1), (16, 8, 6, 5, 0), (40, 24, 21, 17, 3)]
        ):
            header = Header(
                source_name="seed.mp4", width=width, height=height, num_frames=frames, fps_num=25, fps_den=1,
                time_base_num=1, time_base_den=25, pts=list(range(frames)), rotation=0, sar_num=1, sar_den=1,
                model_name="infotok-s", weights_sha256="0" * 64, window=window, overlap=overlap, beta=0.5,
                strategy="window", padded_width=(width + 7) // 8 * 8, padded_height=(height + 7) // 8 * 8,
            )  # fmt: skip
            path = Path(tmp) / f"seed{n}.itok"
            with itok_writer(path, header) as w:
                start = 0
                while True:
                    count = min(window, frames - start)
                    padded = (1 - count) % 4
                    t = 1 + (count + padded - 1) // 4
                    shape = (t, header.padded_height // 8, header.padded_width // 8)
                    mask = rng.random(shape) < rng.choice([0.0, 0.3, 0.7, 1.0])
                    vocab = rng.integers(0, 64000, 4)
                    tokens = vocab[rng.integers(0, 4, int(mask.sum()))]
                    w.write_window(start, count, padded, mask, tokens)
                    if start + count >= frames:
                        break
                    start += window - overlap
            seeds.append(path.read_bytes())
    seeds += [p.read_bytes() for p in sorted((ROOT / "tests" / "data").glob("*.itok"))]
    return seeds


def main() -> None:
    args = sys.argv[1:]
    dirs = [a for a in args if not a.startswith("-")]
    if dirs:
        corpus = Path(dirs[0])
        corpus.mkdir(parents=True, exist_ok=True)
        if not any(corpus.iterdir()):
            for i, data in enumerate(seed_files()):
                (corpus / f"seed-{i}.itok").write_bytes(data)
    atheris.Setup([sys.argv[0], *args], test_one_input, custom_mutator=mutate)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
