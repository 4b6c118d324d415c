"""Entropy coding of one window's keep mask and tokens: the context models of `.itok` version 2.

docs/FORMAT.md section 14 is the normative description; this module is its reference implementation.

- Tokens are coded in wavefronts k + y + x, so that the left, upper and previous-frame neighbours of a
  position are known when it is decoded. A match symbol says which of those neighbours' distinct tokens
  the token repeats; a token that repeats none (an escape) is coded as its 6 FSQ digits (levels
  8,8,8,5,5,5), each conditioned on the same digit of the previous-frame and the left (else upper)
  neighbour and on the token's previous digit. Only kept positions are coded; the mask is decoded first.
- Mask bits are conditioned on the previous frame's bit, on how many 4-neighbours are kept (previous
  frame for the first half, current frame for the second) and on the frame's kept fraction, which the
  index states. Frames whose mask the index already determines (nothing or everything kept) are skipped.
- Probabilities come from integer counts that start at COUNT_INIT and grow by COUNT_INC per coded symbol,
  updated after each batch (mask: one checkerboard half of a frame; tokens: the match symbols or one digit
  of one wavefront), then quantised to 24-bit frequencies in integer arithmetic. Nothing depends on the
  network weights or on floating point, so every machine decodes the same symbols, and retraining the
  model never breaks old files.
- Symbols are coded with constriction's rANS coder (`AnsCoder`: 64-bit state, 32-bit words, 24-bit
  precision). The frequencies reach it exactly: its `Categorical(perfect=False)` model quantises
  probabilities P_i to the cumulatives floor(P_i * (2^24 - L) / sum(P)) + i, so `_probabilities` hands it
  p(s) = f(s) - 1 (a scale of 1.0) and the model it builds has exactly the frequencies f(s). The encoder
  computes every context at once, counts forwards and codes backwards (rANS is last in, first out); the
  decoder is vectorised per batch (about 70 wavefronts, some 500 coder calls, per 256x256 33-frame window).

Batches make the decoder vectorised: every symbol of a batch has its context before the batch is decoded,
so each batch is one call into the coder with numpy arrays, not a Python loop over symbols.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import constriction
import numpy as np

from ..constants import FSQ_LEVELS

LEVELS = FSQ_LEVELS  # token = d0 + 8 d1 + 64 d2 + 512 d3 + 2560 d4 + 12800 d5
BASES = tuple(math.prod(LEVELS[:i]) for i in range(len(LEVELS)))  # (1, 8, 64, 512, 2560, 12800)
PRECISION = 24
TOTAL = 1 << PRECISION
TOKEN_W_MIN = 1 << 12  # smallest token-model frequency: no match symbol costs less than ~0.001 bits
MASK_W_MIN = 1 << 16  # smallest mask-bit frequency: no bit costs less than ~0.0057 bits
COUNT_INIT = 1
COUNT_INC = 8
# Lower bounds on stream sizes that follow from the frequency floors (FORMAT.md section 14.5): a reader
# rejects a stream that claims more symbols than its bytes can carry, so a few bytes can never make the
# decoder produce millions of symbols.
TOKENS_PER_BYTE = 8192
MASK_BITS_PER_BYTE = 2048
STREAM_SLACK_BYTES = 8


def min_token_bytes(kept: int, wavefronts: int = 0) -> int:
    """Smallest token stream (token_codec 2) allowed for `kept` tokens on `wavefronts` non-empty wavefronts:
    the symbols its bytes can carry, and one byte per wavefront, which bounds the decoder's per-batch work
    by the stream's size."""
    return max(0, kept // TOKENS_PER_BYTE - STREAM_SLACK_BYTES, wavefronts - STREAM_SLACK_BYTES)


def coded_mask_bits(shape: tuple[int, int, int], kept_per_frame: list[int]) -> int:
    """Mask bits the mask stream codes: the positions of frames with some but not all positions kept."""
    hw = shape[1] * shape[2]
    return hw * sum(1 for n in kept_per_frame if 0 < n < hw)


def min_mask_bytes(shape: tuple[int, int, int], kept_per_frame: list[int]) -> int:
    """Smallest mask stream (mask_codec 1) allowed for a window with these kept counts: the bits its bytes
    can carry, and one byte per coded frame (bounding the per-batch work)."""
    hw = shape[1] * shape[2]
    frames = sum(1 for n in kept_per_frame if 0 < n < hw)
    return max(0, coded_mask_bits(shape, kept_per_frame) // MASK_BITS_PER_BYTE - STREAM_SLACK_BYTES,
               frames - STREAM_SLACK_BYTES)

_FAMILY = constriction.stream.model.Categorical(perfect=False)


class EntropyError(ValueError):
    """An entropy-coded stream that does not decode to what the window declares."""


# ----------------------------------------------------------------------------- probability arithmetic


def quantize(counts: np.ndarray, w_min: int) -> np.ndarray:
    """Frequencies (int64, each >= w_min, rows summing to 2**24) of rows of counts [n, L]:
    w = w_min + floor(c * (2**24 - L*w_min) / sum(c)), and symbol 0 also gets the rounding remainder."""
    free = TOTAL - counts.shape[1] * w_min
    w = w_min + counts * free // counts.sum(axis=1, keepdims=True)
    w[:, 0] += TOTAL - w.sum(axis=1)
    return w


def _probabilities(freqs: np.ndarray) -> np.ndarray:
    """What to hand constriction so that it uses exactly `freqs` (rows summing to 2**24).

    Its fast quantisation maps floats p (length n) to left cumulatives floor(P_i * (2**24 - n) / sum(p)) + i,
    with P_i the running sum. With p = freqs - 1, sum(p) is exactly 2**24 - n, the scale is exactly 1.0
    and every partial sum is an integer below 2**24, exactly representable: the cumulatives are exactly
    those of `freqs`, on any machine."""
    return (freqs - 1).astype(np.float64)


class _Model:
    """Adaptive counts of one symbol stream: one row per context."""

    def __init__(self, contexts: int, levels: int, w_min: int):
        self.w_min = w_min
        self.counts = np.full((contexts, levels), COUNT_INIT, dtype=np.int64)

    def probs(self, ctx: np.ndarray) -> np.ndarray:
        """constriction's input [n, L] for symbols with contexts `ctx` (only the rows in use are quantised)."""
        return _probabilities(quantize(self.counts[ctx], self.w_min))

    def update(self, ctx: np.ndarray, symbols: np.ndarray, sign: int = 1) -> None:
        """Count a batch of coded symbols (sign -1 takes them back out: the encoder replays batches
        backwards)."""
        np.add.at(self.counts, (ctx, symbols), sign * COUNT_INC)


# ----------------------------------------------------------------------------- context helpers


def parity(h: int, w: int) -> np.ndarray:
    """Checkerboard half of each position: (y + x) % 2. Half 0 is coded before half 1."""
    return (np.arange(h)[:, None] + np.arange(w)[None, :]) % 2


def _pad(a: np.ndarray, fill: int) -> np.ndarray:
    return np.pad(a, 1, constant_values=fill)


# The 4-neighbours (left, up, right, down) counted by the mask contexts.
_NEIGHBOURS = ((0, -1), (-1, 0), (0, 1), (1, 0))


def _neighbour_sum(bits: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Number of kept 4-neighbours (outside the grid counts as not kept)."""
    p = _pad(bits.astype(np.int64), 0)
    return sum(p[ys + 1 + dy, xs + 1 + dx] for dy, dx in _NEIGHBOURS)


# ----------------------------------------------------------------------------- mask


def _mask_batches(shape: tuple[int, int, int], kept_per_frame: list[int]) -> Iterator[tuple[int, int]]:
    """(frame, half) of every mask batch in coding order: frames with 0 < kept < h*w only."""
    t, h, w = shape
    for k in range(t):
        if 0 < kept_per_frame[k] < h * w:
            yield k, 0
            yield k, 1


def _mask_context(mask: np.ndarray, k: int, half: int, ys: np.ndarray, xs: np.ndarray, kept: int) -> np.ndarray:
    h, w = mask.shape[1:]
    if k == 0:
        a = np.full(ys.shape, 2, dtype=np.int64)
        n = np.zeros(ys.shape, dtype=np.int64)
    else:
        a = mask[k - 1, ys, xs].astype(np.int64)
        n = _neighbour_sum(mask[k - 1], ys, xs) if half == 0 else None
    if half == 1:
        n = _neighbour_sum(mask[k], ys, xs)
    q = min(3, 4 * kept // (h * w))
    return ((half * 3 + a) * 5 + n) * 4 + q


MASK_CONTEXTS = 2 * 3 * 5 * 4


def _half_positions(h: int, w: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    par = parity(h, w)
    return np.nonzero(par == 0), np.nonzero(par == 1)


def encode_mask(mask: np.ndarray) -> bytes:
    """The entropy-coded keep mask (bool [t, h, w]) of a window."""
    t, h, w = mask.shape
    kpf = mask.reshape(t, -1).sum(axis=1).tolist()
    model = _Model(MASK_CONTEXTS, 2, MASK_W_MIN)
    halves = _half_positions(h, w)
    batches = []
    for k, half in _mask_batches(mask.shape, kpf):
        ys, xs = halves[half]
        ctx = _mask_context(mask, k, half, ys, xs, kpf[k])
        sym = mask[k, ys, xs].astype(np.int64)
        batches.append((model, sym, ctx))
        model.update(ctx, sym)
    return _ans_encode(batches)


def decode_mask(data: bytes, shape: tuple[int, int, int], kept_per_frame: list[int]) -> np.ndarray:
    """Inverse of encode_mask, given the per-frame kept counts from the index; raises EntropyError."""
    t, h, w = shape
    mask = np.zeros(shape, dtype=bool)
    for k in range(t):
        if kept_per_frame[k] == h * w:
            mask[k] = True
    model = _Model(MASK_CONTEXTS, 2, MASK_W_MIN)
    halves = _half_positions(h, w)
    coder = _ans_decoder(data)
    for k, half in _mask_batches(shape, kept_per_frame):
        ys, xs = halves[half]
        ctx = _mask_context(mask, k, half, ys, xs, kept_per_frame[k])
        sym = _ans_decode(coder, model.probs(ctx))
        if sym.max(initial=0) > 1:
            raise EntropyError("keep mask stream is corrupt")
        mask[k, ys, xs] = sym.astype(bool)
        model.update(ctx, sym)
        if half == 1 and int(mask[k].sum()) != kept_per_frame[k]:
            raise EntropyError(f"keep mask of latent frame {k} does not match the kept counts in the index")
    _ans_finish(coder, "keep mask")
    return mask


# ----------------------------------------------------------------------------- tokens

# A token is coded after its left (k, y, x-1), upper (k, y-1, x) and previous-frame (k-1, y, x) neighbours:
# positions are coded in wavefronts s = k + y + x, and every neighbour of a position lies on wavefront s-1.
# The distinct tokens among those neighbours that are kept are the *candidates* (in the order left, up,
# previous, duplicates dropped). A match symbol m says which candidate the token equals, or m = c
# (the number of candidates) for an *escape*; an escaped token (and one without candidates) is coded as
# its 6 digits.
MATCH_SYMBOLS = 4
MATCH_CONTEXTS = 8 * 3 * 3
_STATE_NONE, _STATE_MATCH, _STATE_ESCAPE = 0, 1, 2


def digit_contexts(level: int) -> int:
    return (level + 1) ** 2 * 8


@dataclass
class _Wavefronts:
    """Kept positions in coding order and where each wavefront starts."""

    k: np.ndarray
    y: np.ndarray
    x: np.ndarray
    order: np.ndarray  # index into the raster-ordered kept positions, in coding order
    bounds: np.ndarray  # positions [bounds[i], bounds[i+1]) of the coding order are the i-th non-empty wavefront

    @property
    def count(self) -> int:
        """Number of non-empty wavefronts."""
        return len(self.bounds) - 1


def _wavefronts(mask: np.ndarray) -> _Wavefronts:
    k, y, x = np.nonzero(mask)  # raster order
    s = k + y + x
    order = np.argsort(s, kind="stable")  # raster order within a wavefront
    s = s[order]
    starts = np.flatnonzero(np.diff(s, prepend=-1)) if s.size else np.zeros(0, dtype=np.int64)
    return _Wavefronts(k[order], y[order], x[order], order, np.append(starts, s.size))


def nonempty_wavefronts(mask: np.ndarray) -> int:
    """Number of wavefronts k + y + x that hold a kept position (FORMAT.md section 14.5)."""
    k, y, x = np.nonzero(mask)
    return int(np.count_nonzero(np.bincount(k + y + x)))  # not np.unique: it imports numpy.ma (30 ms)


def _candidates(grid: np.ndarray, k: np.ndarray, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidate tokens [n, 3] (left, up, previous; -1 = none) with duplicates and missing ones marked
    False in the second array (the distinct candidates)."""
    # grid is padded by one at the low end of every axis and holds -1 where nothing is (yet) known.
    cand = np.stack([grid[k + 1, y + 1, x], grid[k + 1, y, x + 1], grid[k, y + 1, x + 1]], axis=1).astype(np.int64)
    uniq = cand >= 0
    uniq[:, 1] &= cand[:, 1] != cand[:, 0]
    uniq[:, 2] &= (cand[:, 2] != cand[:, 0]) & (cand[:, 2] != cand[:, 1])
    return cand, uniq


def _match_context(state: np.ndarray, uniq: np.ndarray, k: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    bits = uniq[:, 0] * 1 + uniq[:, 1] * 2 + uniq[:, 2] * 4
    return (bits * 3 + state[k + 1, y + 1, x]) * 3 + state[k + 1, y, x + 1]


_LEVELS = np.array(LEVELS, dtype=np.int64)
_BASES = np.array(BASES, dtype=np.int64)


def _digit_contexts(cand: np.ndarray) -> np.ndarray:
    """[n, 6] digit contexts before the previous digit is added: (a * (L + 1) + b) * 8, where a is the
    digit of the previous-frame candidate and b that of the left (else the upper) one; L = none."""
    prev_tok = cand[:, 2:3]
    side = np.where(cand[:, 0:1] >= 0, cand[:, 0:1], cand[:, 1:2])
    a = np.where(prev_tok >= 0, (prev_tok // _BASES) % _LEVELS, _LEVELS)
    b = np.where(side >= 0, (side // _BASES) % _LEVELS, _LEVELS)
    return (a * (_LEVELS + 1) + b) * 8


def _new_token_models() -> tuple[_Model, list[_Model]]:
    return _Model(MATCH_CONTEXTS, MATCH_SYMBOLS, TOKEN_W_MIN), [
        _Model(digit_contexts(L), L, TOKEN_W_MIN) for L in LEVELS
    ]


def _padded(shape: tuple[int, int, int], fill: int, dtype) -> np.ndarray:
    """A [t+1, h+1, w+1] grid (one padding plane at the low end of each axis) of `fill`. The decoder holds
    two (int32 tokens, int8 match states): 5 bytes per position."""
    t, h, w = shape
    return np.full((t + 1, h + 1, w + 1), fill, dtype=dtype)


def encode_tokens(mask: np.ndarray, tokens: np.ndarray) -> bytes:
    """The entropy-coded tokens (of the kept positions of `mask`, raster order) of a window."""
    wf = _wavefronts(mask)
    tok = np.asarray(tokens, dtype=np.int64)[wf.order]
    grid = _padded(mask.shape, -1, np.int32)
    grid[wf.k + 1, wf.y + 1, wf.x + 1] = tok
    # Everything is known up front: contexts for all positions at once, only the counts go batch by batch.
    cand, uniq = _candidates(grid, wf.k, wf.y, wf.x)
    rank = np.cumsum(uniq, axis=1) - 1
    hit = (cand == tok[:, None]) & uniq
    c = uniq.sum(axis=1)
    m = np.where(hit.any(axis=1), (rank * hit).sum(axis=1), c)
    state = _padded(mask.shape, _STATE_NONE, np.int8)
    state[wf.k + 1, wf.y + 1, wf.x + 1] = np.where(m < c, _STATE_MATCH, _STATE_ESCAPE)
    mctx = _match_context(state, uniq, wf.k, wf.y, wf.x)
    escape = m == c
    digits = [(tok // base) % level for level, base in zip(LEVELS, BASES)]
    base_ctx = _digit_contexts(cand)
    dctx = [base_ctx[:, d] + (digits[d - 1] if d else 0) for d in range(len(LEVELS))]
    match_model, digit_models = _new_token_models()
    batches = []
    for i in range(wf.count):
        lo, hi = wf.bounds[i], wf.bounds[i + 1]
        sel = np.arange(lo, hi)
        coded = sel[c[lo:hi] > 0]
        if coded.size:
            batches.append((match_model, m[coded], mctx[coded]))
            match_model.update(mctx[coded], m[coded])
        esc = sel[escape[lo:hi]]
        if esc.size:
            for d, model in enumerate(digit_models):
                batches.append((model, digits[d][esc], dctx[d][esc]))
                model.update(dctx[d][esc], digits[d][esc])
    return _ans_encode(batches)


def decode_tokens(data: bytes, mask: np.ndarray) -> np.ndarray:
    """Inverse of encode_tokens: uint16 tokens of the kept positions in raster order; raises EntropyError."""
    wf = _wavefronts(mask)
    grid = _padded(mask.shape, -1, np.int32)
    state = _padded(mask.shape, _STATE_NONE, np.int8)
    match_model, digit_models = _new_token_models()
    coder = _ans_decoder(data)
    for i in range(wf.count):
        lo, hi = wf.bounds[i], wf.bounds[i + 1]
        k, y, x = wf.k[lo:hi], wf.y[lo:hi], wf.x[lo:hi]
        cand, uniq = _candidates(grid, k, y, x)
        c = uniq.sum(axis=1)
        m = c.copy()
        has = c > 0
        if has.any():
            mctx = _match_context(state, uniq, k, y, x)[has]
            m[has] = _ans_decode(coder, match_model.probs(mctx))
            if np.any(m > c):
                raise EntropyError("token stream is corrupt (a match beyond the candidates)")
            match_model.update(mctx, m[has])
        tok = np.full(hi - lo, -1, dtype=np.int64)
        matched = m < c
        if matched.any():
            rank = np.cumsum(uniq, axis=1) - 1
            pick = uniq & (rank == m[:, None])
            tok[matched] = (cand * pick).sum(axis=1)[matched] + 0
            # (cand * pick) sums the one picked candidate; candidates are >= 0 where picked
        esc = ~matched
        if esc.any():
            base_ctx = _digit_contexts(cand[esc])
            value = np.zeros(base_ctx.shape[0], dtype=np.int64)
            prev_digit = 0
            for d, model in enumerate(digit_models):
                ctx = base_ctx[:, d] + prev_digit
                digit = _ans_decode(coder, model.probs(ctx))
                if digit.max(initial=0) >= LEVELS[d]:
                    raise EntropyError("token stream is corrupt (a digit beyond its level)")
                model.update(ctx, digit)
                value += digit * BASES[d]
                prev_digit = digit
            tok[esc] = value
        grid[k + 1, y + 1, x + 1] = tok
        state[k + 1, y + 1, x + 1] = np.where(matched, _STATE_MATCH, _STATE_ESCAPE)
    _ans_finish(coder, "token")
    out = np.empty(wf.order.size, dtype=np.uint16)
    out[wf.order] = grid[wf.k + 1, wf.y + 1, wf.x + 1]
    return out


# ----------------------------------------------------------------------------- rANS through constriction


def _ans_encode(batches: list[tuple[_Model, np.ndarray, np.ndarray]]) -> bytes:
    """Encode batches (model, symbols, contexts), already counted into their models, so that they decode in
    order. rANS is a stack, so the last batch goes in first; walking backwards, each batch is taken out of
    its model's counts before it is coded, which recreates the counts the decoder will have then (and
    keeps the memory at the symbols and contexts, not a frequency table per symbol)."""
    if not batches:
        return b""
    coder = constriction.stream.stack.AnsCoder()
    for model, sym, ctx in reversed(batches):
        model.update(ctx, sym, sign=-1)
        coder.encode_reverse(sym.astype(np.int32), _FAMILY, model.probs(ctx))
    return coder.get_compressed().astype("<u4").tobytes()


def _ans_decoder(data: bytes):
    if len(data) % 4:
        raise EntropyError("entropy-coded stream is not a whole number of 32-bit words")
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    if words.size and words[-1] == 0:
        raise EntropyError("entropy-coded stream ends in a zero word")
    try:
        return constriction.stream.stack.AnsCoder(words)
    except Exception as e:  # the binding's own checks; never expected after the two above
        raise EntropyError(f"entropy-coded stream rejected ({e})") from None


def _ans_decode(coder, probs: np.ndarray) -> np.ndarray:
    return np.asarray(coder.decode(_FAMILY, probs), dtype=np.int64)


def _ans_finish(coder, what: str) -> None:
    # rANS decoding is the exact inverse of encoding from the empty state: a stream decoded with the
    # right models ends exactly empty. Anything else is damage (or a different model).
    if not coder.is_empty() or coder.num_words() != 0:
        raise EntropyError(f"{what} stream does not end where its symbols do")
