"""Entropy coding of .itok version 2 (docs/FORMAT.md section 14): spec conformance, exact round trips,
determinism, a committed file, and the reader's behaviour on garbage (property tests, bounded examples)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import constriction
import itok_spec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infotok_cli.constants import CODEBOOK_SIZE
from infotok_cli.errors import ContainerError
from infotok_cli.format import entropy
from infotok_cli.format.header import Header
from infotok_cli.format.reader import ItokReader
from infotok_cli.io.files import itok_writer

DATA = Path(__file__).parent / "data"


def random_window(rng: np.random.Generator, shape: tuple[int, int, int], density: float, vocab: int):
    """A mask of the given density and tokens drawn from `vocab` distinct codes (few codes: many matches)."""
    mask = rng.random(shape) < density
    codes = rng.integers(0, CODEBOOK_SIZE, vocab)
    return mask, codes[rng.integers(0, vocab, int(mask.sum()))]


# ----------------------------------------------------------------------------- the spec, exactly


def test_rans_and_frequencies_follow_the_spec_pseudocode():
    """constriction, fed by entropy._probabilities, produces the words of section 14.1's encoder for the
    frequencies of section 14.2, and the spec decoder reads them back."""
    rng = np.random.default_rng(1)
    for _ in range(300):
        n, levels = int(rng.integers(1, 80)), int(rng.choice([2, 4, 5, 8]))
        w_min = int(rng.choice([entropy.TOKEN_W_MIN, entropy.MASK_W_MIN]))
        counts = rng.integers(1, 10 ** int(rng.integers(1, 9)), (n, levels))
        freqs = entropy.quantize(counts, w_min)
        assert (freqs.sum(axis=1) == entropy.TOTAL).all() and (freqs >= w_min).all()
        assert freqs.tolist() == [itok_spec.frequencies(row, w_min) for row in counts.tolist()]
        symbols = rng.integers(0, levels, n)
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(symbols.astype(np.int32), entropy._FAMILY, entropy._probabilities(freqs))
        data = coder.get_compressed().astype("<u4").tobytes()
        assert data == itok_spec.rans_encode(list(zip(symbols.tolist(), freqs.tolist())))
        dec = itok_spec.RansDecoder(data)
        assert [dec.decode(f) for f in freqs.tolist()] == symbols.tolist()
        dec.finish()


def test_worked_example_v2_in_spec():
    """docs/FORMAT.md section 15: the streams, and a few rows of its symbol tables."""
    K = [[[1, 1], [1, 0]], [[1, 0], [0, 1]]]
    mask, tokens = np.array(K, bool), np.array([7, 7, 42, 7, 63807])
    assert entropy.encode_mask(mask) == bytes.fromhex("0000801e")
    assert entropy.encode_tokens(mask, tokens) == bytes.fromhex("2baa0911b89ae10042050000")
    trace: list = []
    itok_spec.encode_tokens(K, tokens.tolist(), 2, 2, 2, trace)
    assert [r[2:] for r in trace[6:9]] == [(0, 15, 4194304, 0), (1, 20, 4194304, 4194304), (0, 36, 4194304, 0)]
    assert trace[15][2:] == (7, 640, 9422848, 7354368) and trace[16][2:] == (7, 647, 1050624, 15726592)
    trace = []
    itok_spec.encode_mask(K, 2, 2, 2, trace)
    assert [r[3] for r in trace] == [43, 43, 107, 107, 30, 10, 90, 90]
    assert entropy.decode_tokens(bytes.fromhex("2baa0911b89ae10042050000"), mask).tolist() == tokens.tolist()


@pytest.mark.parametrize("seed", range(6))
def test_implementation_matches_the_spec_implementation(seed):
    """Byte-identical streams from entropy.py and from tests/itok_spec.py (written from the text)."""
    rng = np.random.default_rng(seed)
    for _ in range(8):
        shape = tuple(int(v) for v in rng.integers(1, 6, 3))
        mask, tokens = random_window(rng, shape, float(rng.choice([0.0, 0.3, 0.7, 1.0, rng.random()])),
                                     int(rng.choice([1, 3, 50])))  # fmt: skip
        if seed % 2:  # a full first frame: not coded
            mask[0] = True
            tokens = rng.integers(0, 5, int(mask.sum()))
        t, h, w = shape
        K = mask.astype(int).tolist()
        coded_mask = entropy.encode_mask(mask)
        assert coded_mask == itok_spec.encode_mask(K, t, h, w)
        coded_tokens = entropy.encode_tokens(mask, tokens)
        assert coded_tokens == itok_spec.encode_tokens(K, tokens.tolist(), t, h, w)
        kpf = mask.reshape(t, -1).sum(axis=1).tolist()
        assert itok_spec.decode_mask(coded_mask, t, h, w, kpf) == K
        assert itok_spec.decode_tokens(coded_tokens, K, t, h, w) == tokens.tolist()


def test_round_trip_edges():
    rng = np.random.default_rng(2)
    cases = [((1, 1, 1), 1.0), ((1, 1, 1), 0.0), ((9, 32, 32), 0.5), ((3, 1, 40), 0.8), ((2, 40, 1), 0.6),
             ((5, 7, 3), 0.0), ((4, 6, 6), 1.0)]  # fmt: skip
    for shape, density in cases:
        for vocab in (1, 7, 2000):
            mask, tokens = random_window(rng, shape, density, vocab)
            tokens[: min(2, tokens.size)] = [0, CODEBOOK_SIZE - 1][: min(2, tokens.size)]
            kpf = mask.reshape(shape[0], -1).sum(axis=1).tolist()
            mask2 = entropy.decode_mask(entropy.encode_mask(mask), shape, kpf)
            assert np.array_equal(mask2, mask)
            tokens2 = entropy.decode_tokens(entropy.encode_tokens(mask, tokens), mask2)
            assert tokens2.dtype == np.uint16 and np.array_equal(tokens2, tokens)


def test_streams_of_static_content_respect_the_size_floors():
    """The floors of section 14.5 hold for the cheapest content there is: one token everywhere, and a
    mask that repeats, so an honest writer can always store its streams."""
    shape = (9, 90, 160)
    mask = np.ones(shape, bool)
    tokens = np.full(mask.sum(), 12345)
    coded = entropy.encode_tokens(mask, tokens)
    assert entropy.min_token_bytes(tokens.size) <= len(coded) < 200
    half = np.zeros(shape, bool)
    half[:, :, :80] = True
    kpf = half.reshape(9, -1).sum(axis=1).tolist()
    coded = entropy.encode_mask(half)
    assert entropy.min_mask_bytes(shape, kpf) <= len(coded) < 8000
    assert np.array_equal(entropy.decode_mask(coded, shape, kpf), half)


# ----------------------------------------------------------------------------- committed file, determinism


def test_committed_v2_file_decodes_to_the_expected_tokens(tmp_path):
    data = (DATA / "v2-small.itok").read_bytes()
    expected = json.loads((DATA / "v2-small.expected.json").read_text())["windows"]
    with ItokReader(io.BytesIO(data)) as r:
        assert r.version == (2, 0)
        r.verify()
        assert [(m.mask_codec, m.token_codec) for m in r.windows] == [(1, 2), (1, 2)]
        recs = list(r.iter_windows())
        header = r.header
    windows = []
    for rec, exp in zip(recs, expected, strict=True):
        assert list(rec.keep_mask.shape) == exp["shape"]
        assert np.flatnonzero(rec.keep_mask.reshape(-1)).tolist() == exp["kept_positions"]
        assert rec.tokens.tolist() == exp["tokens"]
        m = rec.meta
        windows.append((m.frame_start, m.frame_count, m.padded_frames, rec.keep_mask, rec.tokens))
    # Writing the same windows again gives the same bytes (the writer is deterministic).
    with itok_writer(tmp_path / "again.itok", header) as w:
        for win in windows:
            w.write_window(*win)
    if zlib.compress(np.diff(np.arange(36), prepend=0).astype("<i8").tobytes(), 9) in data:  # same deflate
        assert (tmp_path / "again.itok").read_bytes() == data


def test_committed_v1_file_is_still_read():
    with ItokReader(DATA / "v1-example.itok") as r:
        assert r.version == (1, 0)
        r.verify()
        assert [rec.tokens.tolist() for rec in r.iter_windows()] == [[7, 42, 63807], [999]]


def _infotok(*args: object, threads: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env.pop("INFOTOK_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "infotok_cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_compress_is_byte_identical_run_after_run_and_with_1_or_2_threads(tmp_path, moving_video, tokenizer):
    import torch

    from infotok_cli.coding.compress import compress_video

    outs, before = [], torch.get_num_threads()
    try:
        for i, threads in enumerate((1, 2, 1)):
            torch.set_num_threads(threads)
            out = tmp_path / f"run{i}.itok"
            compress_video(moving_video, out, tokenizer, beta=0.5, window=17)
            outs.append(out.read_bytes())
    finally:
        torch.set_num_threads(before)
    assert outs[0] == outs[1] == outs[2]
    with ItokReader(io.BytesIO(outs[0])) as r:
        assert r.version[0] == 2 and {m.token_codec for m in r.windows} == {2}
        r.verify()


# ----------------------------------------------------------------------------- the reader on garbage


def _hostile_header() -> Header:
    return Header(
        source_name="g.mp4", width=96, height=64, num_frames=9, fps_num=25, fps_den=1, time_base_num=1,
        time_base_den=25, pts=list(range(9)), rotation=0, sar_num=1, sar_den=1, model_name="infotok-s",
        weights_sha256="0" * 64, window=9, overlap=0, beta=0.5, strategy="window", padded_width=96,
        padded_height=64,
    )  # fmt: skip


def test_garbage_streams_end_in_a_clean_error_quickly():
    rng = np.random.default_rng(4)
    mask = rng.random((5, 16, 16)) < 0.5
    kpf = mask.reshape(5, -1).sum(axis=1).tolist()
    outcomes = {"ok": 0, "error": 0}
    t0 = time.perf_counter()
    for i in range(100):
        data = rng.integers(0, 2**32, int(rng.integers(0, 64)), dtype=np.uint64).astype("<u4").tobytes()
        if i % 3 == 0:
            data = entropy.encode_tokens(mask, rng.integers(0, CODEBOOK_SIZE, int(mask.sum())))
            pos = int(rng.integers(0, len(data)))
            data = data[:pos] + bytes([data[pos] ^ 0x10]) + data[pos + 1 :]
        for decode in (lambda d: entropy.decode_tokens(d, mask), lambda d: entropy.decode_mask(d, mask.shape, kpf)):
            try:
                decode(data)
                outcomes["ok"] += 1
            except entropy.EntropyError:
                outcomes["error"] += 1
    assert outcomes["error"] > 175  # garbage is almost always caught
    assert time.perf_counter() - t0 < 60


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_any_bytes_open_or_raise_container_error(data):
    try:
        with ItokReader(io.BytesIO(b"ITOK\x02\x00" + data)) as r:
            r.verify()
    except ContainerError:
        pass
    try:
        with ItokReader(io.BytesIO(data)) as r:
            r.verify()
    except ContainerError:
        pass


@pytest.fixture(scope="module")
def v2_file() -> bytes:
    return (DATA / "v2-small.itok").read_bytes()


SLOW_OK = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]


@settings(max_examples=300, deadline=None, suppress_health_check=SLOW_OK)
@given(st.data())
def test_damaged_v2_file_is_read_or_rejected_with_container_error(v2_file, data):
    """Bytes of a real v2 file overwritten anywhere, with the CRCs of the damaged chunks recomputed so that
    the damage reaches the parsers and the entropy decoder."""
    buf = bytearray(v2_file)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    fixed = bytes(_recompute_crcs(buf))
    for candidate in (bytes(buf), fixed):
        try:
            with ItokReader(io.BytesIO(candidate)) as r:
                r.verify()
        except ContainerError:
            pass


def _recompute_crcs(buf: bytearray) -> bytearray:
    """Fix every chunk checksum and the trailer's where the framing still parses."""
    import struct

    if len(buf) < 11 + 32:
        return buf
    pos = 6
    while pos + 5 <= len(buf) - 32:
        size = struct.unpack_from("<I", buf, pos + 1)[0]
        end = pos + 5 + size
        if end + 4 > len(buf) - 32:
            break
        start = 0 if pos == 6 else pos
        struct.pack_into("<I", buf, end, zlib.crc32(bytes(buf[start:end])))
        pos = end + 4
    struct.pack_into("<I", buf, len(buf) - 8, zlib.crc32(bytes(buf[-32:-8])))
    return buf


@settings(max_examples=60, deadline=None, suppress_health_check=SLOW_OK)
@given(
    t=st.integers(1, 3), h=st.integers(1, 8), w=st.integers(1, 12), density=st.floats(0, 1),
    vocab=st.integers(1, 64000), seed=st.integers(0, 2**32 - 1),
)  # fmt: skip
def test_v2_round_trip_of_random_masks_and_tokens_is_exact(tmp_path, t, h, w, density, vocab, seed):
    rng = np.random.default_rng(seed)
    frames = 1 + 4 * (t - 1)
    header = Header(
        source_name="r.mp4", width=8 * w, height=8 * h, num_frames=frames, fps_num=25, fps_den=1,
        time_base_num=1, time_base_den=25, pts=list(range(frames)), rotation=0, sar_num=1, sar_den=1,
        model_name="infotok-s", weights_sha256="0" * 64, window=frames, overlap=0, beta=0.5, strategy="window",
        padded_width=8 * w, padded_height=8 * h,
    )  # fmt: skip
    mask, tokens = random_window(rng, (t, h, w), density, min(vocab, 64000))
    path = tmp_path / f"rt-{seed}.itok"
    with itok_writer(path, header, overwrite=True) as wr:
        meta = wr.write_window(0, frames, 0, mask, tokens)
    with ItokReader(path) as r:
        assert r.windows[0] == meta
        rec = r.read_window(0)
    assert np.array_equal(rec.keep_mask, mask) and np.array_equal(rec.tokens, tokens)


# ----------------------------------------------------------------------------- inspect


def test_inspect_reports_coded_sizes_and_token_entropy_of_a_real_clip(tmp_path, moving_video, tokenizer):
    """`infotok inspect --json` on a compressed clip: the coded sizes come from the index (checked against
    the WINDOW chunks' own fields, parsed here by hand) and the token entropy matches a plain-Python
    computation over the decoded tokens."""
    import math
    import struct
    from collections import Counter

    from rich.console import Console

    from infotok_cli.coding.compress import compress_video
    from infotok_cli.report.stats import inspect_file
    from infotok_cli.report.text import inspect_report

    path = tmp_path / "clip.itok"
    compress_video(moving_video, path, tokenizer, beta=0.6, window=17)
    proc = _infotok("inspect", path, "--json", threads=1)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    data = path.read_bytes()
    with ItokReader(path) as r:
        metas = r.windows
        tokens = [int(v) for rec in r.iter_windows() for v in rec.tokens]
    mask_bytes = token_bytes = 0
    for m, row in zip(metas, report["windows"], strict=True):
        fields = struct.unpack_from("<IIIIHHBBBBIII", data, m.offset + 5)  # the WINDOW chunk's fixed part
        mcodec, tcodec, kept, msize, tsize = fields[7], fields[8], fields[10], fields[11], fields[12]
        got = (row["mask_codec"], row["token_codec"], row["mask_bytes"], row["token_bytes"])
        assert got == (mcodec, tcodec, msize, tsize)
        assert row["bits_per_kept_token"] == pytest.approx(8 * tsize / kept if kept else 0.0)
        mask_bytes, token_bytes = mask_bytes + msize, token_bytes + tsize
    s = report["summary"]
    assert s["format_version"] == "2.0" and (s["mask_bytes"], s["token_bytes"]) == (mask_bytes, token_bytes)
    assert s["bits_per_kept_token"] == pytest.approx(8 * token_bytes / len(tokens))
    assert s["mask_bits_per_position"] == pytest.approx(8 * mask_bytes / sum(m.capacity for m in metas))

    te = report["token_entropy"]
    assert te["tokens"] == len(tokens) > 0 and te["distinct_codes"] == len(set(tokens))
    assert te["levels"] == [8, 8, 8, 5, 5, 5] and te["unreadable_windows"] == []

    def entropy_bits(values: list[int]) -> float:
        n = len(values)
        return -sum(c / n * math.log2(c / n) for c in Counter(values).values())

    digit_bits, base = [], 1
    for level in (8, 8, 8, 5, 5, 5):
        digit_bits.append(entropy_bits([v // base % level for v in tokens]))
        base *= level
    assert te["digit_bits"] == pytest.approx(digit_bits, abs=1e-4)
    assert te["bits_per_token"] == pytest.approx(sum(digit_bits), abs=1e-3)
    assert te["joint_bits"] == pytest.approx(entropy_bits(tokens), abs=1e-4)
    # The text report shows the same numbers.
    console = Console(record=True, width=200)
    inspect_report(console, inspect_file(path), False)
    text = " ".join(console.export_text().split())
    assert f"{te['bits_per_token']:.2f} bits per token" in text
    assert f"{s['bits_per_kept_token']:.2f} bits per kept token" in text
