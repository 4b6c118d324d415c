"""Tests for the .itok container (docs/FORMAT.md).

Hostile and forward-compatibility files are built by `spec_file`, a small encoder written from the
spec independently of `infotok_cli.format` (its entropy coding is `itok_spec`, a second
implementation of section 14), so the tests also check that the implementation matches the document.
Version 2 is what the writer writes; version 1 files are built by the spec encoder with major=1.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import time
import tracemalloc
import zlib

import itok_spec
import msgpack
import numpy as np
import pytest

from infotok_cli.constants import CODEBOOK_SIZE
from infotok_cli.errors import ContainerError
from infotok_cli.format.header import Header, WindowMeta
from infotok_cli.format.layout import FORMAT_MAJOR, FORMAT_MINOR, MAGIC
from infotok_cli.format.reader import ItokReader, read_header_and_index
from infotok_cli.io.files import itok_writer

# ----------------------------------------------------------------------------- fixtures


def make_header(**kw) -> Header:
    """15 frames of 30x12 (padded 32x16: latent h=2, w=4), 9-frame windows overlapping by 1."""
    base = dict(
        source_name="clip.mp4", width=30, height=12, num_frames=15, fps_num=30000, fps_den=1001,
        time_base_num=1, time_base_den=30000, pts=[i * 1001 for i in range(15)], rotation=90,
        sar_num=4, sar_den=3, model_name="infotok-s", weights_sha256="ab" * 32, window=9, overlap=1,
        beta=0.25, strategy="global", padded_width=32, padded_height=16, encoder_version="0.1.0",
        extra={"note": "x", "nested": {"a": [1, 2.5, None, True, b"\x00"]}},
    )  # fmt: skip
    base.update(kw)
    return Header(**base)


def small_windows() -> list[tuple[int, int, int, np.ndarray, np.ndarray]]:
    """(frame_start, frame_count, padded_frames, mask, tokens) covering make_header()'s 15 frames:
    an all-kept window (repetitive tokens: zlib codec), a padded random one, a 1-frame empty one."""
    rng = np.random.default_rng(0)
    m0 = np.ones((3, 2, 4), bool)
    m1 = rng.random((3, 2, 4)) < 0.4
    m2 = np.zeros((1, 2, 4), bool)
    return [
        (0, 9, 0, m0, np.full(24, 7, np.int64)),
        (8, 6, 3, m1, rng.integers(0, CODEBOOK_SIZE, int(m1.sum()))),
        (14, 1, 0, m2, np.zeros(0, np.int64)),
    ]


def write_file(path, header: Header, windows, **kw) -> list[WindowMeta]:
    with itok_writer(path, header, **kw) as w:
        return [w.write_window(*win) for win in windows]


@pytest.fixture(scope="module")
def small_file(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("small") / "small.itok"
    write_file(path, make_header(), small_windows())
    return path.read_bytes()


def open_and_read_all(data: bytes) -> None:
    with ItokReader(io.BytesIO(data)) as r:
        for i in range(len(r.windows)):
            r.read_window(i)


# ----------------------------------------------------------------------------- spec encoder


def chunk(chunk_type: int, body: bytes, prefix: bytes = b"") -> bytes:
    head = struct.pack("<BI", chunk_type, len(body))
    return head + body + struct.pack("<I", zlib.crc32(prefix + head + body))


def header_map(header: Header, **over) -> dict:
    m = dataclasses.asdict(header)
    deltas = np.diff(np.array(header.pts, np.int64), prepend=np.int64(0))
    m["pts"] = zlib.compress(deltas.astype("<i8").tobytes(), 9)
    m.update(over)
    return m


def _smallest(forms: list[tuple[int, bytes]]) -> tuple[int, bytes]:
    return min(forms, key=lambda f: (len(f[1]), f[0]))


def window_spec(win: tuple, *, major: int = 2, **over) -> dict:
    """Spec-encoder input for one small_windows()-style tuple; `over` replaces any field."""
    frame_start, frame_count, padded, mask, tokens = win
    t, h, w = mask.shape
    raw = np.asarray(tokens).astype("<u2").tobytes()
    packed = zlib.compress(raw, 6)
    bits = np.packbits(mask.reshape(-1), bitorder="little").tobytes()
    kpf = mask.reshape(t, -1).sum(axis=1).tolist()
    spec = dict(
        frame_start=frame_start, frame_count=frame_count, t=t, h=h, w=w, padded_frames=padded,
        reserved=0, kept=int(mask.sum()), kept_per_frame=kpf, entry={}, before=[], major=major,
    )  # fmt: skip
    if major == 1:
        codec, payload = (1, packed) if raw and len(packed) < len(raw) else (0, raw)
        spec.update(codec=codec, payload=payload, mask=bits)
    else:  # section 6: the smallest form of each, entropy-coded streams only within section 14.5's bounds
        K = mask.astype(int).tolist()
        masks, toks = [(0, bits)], [(0, raw)]
        coded_frames = sum(1 for n in kpf if 0 < n < h * w)
        coded = itok_spec.encode_mask(K, t, h, w)
        if max(0, h * w * coded_frames // 2048 - 8, coded_frames - 8) <= len(coded) <= len(bits):
            masks.append((1, coded))
        if raw:
            toks.append((1, packed))
            coded = itok_spec.encode_tokens(K, [int(v) for v in tokens], t, h, w)
            wavefronts = len({k + y + x for k, y, x in zip(*np.nonzero(mask))})
            if max(0, len(tokens) // 8192 - 8, wavefronts - 8) <= len(coded) <= len(raw):
                toks.append((2, coded))
        (mask_codec, mask_data), (token_codec, payload) = _smallest(masks), _smallest(toks)
        spec.update(mask_codec=mask_codec, token_codec=token_codec, mask=mask_data, payload=payload)
    spec.update(over)
    return spec


def spec_file(hmap: dict, windows: list[dict], *, major=2, minor=0, entry_size=None, index_count=None,
              trailer=None, tail=b"") -> bytes:  # fmt: skip
    """Encode a file as docs/FORMAT.md describes; keyword arguments and the window dicts' "entry"
    (index entry overrides) and "before" (raw chunks placed before the window) make hostile files."""
    entry_size = entry_size or (40 if major >= 2 else 32)
    base = 40 if major >= 2 else 32
    pre = struct.pack("<4sBB", b"ITOK", major, minor)
    out = bytearray(pre + chunk(1, msgpack.packb(hmap, use_bin_type=True), prefix=pre))
    entries = []
    for i, w in enumerate(windows):
        for extra in w["before"]:
            out += extra
        if major >= 2:
            fixed = struct.pack(
                "<IIIIHHBBBBIII", w.get("window_index", i), w["frame_start"], w["frame_count"], w["t"], w["h"],
                w["w"], w["padded_frames"], w["mask_codec"], w["token_codec"], w["reserved"], w["kept"],
                w.get("mask_size", len(w["mask"])), w.get("token_size", len(w["payload"])),
            )  # fmt: skip
        else:
            fixed = struct.pack(
                "<IIIIHHBBHII", w.get("window_index", i), w["frame_start"], w["frame_count"], w["t"], w["h"],
                w["w"], w["padded_frames"], w["codec"], w["reserved"], w["kept"],
                w.get("payload_size", len(w["payload"])),
            )  # fmt: skip
        rec = chunk(2, fixed + w["mask"] + w["payload"])
        e = dict(
            offset=len(out), size=len(rec), frame_start=w["frame_start"], frame_count=w["frame_count"],
            t=w["t"], h=w["h"], w=w["w"], padded=w["padded_frames"], reserved=b"\0\0\0",
            extra=b"\xee" * (entry_size - base), kept_per_frame=w["kept_per_frame"],
        )  # fmt: skip
        if major >= 2:
            e.update(mask_codec=w["mask_codec"], token_codec=w["token_codec"], reserved=0,
                     mask_size=w.get("mask_size", len(w["mask"])), token_size=w.get("token_size", len(w["payload"])))
        e.update(w["entry"])
        entries.append(e)
        out += rec
    ibody = struct.pack("<II", len(entries) if index_count is None else index_count, entry_size)
    for e in entries:
        if major >= 2:
            fixed = struct.pack(
                "<QIIIIHHBBBBII", e["offset"], e["size"], e["frame_start"], e["frame_count"], e["t"], e["h"],
                e["w"], e["padded"], e["mask_codec"], e["token_codec"], e["reserved"], e["mask_size"],
                e["token_size"],
            )  # fmt: skip
        else:
            fixed = struct.pack(
                "<QIIIIHHB3s", e["offset"], e["size"], e["frame_start"], e["frame_count"], e["t"], e["h"],
                e["w"], e["padded"], e["reserved"],
            )  # fmt: skip
        ibody += fixed + e["extra"] + np.asarray(e["kept_per_frame"], "<u4").tobytes()
    index = chunk(3, ibody)
    tr = dict(index_offset=len(out), total_kept=sum(sum(e["kept_per_frame"]) for e in entries),
              window_count=len(entries), index_size=len(index))  # fmt: skip
    tr.update(trailer or {})
    out += index
    fields = struct.pack("<QQII", tr["index_offset"], tr["total_kept"], tr["window_count"], tr["index_size"])
    return bytes(out + fields + struct.pack("<I", zlib.crc32(fields)) + b"KOTI" + tail)


def small_spec(win_over: dict[int, dict] | None = None, major: int = 2) -> tuple[dict, list[dict]]:
    """The small file as spec-encoder input; win_over maps window number -> field overrides."""
    wins = [window_spec(w, major=major, **(win_over or {}).get(i, {})) for i, w in enumerate(small_windows())]
    return header_map(make_header()), wins


# ----------------------------------------------------------------------------- round trip


def test_spec_encoder_matches_writer(small_file):
    """The independent spec encoder and the writer produce the same bytes (also checks the fixtures)."""
    assert spec_file(*small_spec()) == small_file


def test_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    # 100 frames of 60x41 padded to 64x48 (latent 6x8), 17-frame windows overlapping by 3.
    header = make_header(
        source_name="ünïcode name.mkv", width=60, height=41, num_frames=100, padded_width=64,
        padded_height=48, window=17, overlap=3, beta=1.0, strategy="window",
        rotation=270, sar_num=0, sar_den=1,
        pts=[-(2**63), 2**63 - 1, 0] + sorted(rng.integers(-(10**12), 10**12, 97).tolist()),
        temporal_stride=4, spatial_stride=8, extra={"k": {"deep": [1, {"x": -1.5}]}, "s": "v"},
    )  # fmt: skip
    # Full windows, a shorter padded one, then a 1-frame window (t=1); all-kept and none-kept masks.
    spans = [(start, 17) for start in range(0, 71, 14)] + [(84, 15), (99, 1)]
    densities = [1.0, 0.0, 0.3, 0.9, 0.05, 0.5, 0.7]
    windows = []
    for i, (start, count) in enumerate(spans):
        padded = (1 - count) % 4
        mask = rng.random((1 + (count + padded - 1) // 4, 6, 8)) < densities[i % len(densities)]
        n = int(mask.sum())
        tokens = rng.integers(0, CODEBOOK_SIZE, n) if i % 2 else rng.integers(0, 3, n)  # raw / entropy codec
        windows.append((start, count, padded, mask, tokens.astype(np.int32)))

    path = tmp_path / "rt.itok"
    metas = write_file(path, header, windows)
    assert os.listdir(tmp_path) == ["rt.itok"]
    h2, idx, size = read_header_and_index(path)
    assert h2 == header and idx == metas and size == path.stat().st_size
    codecs = set()
    with ItokReader(path) as r:
        assert r.version == (FORMAT_MAJOR, FORMAT_MINOR) and len(r) == len(windows)
        r.verify()
        for (start, count, padded, mask, tokens), meta, rec in zip(
            windows, metas, r.iter_windows(), strict=True
        ):
            assert rec.meta == meta
            assert (meta.frame_start, meta.frame_count, meta.padded_frames) == (start, count, padded)
            assert meta.latent_shape == mask.shape and meta.capacity == mask.size
            assert meta.kept == int(mask.sum()) and meta.kept_per_frame == mask.sum(axis=(1, 2)).tolist()
            assert rec.keep_mask.dtype == bool and np.array_equal(rec.keep_mask, mask)
            assert rec.tokens.dtype == np.uint16 and np.array_equal(rec.tokens, tokens)
            data = path.read_bytes()
            assert (data[meta.offset + 5 + 21], data[meta.offset + 5 + 22]) == (meta.mask_codec, meta.token_codec)
            codecs.add((meta.mask_codec, meta.token_codec))
    # random tokens stay raw, three-code tokens are entropy-coded; masks packed (random) or coded
    assert {c for _, c in codecs} == {0, 2} and {m for m, _ in codecs} == {0, 1}
    assert {m.kept for m in metas} >= {0, 48} and metas[-1].latent_shape[0] == 1


def test_worked_example_in_spec():
    """The version 1 file of docs/FORMAT.md Appendix A.4, byte for byte: still read, and the spec encoder
    (major=1) still produces it."""
    golden = bytes.fromhex(
        "49544f4b01000183010000de0018ab736f757263655f6e616d65a8636c69702e6d7034a5776964746810a66865696768"
        "7408aa6e756d5f6672616d657306a76670735f6e756d19a76670735f64656e01ad74696d655f626173655f6e756d01ad"
        "74696d655f626173655f64656e19a3707473c40e78da636080004622690000a80006a8726f746174696f6e00a7736172"
        "5f6e756d01a77361725f64656e01aa6d6f64656c5f6e616d65a9696e666f746f6b2d73ae776569676874735f73686132"
        "3536d9403030303030303030303030303030303030303030303030303030303030303030303030303030303030303030"
        "3030303030303030303030303030303030303030a677696e646f7705a76f7665726c617000a462657461cb3fe0000000"
        "000000a87374726174656779a677696e646f77ac7061646465645f776964746810ad7061646465645f68656967687408"
        "af74656d706f72616c5f73747269646504ae7370617469616c5f73747269646508af656e636f6465725f76657273696f"
        "6ea5302e312e30a5657874726180669d7c2a022700000000000000000000000500000002000000010002000000000003"
        "000000060000000b07002a003ff94d5f1074022300000001000000050000000100000001000000010002000000000001"
        "0000000200000002e703e8ce860903540000000200000020000000920100000000000030000000000000000500000002"
        "00000001000200000000000200000001000000c2010000000000002c0000000500000001000000010000000100020000"
        "000000010000001dd98e88ee010000000000000400000000000000020000005d0000003a2342604b4f5449"
    )
    header = Header(
        source_name="clip.mp4", width=16, height=8, num_frames=6, fps_num=25, fps_den=1, time_base_num=1,
        time_base_den=25, pts=list(range(6)), rotation=0, sar_num=1, sar_den=1, model_name="infotok-s",
        weights_sha256="0" * 64, window=5, overlap=0, beta=0.5, strategy="window", padded_width=16,
        padded_height=8, encoder_version="0.1.0",
    )  # fmt: skip
    with ItokReader(io.BytesIO(golden)) as r:
        assert r.header == header and [m.offset for m in r.windows] == [402, 450]
        recs = list(r.iter_windows())
    assert recs[0].keep_mask.ravel().tolist() == [True, True, False, True]
    assert recs[0].tokens.tolist() == [7, 42, 63807] and recs[1].tokens.tolist() == [999]
    assert r.version == (1, 0) and [m.token_size for m in r.windows] == [6, 2]
    windows = [(0, 5, 0, recs[0].keep_mask, recs[0].tokens), (5, 1, 0, recs[1].keep_mask, recs[1].tokens)]
    hmap = header_map(header)
    if hmap["pts"] == bytes.fromhex("78da636080004622690000a80006"):  # same deflate output
        assert spec_file(hmap, [window_spec(w, major=1) for w in windows], major=1) == golden


# ----------------------------------------------------------------------------- corruption


def test_every_bit_flip_is_detected(small_file):
    assert 500 < len(small_file) < 2048
    undetected = []
    for pos in range(len(small_file)):
        for bit in range(8):
            data = bytearray(small_file)
            data[pos] ^= 1 << bit
            try:
                open_and_read_all(bytes(data))
            except ContainerError:
                continue
            undetected.append((pos, bit))
    assert not undetected


def test_every_truncation_is_rejected(small_file):
    for n in range(len(small_file)):
        with pytest.raises(ContainerError):
            ItokReader(io.BytesIO(small_file[:n]))
    with pytest.raises(ContainerError, match="truncated"):
        ItokReader(io.BytesIO(small_file[:-1]))
    with pytest.raises(ContainerError):  # nothing may follow the trailer
        ItokReader(io.BytesIO(small_file + b"\0"))


def test_index_is_read_without_token_payloads(tmp_path, small_file):
    path = tmp_path / "c.itok"
    metas = ItokReader(io.BytesIO(small_file)).windows
    data = bytearray(small_file)
    data[metas[1].offset + metas[1].record_size - 5] ^= 0x40  # last payload byte of window 1
    path.write_bytes(bytes(data))
    header, windows, size = read_header_and_index(path)
    assert windows == metas and size == len(data) and header == make_header()
    with ItokReader(path) as r:
        r.read_window(0)
        r.read_window(2)
        with pytest.raises(ContainerError, match="^checksum mismatch in window 1$"):
            r.read_window(1)
        with pytest.raises(ContainerError):
            r.verify()


def rejected_cheaply(data: bytes, match: str) -> None:
    """The file is rejected with a matching ContainerError, fast and without a large allocation."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ContainerError, match=match):
            open_and_read_all(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * 2**20 + 2 * len(data), peak
    assert time.perf_counter() - t0 < 1.0


def test_hostile_sizes_rejected_without_allocation(small_file):
    hmap, wins = small_spec()
    # header body_size of 2**31 (above the 16 MiB limit) and of 1 MiB (more than the file holds)
    rejected_cheaply(small_file[:7] + struct.pack("<I", 2**31) + small_file[11:], "above the limit")
    rejected_cheaply(small_file[:7] + struct.pack("<I", 2**20) + small_file[11:], "truncated")
    # MessagePack array claiming 2**32-1 elements
    hbody = msgpack.packb(hmap, use_bin_type=True)
    bad = hbody[:-1] + b"\xdd\xff\xff\xff\xff"
    pre = MAGIC + bytes([1, 0])
    rejected_cheaply(pre + chunk(1, bad, prefix=pre) + small_file[11 + len(hbody) + 4 :], "MessagePack")
    # pts inflating far beyond 8 * num_frames (a zlib bomb)
    bomb = zlib.compress(b"\0" * 50_000_000, 9)
    rejected_cheaply(spec_file(header_map(make_header(), pts=bomb), wins), "pts")
    # windows whose grid would hold more than 2**26 positions
    huge = make_header(width=16384, height=16384, padded_width=16384, padded_height=16384, window=4001)
    rejected_cheaply(spec_file(header_map(huge, window=4001), wins), "latent positions, above the limit")
    rejected_cheaply(spec_file(hmap, wins[:1] + [dict(wins[1], entry={"t": 2**32 - 1})] + wins[2:]), "shape")
    # counts beyond what the grid or the file holds
    rejected_cheaply(spec_file(hmap, wins, trailer={"window_count": 2**32 - 1}), "windows for 15 frames")
    rejected_cheaply(spec_file(hmap, wins, index_count=15, trailer={"window_count": 15}), "more than its")
    kpf = [2**32 - 1, 0, 0]
    rejected_cheaply(
        spec_file(hmap, [dict(wins[0], entry={"kept_per_frame": kpf})] + wins[1:]), "kept tokens"
    )
    big = dict(wins[0], kept=4_000_000_000)
    rejected_cheaply(spec_file(hmap, [big] + wins[1:]), "^window 0 does not match its index entry$")
    hmap1, wins1 = small_spec(major=1)
    big = dict(wins1[0], kept=4_000_000_000)
    rejected_cheaply(
        spec_file(hmap1, [big] + wins1[1:], major=1), "^window 0 declares 4000000000 tokens, above the limit"
    )
    rejected_cheaply(spec_file(hmap1, [dict(wins1[0], payload_size=2**32 - 1)] + wins1[1:], major=1), "payload size")
    # coded sizes in the index that the window cannot hold, or that claim more symbols than the bytes carry
    rejected_cheaply(spec_file(hmap, [dict(wins[0], token_size=2**32 - 1)] + wins[1:]), "coded tokens")
    rejected_cheaply(spec_file(hmap, [dict(wins[0], entry={"mask_size": 2**32 - 1})] + wins[1:]), "mask")
    rejected_cheaply(spec_file(hmap, wins[:2] + [dict(wins[2], entry={"offset": 2**63})]), "outside")
    rejected_cheaply(spec_file(hmap, wins, trailer={"index_offset": 2**64 - 1}), "index")
    # token payload inflating beyond 2 * kept
    tiny = zlib.compress(b"\0" * 20000, 9)
    assert len(tiny) <= 48
    rejected_cheaply(spec_file(hmap, [dict(wins[0], token_codec=1, payload=tiny)] + wins[1:]), "inflate")


def test_streams_below_their_work_floors_are_rejected_before_decoding(tmp_path):
    """A thin, long window (1x1 latent frames, 1001 of them) of one repeated token codes to a few bytes,
    but would cost the decoder 1001 wavefronts: section 14.5's one byte per wavefront rejects it (an
    honest writer stores such a window raw or zlib instead)."""
    from infotok_cli.format import entropy

    header = make_header(width=8, height=8, padded_width=8, padded_height=8, num_frames=4001, window=4001,
                         overlap=0, pts=list(range(4001)))  # fmt: skip
    mask = np.ones((1001, 1, 1), bool)
    tokens = np.full(1001, 5)
    coded = entropy.encode_tokens(mask, tokens)
    assert len(coded) < 100
    win = window_spec((0, 4001, 0, mask, tokens), token_codec=2, payload=coded)
    rejected_cheaply(spec_file(header_map(header), [win]), "fewer than the 993 its wavefronts need")
    # the writer (and the spec encoder) fall back on their own
    assert window_spec((0, 4001, 0, mask, tokens))["token_codec"] == 1
    assert write_file(tmp_path / "thin.itok", header, [(0, 4001, 0, mask, tokens)])[0].token_codec == 1


@pytest.mark.parametrize(
    "win_over, match",
    [
        ({1: {"mask": bytes([0x80, 0, 0])}}, "kept counts"),  # mask disagrees with the index
        ({0: {"token_codec": 7}}, "unsupported token codec 7"),
        ({0: {"mask_codec": 2}}, "unsupported mask codec 2"),
        ({0: {"entry": {"token_codec": 0}}}, "raw payload|does not match"),
        ({0: {"window_index": 1}}, "does not match its index entry"),
        ({0: {"frame_count": 5, "entry": {"frame_count": 9}}}, "does not match its index entry"),
        ({1: {"payload": b"\xff\xff" * 9}}, "above the codebook size"),
        ({1: {"token_codec": 0, "payload": b"\0" * 17}}, "payload"),
        ({1: {"entry": {"kept_per_frame": [0, 0, 0]}}}, "record size|kept|payload"),
        ({2: {"entry": {"size": 1000}}}, "record size"),
        ({0: {"entry": {"frame_start": 1}}}, "must start at 0"),
        ({1: {"entry": {"frame_start": 10, "frame_count": 5, "padded": 0}}}, "without a gap"),
        ({1: {"entry": {"frame_start": 0}}}, "in order"),
        ({1: {"entry": {"padded": 4}}}, "padding frames"),
        ({1: {"entry": {"padded": 2}}}, "not 1 \\+ 4k"),
        ({2: {"entry": {"frame_start": 15}}}, "outside the video"),
        ({0: {"entry": {"offset": 3}}}, "overlaps"),
        ({0: {"entry": {"h": 3}}}, "latent shape"),
    ],
)
def test_inconsistent_records_rejected(win_over, match):
    with pytest.raises(ContainerError, match=match):
        open_and_read_all(spec_file(*small_spec(win_over)))


def test_mask_padding_bits_must_be_zero():
    # 3 frames x 2 x 4 = 24 positions fill 3 bytes exactly; use a 1-frame window of 8x8 -> 16 x 12
    h = make_header(width=16, height=12, padded_width=16, padded_height=16)  # latent 2x2: 4 bits
    mask = np.zeros((1, 2, 2), bool)
    hmap = header_map(h, num_frames=1, pts=zlib.compress(b"\0" * 8))
    for good in (window_spec((0, 1, 0, mask, [])), window_spec((0, 1, 0, mask, []), mask_codec=0, mask=b"\0")):
        open_and_read_all(spec_file(hmap, [good]))
    bad = spec_file(hmap, [window_spec((0, 1, 0, mask, []), mask_codec=0, mask=b"\x10")])
    with pytest.raises(ContainerError, match="padding bits"):
        open_and_read_all(bad)


def test_trailer_and_index_consistency():
    hmap, wins = small_spec()
    for trailer, match in [
        ({"total_kept": 1}, "total kept"),
        ({"index_size": 5}, "index"),
        ({"window_count": 2}, "trailer says 2"),
    ]:
        with pytest.raises(ContainerError, match=match):
            open_and_read_all(spec_file(hmap, wins, trailer=trailer))
    with pytest.raises(ContainerError, match="entry size"):
        open_and_read_all(spec_file(hmap, wins, entry_size=16))
    with pytest.raises(ContainerError, match="cover|end at frame"):  # last window must reach num_frames
        open_and_read_all(spec_file(hmap, wins[:2]))


@pytest.mark.parametrize(
    "over, match",
    [
        ({"width": True}, "must be an integer"),
        ({"width": 0}, "outside"),
        ({"height": 16385}, "outside"),
        ({"num_frames": 10_000_001}, "outside"),
        ({"num_frames": 14}, "pts"),
        ({"fps_den": 0}, "outside"),
        ({"rotation": 45}, "rotation"),
        ({"weights_sha256": "AB" * 32}, "hex"),
        ({"weights_sha256": "ab" * 31}, "weights_sha256"),
        ({"window": 10}, "1 \\+ 4k"),
        ({"overlap": 9}, "overlap"),
        ({"beta": 0.0}, "beta"),
        ({"beta": 1}, "beta"),
        ({"beta": float("nan")}, "beta"),
        ({"strategy": "frame"}, "strategy"),
        ({"strategy": ["window"]}, "strategy"),
        ({"padded_width": 28}, "outside"),
        ({"padded_width": 36}, "multiple of 8"),
        ({"temporal_stride": 2}, "strides"),
        ({"model_name": ""}, "model_name"),
        ({"source_name": 5}, "string"),
        ({"extra": [1]}, "extra"),
        ({"pts": [0] * 15}, "pts"),
        ({"pts": zlib.compress(b"\0" * 8 * 15) + b"x"}, "pts"),
        ({"pts": b"not zlib"}, "pts"),
    ],
)
def test_header_fields_validated_by_reader(over, match):
    _, wins = small_spec()
    with pytest.raises(ContainerError, match=match):
        ItokReader(io.BytesIO(spec_file(header_map(make_header(), **over), wins)))


def test_header_missing_field_and_bad_messagepack():
    hmap, wins = small_spec()
    del hmap["sar_den"]
    with pytest.raises(ContainerError, match="missing field 'sar_den'"):
        ItokReader(io.BytesIO(spec_file(hmap, wins)))
    good = spec_file(*small_spec())
    hlen = struct.unpack_from("<I", good, 7)[0]
    body = good[11 : 11 + hlen]
    pre = good[:6]
    for bad, match in [
        (body + b"\xc0", "MessagePack"),  # trailing data
        (b"\x91" * 5000 + b"\xc0", "MessagePack"),  # nesting deeper than the unpacker's stack
        (b"\xa2\xff\xfe", "MessagePack"),  # invalid UTF-8
        (b"\xd6\xff\0\0\0\0", "MessagePack"),  # extension type (timestamp)
        (b"\x93\x01\x02\x03", "not a MessagePack map"),
    ]:
        data = pre + chunk(1, bad, prefix=pre) + good[11 + hlen + 4 :]
        with pytest.raises(ContainerError, match=match):
            ItokReader(io.BytesIO(data))


# ----------------------------------------------------------------------------- versions


def test_bad_magic_and_unknown_major(small_file):
    with pytest.raises(ContainerError, match=r"^not an \.itok file \(bad magic\)$"):
        ItokReader(io.BytesIO(b"RIFF" + small_file[4:]))
    with pytest.raises(ContainerError, match="bad magic"):
        ItokReader(io.BytesIO(b""))
    hmap, wins = small_spec()
    with pytest.raises(ContainerError, match=r"unsupported \.itok version 3\.0 \(this reader supports 1\.x and 2\.x\)"):
        ItokReader(io.BytesIO(spec_file(hmap, wins, major=3)))
    with pytest.raises(ContainerError, match=r"unsupported \.itok version 0\.7"):
        ItokReader(io.BytesIO(spec_file(*small_spec(major=1), major=0, minor=7)))


def test_version_1_files_are_read():
    """Version 1 layout (Appendix A.2, 32-byte index entries): read, verified and checked like version 2."""
    data = spec_file(*small_spec(major=1), major=1)
    with ItokReader(io.BytesIO(data)) as r:
        assert r.version == (1, 0) and r.header == make_header()
        r.verify()
        for (_, _, _, mask, tokens), rec in zip(small_windows(), r.iter_windows(), strict=True):
            assert np.array_equal(rec.keep_mask, mask) and np.array_equal(rec.tokens, tokens)
        assert [(m.mask_codec, m.token_codec) for m in r.windows] == [(0, -1)] * 3
        assert [m.mask_size for m in r.windows] == [3, 3, 1]
    for over, match in [({0: {"codec": 2}}, "unsupported token codec 2"),
                        ({1: {"payload": b"\xff\xff" * 9}}, "codebook")]:
        with pytest.raises(ContainerError, match=match):
            open_and_read_all(spec_file(*small_spec(over, major=1), major=1))
    with pytest.raises(ContainerError, match="entry size"):  # a v1 file with v2-sized entries is fine, smaller is not
        open_and_read_all(spec_file(*small_spec(major=1), major=1, entry_size=24))


def test_newer_minor_version_is_accepted():
    """A 1.3 file using every extension point a 1.0 reader must ignore."""
    hmap, wins = small_spec()
    hmap["future_key"] = {"anything": [1, 2, 3]}
    skippable = chunk(0x80, b"thumbnail") + chunk(0xFF, b"")
    wins[1] = dict(wins[1], before=[skippable], reserved=0xBE, entry={"reserved": 0xEF})
    data = spec_file(hmap, wins, minor=3, entry_size=48)
    with ItokReader(io.BytesIO(data)) as r:
        assert r.version == (2, 3) and r.header == make_header()
        r.verify()
        for (_, _, _, mask, tokens), rec in zip(small_windows(), r.iter_windows(), strict=True):
            assert np.array_equal(rec.keep_mask, mask) and np.array_equal(rec.tokens, tokens)


def test_verify_walks_the_chunk_sequence():
    hmap, wins = small_spec()
    reserved = dict(wins[1], before=[chunk(0x10, b"critical")])
    with ItokReader(io.BytesIO(spec_file(hmap, [wins[0], reserved, wins[2]]))) as r:
        r.read_window(1)  # the index-based reader never visits the gap...
        with pytest.raises(ContainerError, match="unexpected chunk type 0x10"):
            r.verify()  # ...the full check does
    bad_skippable = chunk(0x80, b"thumbnail")[:-1] + b"\0"
    with ItokReader(
        io.BytesIO(spec_file(hmap, [wins[0], dict(wins[1], before=[bad_skippable]), wins[2]]))
    ) as r:
        with pytest.raises(ContainerError, match="skippable"):
            r.verify()
    gap = dict(wins[1], before=[b"\0" * 3])  # bytes that are not a chunk
    with ItokReader(io.BytesIO(spec_file(hmap, [wins[0], gap, wins[2]]))) as r:
        with pytest.raises(ContainerError):
            r.verify()


# ----------------------------------------------------------------------------- writer


def test_overwrite_refused_and_allowed(tmp_path):
    path = tmp_path / "out.itok"
    path.write_bytes(b"precious")
    with pytest.raises(ContainerError, match="already exists"):
        itok_writer(path, make_header())
    assert path.read_bytes() == b"precious"
    write_file(path, make_header(), small_windows(), overwrite=True)
    assert read_header_and_index(path)[0] == make_header()
    # a file that appears while writing is not clobbered either
    other = tmp_path / "race.itok"
    with pytest.raises(ContainerError, match="already exists"):
        with itok_writer(other, make_header()) as w:
            for win in small_windows():
                w.write_window(*win)
            other.write_bytes(b"theirs")
    assert other.read_bytes() == b"theirs"
    assert sorted(os.listdir(tmp_path)) == ["out.itok", "race.itok"]


def test_no_temp_file_left_after_errors(tmp_path):
    path = tmp_path / "out.itok"
    with pytest.raises(RuntimeError):
        with itok_writer(path, make_header()) as w:
            w.write_window(*small_windows()[0])
            # an unnamed file (O_TMPFILE), or a hidden temporary: never the output's name
            assert all(n.startswith(".out.itok.") for n in os.listdir(tmp_path)) and not path.exists()
            raise RuntimeError("encoder crashed")
    assert os.listdir(tmp_path) == []
    with pytest.raises(ContainerError, match="video has 15 frames"):  # windows do not cover the video
        with itok_writer(path, make_header()) as w:
            w.write_window(*small_windows()[0])
    assert os.listdir(tmp_path) == []
    with pytest.raises(ContainerError, match="cannot write"):
        itok_writer(tmp_path / "missing_dir" / "x.itok", make_header())
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "over, match",
    [
        ({"strategy": "frame"}, "strategy"),
        ({"weights_sha256": "xyz"}, "weights_sha256"),
        ({"window": 8}, "1 \\+ 4k"),
        ({"overlap": 9}, "overlap"),
        ({"beta": 0}, "beta"),
        ({"beta": 1.5}, "beta"),
        ({"padded_width": 30}, "multiple of 8"),
        ({"padded_height": 8}, "outside"),
        ({"spatial_stride": 16}, "strides"),
        ({"pts": [0] * 14}, "14 timestamps for 15 frames"),
        ({"pts": [2**63] * 15}, "64-bit"),
        ({"pts": [0.5] * 15}, "integers"),
        ({"rotation": -90}, "rotation"),
        ({"extra": {"f": object()}}, "MessagePack"),
        ({"extra": {1: "int key"}}, "MessagePack"),
    ],
)
def test_writer_rejects_invalid_header(tmp_path, over, match):
    with pytest.raises(ContainerError, match=match):
        itok_writer(tmp_path / "x.itok", make_header(**over))
    assert os.listdir(tmp_path) == []


def test_writer_rejects_invalid_windows(tmp_path):
    path = tmp_path / "x.itok"
    (s0, c0, p0, m0, t0), (s1, c1, p1, m1, t1), last = small_windows()
    with itok_writer(path, make_header()) as w:
        for args, match in [
            ((0, 9, 0, m0.astype(np.uint8), t0), "bool array"),
            ((0, 9, 0, m0[:2], t0), "shape"),
            ((0, 9, 0, m0, t0[:-1]), "24 values"),
            ((0, 9, 0, m0, t0.astype(float)), "integer"),
            ((0, 9, 0, m0, np.full(24, CODEBOOK_SIZE)), "token values"),
            ((0, 9, 0, m0, np.full(24, -1)), "token values"),
            ((1, 9, 0, m0, t0), "must start at 0"),
            ((0, 8, 0, m0, t0), "1 \\+ 4k"),
            ((0, 9, 4, m0, t0), "padding frames"),
            ((0, 0, 1, m0[:1], t0[:8]), "no frames"),
            ((0.0, 9, 0, m0, t0), "integers"),
        ]:
            with pytest.raises(ContainerError, match=match):
                w.write_window(*args)
        w.write_window(np.int64(s0), c0, p0, m0, t0)
        for args, match in [
            ((0, 9, 0, m0, t0), "in order"),
            ((10, 5, 0, m1[:2], t1[: int(m1[:2].sum())]), "without a gap"),
            ((8, 8, 1, m1, t1), "outside the video"),
        ]:
            with pytest.raises(ContainerError, match=match):
                w.write_window(*args)
        w.write_window(s1, c1, p1, m1, t1)
        w.write_window(*last)
    with pytest.raises(ContainerError, match="closed"):
        w.write_window(*last)
    assert read_header_and_index(path)[1][2].kept == 0


def test_reader_api_errors(tmp_path, small_file):
    with pytest.raises(ContainerError, match="cannot open"):
        ItokReader(tmp_path / "nope.itok")
    r = ItokReader(io.BytesIO(small_file))
    with pytest.raises(ContainerError, match="no window 3"):
        r.read_window(3)
    r.close()
    with pytest.raises(ContainerError, match="closed"):
        r.read_window(0)


def test_error_messages_are_one_line():
    assert str(ContainerError("a\nb  c")) == "a b c"


def test_writer_accepts_numpy_scalars(tmp_path):
    header = make_header(
        width=np.int64(30), window=np.int32(9), beta=np.float32(0.25), pts=np.arange(15) * 1001
    )
    path = tmp_path / "np.itok"
    write_file(path, header, small_windows())
    stored = read_header_and_index(path)[0]
    assert stored == make_header() and type(stored.width) is int and type(stored.pts[0]) is int
