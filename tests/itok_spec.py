"""A second implementation of docs/FORMAT.md section 14 (entropy coding of .itok version 2 windows),
written from the text in plain Python, without numpy vectorisation or constriction.

The tests compare its bytes with `infotok_cli.format.entropy`'s, so they check that the spec is precise enough
to reimplement, and that the implementation follows it. Slow (a Python loop per symbol): small grids only.
"""

from __future__ import annotations

LEVELS = (8, 8, 8, 5, 5, 5)
BASES = (1, 8, 64, 512, 2560, 12800)
TOTAL = 1 << 24
MASK_W_MIN = 1 << 16
TOKEN_W_MIN = 1 << 12
NEIGHBOURS = ((0, -1), (-1, 0), (0, 1), (1, 0))


class SpecError(ValueError):
    pass


def frequencies(counts: list[int], w_min: int) -> list[int]:
    """Section 14.2."""
    n_total = sum(counts)
    free = TOTAL - len(counts) * w_min
    f = [w_min + n * free // n_total for n in counts]
    f[0] += TOTAL - sum(f)
    return f


class Family:
    """Counts of one model family: a dict of rows, each starting at 1."""

    def __init__(self, levels: int, w_min: int):
        self.levels, self.w_min, self.rows = levels, w_min, {}

    def freqs(self, ctx: int) -> list[int]:
        return frequencies(self.rows.get(ctx, [1] * self.levels), self.w_min)

    def count(self, batch: list[tuple[int, int]]) -> None:
        for ctx, sym in batch:
            self.rows.setdefault(ctx, [1] * self.levels)[sym] += 8


# ----------------------------------------------------------------------------- rANS (section 14.1)


def rans_encode(symbols: list[tuple[int, list[int]]]) -> bytes:
    """(symbol, frequencies) in decoding order -> stream bytes."""
    state, out = 0, []
    for s, f in reversed(symbols):
        c = sum(f[:s])
        if (state >> 40) >= f[s]:
            out.append(state & 0xFFFFFFFF)
            state >>= 32
        state = ((state // f[s]) << 24) | (c + state % f[s])
    if state >= 1 << 32:
        out += [state & 0xFFFFFFFF, state >> 32]
    elif state > 0:
        out.append(state)
    return b"".join(w.to_bytes(4, "little") for w in out)


class RansDecoder:
    def __init__(self, data: bytes):
        if len(data) % 4:
            raise SpecError("not whole words")
        self.words = [int.from_bytes(data[i : i + 4], "little") for i in range(0, len(data), 4)]
        self.pos = len(self.words)
        self.state = 0
        if self.pos:
            self.pos -= 1
            self.state = self.words[self.pos]
            if self.state == 0:
                raise SpecError("last word is zero")
            if self.pos:
                self.pos -= 1
                self.state = (self.state << 32) | self.words[self.pos]

    def decode(self, f: list[int]) -> int:
        q = self.state & (TOTAL - 1)
        s, c = 0, 0
        while not c <= q < c + f[s]:
            c += f[s]
            s += 1
        fs = f[s]
        self.state = (self.state >> 24) * fs + (q - c)
        if self.state < 1 << 32 and self.pos:
            self.pos -= 1
            self.state = (self.state << 32) | self.words[self.pos]
        return s

    def finish(self) -> None:
        if self.state or self.pos:
            raise SpecError("stream does not end with its symbols")


# ----------------------------------------------------------------------------- mask (section 14.3)


def _mask_plan(t: int, h: int, w: int, kept_per_frame: list[int]):
    for k in range(t):
        if 0 < kept_per_frame[k] < h * w:
            for half in (0, 1):
                yield k, half, [(y, x) for y in range(h) for x in range(w) if (y + x) % 2 == half]


def _mask_context(K, k: int, half: int, y: int, x: int, h: int, w: int, n_k: int) -> int:
    a = K[k - 1][y][x] if k >= 1 else 2
    frame = k - 1 if half == 0 else k
    S = 0
    if frame >= 0:
        for dy, dx in NEIGHBOURS:
            if 0 <= y + dy < h and 0 <= x + dx < w:
                S += K[frame][y + dy][x + dx]
    q = min(3, 4 * n_k // (h * w))
    return ((half * 3 + a) * 5 + S) * 4 + q


def encode_mask(K: list, t: int, h: int, w: int, trace: list | None = None) -> bytes:
    """`trace`, when given, receives (what, position, symbol, context, f(symbol), c(symbol)) per symbol."""
    kpf = [sum(map(sum, K[k])) for k in range(t)]
    fam, symbols = Family(2, MASK_W_MIN), []
    for k, half, positions in _mask_plan(t, h, w, kpf):
        batch = [(_mask_context(K, k, half, y, x, h, w, kpf[k]), K[k][y][x]) for y, x in positions]
        symbols += [(sym, fam.freqs(ctx)) for ctx, sym in batch]
        if trace is not None:
            for (y, x), (ctx, sym) in zip(positions, batch):
                f = fam.freqs(ctx)
                trace.append((f"mask k={k} half {half}", (k, y, x), sym, ctx, f[sym], sum(f[:sym])))
        fam.count(batch)
    return rans_encode(symbols)


def decode_mask(data: bytes, t: int, h: int, w: int, kpf: list[int]) -> list:
    K = [[[1 if kpf[k] == h * w else 0] * w for _ in range(h)] for k in range(t)]
    K = [[list(row) for row in frame] for frame in K]
    fam, dec = Family(2, MASK_W_MIN), RansDecoder(data)
    for k, half, positions in _mask_plan(t, h, w, kpf):
        batch = []
        for y, x in positions:
            ctx = _mask_context(K, k, half, y, x, h, w, kpf[k])
            batch.append((ctx, dec.decode(fam.freqs(ctx))))
        for (y, x), (_, bit) in zip(positions, batch):
            K[k][y][x] = bit
        fam.count(batch)
        if half == 1 and sum(map(sum, K[k])) != kpf[k]:
            raise SpecError("mask count")
    dec.finish()
    return K


# ----------------------------------------------------------------------------- tokens (section 14.4)


def _digit(v: int, d: int) -> int:
    return v // BASES[d] % LEVELS[d]


def _wavefronts(K, t: int, h: int, w: int):
    for s in range(t + h + w - 2):
        yield [(k, y, x) for k in range(t) for y in range(h) for x in range(w) if k + y + x == s and K[k][y][x]]


def _candidates(T: dict, k: int, y: int, x: int):
    cand = [T.get((k, y, x - 1)), T.get((k, y - 1, x)), T.get((k - 1, y, x))]
    distinct = []
    for j, v in enumerate(cand):
        if v is not None and v not in cand[:j]:
            distinct.append(j)
    return cand, distinct


def _g(T: dict, state: dict, p) -> int:
    return state.get(p, 0)  # 0 outside the grid / not kept, 1 match, 2 escape


def _match_context(T, state, k, y, x, distinct) -> int:
    u = sum(1 << j for j in distinct)
    return (u * 3 + _g(T, state, (k, y, x - 1))) * 3 + _g(T, state, (k, y - 1, x))


def _digit_context(cand, d: int, e: int) -> int:
    L = LEVELS[d]
    a = _digit(cand[2], d) if cand[2] is not None else L
    side = cand[0] if cand[0] is not None else cand[1]
    b = _digit(side, d) if side is not None else L
    return (a * (L + 1) + b) * 8 + e


def encode_tokens(K: list, tokens: list[int], t: int, h: int, w: int, trace: list | None = None) -> bytes:
    raster = [(k, y, x) for k in range(t) for y in range(h) for x in range(w) if K[k][y][x]]
    T = dict(zip(raster, tokens))
    match, digits = Family(4, TOKEN_W_MIN), [Family(L, TOKEN_W_MIN) for L in LEVELS]
    state, symbols = {}, []
    for front in _wavefronts(K, t, h, w):
        mbatch, escaped = [], []
        for k, y, x in front:
            cand, distinct = _candidates(T, k, y, x)
            v = T[(k, y, x)]
            m = next((i for i, j in enumerate(distinct) if cand[j] == v), len(distinct))
            if distinct:
                mbatch.append((_match_context(T, state, k, y, x, distinct), m))
            if m == len(distinct):
                escaped.append((cand, v))
            state[(k, y, x)] = 1 if m < len(distinct) else 2
        symbols += [(m, match.freqs(ctx)) for ctx, m in mbatch]
        if trace is not None:
            coded = [p for p in front if _candidates(T, *p)[1]]
            for p, (ctx, m) in zip(coded, mbatch):
                f = match.freqs(ctx)
                trace.append((f"match s={sum(p)}", p, m, ctx, f[m], sum(f[:m])))
        match.count(mbatch)
        for d in range(6):
            batch = [(_digit_context(cand, d, _digit(v, d - 1) if d else 0), _digit(v, d)) for cand, v in escaped]
            symbols += [(sym, digits[d].freqs(ctx)) for ctx, sym in batch]
            if trace is not None:
                for (_, v), (ctx, sym) in zip(escaped, batch):
                    f = digits[d].freqs(ctx)
                    trace.append((f"digit {d} s={sum(front[0])}", v, sym, ctx, f[sym], sum(f[:sym])))
            digits[d].count(batch)
    return rans_encode(symbols)


def decode_tokens(data: bytes, K: list, t: int, h: int, w: int) -> list[int]:
    T, state = {}, {}
    match, digits = Family(4, TOKEN_W_MIN), [Family(L, TOKEN_W_MIN) for L in LEVELS]
    dec = RansDecoder(data)
    for front in _wavefronts(K, t, h, w):
        info, mbatch = [], []
        for k, y, x in front:
            cand, distinct = _candidates(T, k, y, x)
            m = len(distinct)
            if distinct:
                ctx = _match_context(T, state, k, y, x, distinct)
                m = dec.decode(match.freqs(ctx))
                if m > len(distinct):
                    raise SpecError("match beyond candidates")
                mbatch.append((ctx, m))
            info.append(((k, y, x), cand, distinct, m))
        match.count(mbatch)
        escaped = [(p, cand) for p, cand, distinct, m in info if m == len(distinct)]
        values = [0] * len(escaped)
        prev = [0] * len(escaped)
        for d in range(6):
            batch = []
            for i, (_, cand) in enumerate(escaped):
                ctx = _digit_context(cand, d, prev[i])
                sym = dec.decode(digits[d].freqs(ctx))
                batch.append((ctx, sym))
                values[i] += sym * BASES[d]
                prev[i] = sym
            digits[d].count(batch)
        esc_values = dict(zip([p for p, _ in escaped], values))
        for p, cand, distinct, m in info:
            T[p] = esc_values[p] if m == len(distinct) else cand[distinct[m]]
            state[p] = 1 if m < len(distinct) else 2
    dec.finish()
    raster = [(k, y, x) for k in range(t) for y in range(h) for x in range(w) if K[k][y][x]]
    return [T[p] for p in raster]
