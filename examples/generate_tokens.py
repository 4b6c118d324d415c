"""Tokens back into video: export the tokens of the sample clips, fit a tiny next-token model on them on
the CPU, sample a window and decode it to a video.

The model is deliberately tiny (a GRU over the latent grid in raster order, about a minute of training):
what it shows is the plumbing, not a generative model worth watching. Each position's target is "dropped"
or one of the 64000 codes, predicted as a keep bit and the code's six FSQ digits (8, 8, 8, 5, 5, 5), so the
output layer stays small.

    python examples/generate_tokens.py                   # samples/ -> generated/, about a minute of fitting
    python examples/generate_tokens.py --steps 3 --clips 1 --out /tmp/gen   # a quick check

Writes, in --out: each clip's .itok and exported .npz, `generated.npz` (the sampled window in an export:
`infotok pack generated.npz x.itok` and `infotok decompress generated.npz x.mp4` take it as it is),
`generated.itok` and `generated.mp4`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import infotok_cli as it
from infotok_cli.constants import FSQ_LEVELS
from infotok_cli.io.files import export_tokens

ROOT = Path(__file__).resolve().parent.parent
RADIX = np.cumprod((1, *FSQ_LEVELS[:-1]))  # code = sum(digit_i * RADIX[i])


def export_clips(videos: list[Path], out: Path, model: str) -> list[Path]:
    """Compress each clip (once) and export its tokens to .npz."""
    arrays = []
    for video in videos:
        itok, npz = out / f"{video.stem}.itok", out / f"{video.stem}.npz"
        if not itok.exists():
            it.compress(video, itok, model=model, device="cpu")
        if not npz.exists():
            export_tokens(itok, npz)
        arrays.append(npz)
    return arrays


def windows_of(npz: Path) -> list[np.ndarray]:
    """The `tokens` array of every window, read with numpy alone."""
    with np.load(npz, allow_pickle=False) as z:
        meta = json.loads(str(z["metadata"]))
        return [z[f"tokens_{i:06d}"] for i in range(meta["windows"])]


def to_targets(tokens: np.ndarray) -> np.ndarray:
    """int [..., 7]: keep bit, then the six FSQ digits (0 where dropped)."""
    codes = np.maximum(tokens, 0)[..., None]
    digits = codes // RADIX % np.array(FSQ_LEVELS)
    return np.concatenate([(tokens >= 0)[..., None], digits], axis=-1).astype(np.int64)


def from_targets(targets: np.ndarray) -> np.ndarray:
    codes = (targets[..., 1:] * RADIX).sum(-1)
    return np.where(targets[..., 0] == 1, codes, -1).astype(np.int32)


class NextToken(nn.Module):
    """A GRU over a window's positions in raster (t, y, x) order: the previous position's keep bit and
    digits plus this position's coordinates in, this position's keep bit and digits out."""

    def __init__(self, shape: tuple[int, int, int], width: int = 64):
        super().__init__()
        self.shape = shape
        self.digit_in = nn.ModuleList(nn.Embedding(n, width) for n in (2, *FSQ_LEVELS))
        self.where = nn.ModuleList(nn.Embedding(n, width) for n in shape)
        self.gru = nn.GRU(width, width, batch_first=True)
        self.heads = nn.ModuleList(nn.Linear(width, n) for n in (2, *FSQ_LEVELS))

    def embed(self, prev: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        return (sum(e(prev[..., i]) for i, e in enumerate(self.digit_in))
                + sum(e(coords[..., i]) for i, e in enumerate(self.where)))

    def loss(self, targets: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        prev = torch.cat([torch.zeros_like(targets[:, :1]), targets[:, :-1]], dim=1)
        h, _ = self.gru(self.embed(prev, coords))
        kept = targets[..., 0] == 1
        loss = nn.functional.cross_entropy(self.heads[0](h).flatten(0, 1), targets[..., 0].flatten())
        for i, head in enumerate(self.heads[1:], start=1):  # digits count only where a token is kept
            loss = loss + nn.functional.cross_entropy(head(h)[kept], targets[..., i][kept]) / len(FSQ_LEVELS)
        return loss

    @torch.no_grad()
    def sample(self, temperature: float = 1.0, seed: int = 0) -> np.ndarray:
        g = torch.Generator().manual_seed(seed)
        coords = torch.from_numpy(np.argwhere(np.ones(self.shape, bool)))
        prev = torch.zeros(1, 1 + len(FSQ_LEVELS), dtype=torch.int64)
        h = None
        out = np.zeros((len(coords), 1 + len(FSQ_LEVELS)), dtype=np.int64)
        for j in range(len(coords)):
            y, h = self.gru(self.embed(prev, coords[j : j + 1])[None], h)
            for i, head in enumerate(self.heads):
                probs = torch.softmax(head(y[0, -1]) / temperature, -1)
                prev[0, i] = 0 if i and prev[0, 0] == 0 else torch.multinomial(probs, 1, generator=g).item()
            out[j] = prev[0].numpy()
        return from_targets(out).reshape(self.shape)


def fit(model: NextToken, windows: list[np.ndarray], seconds: float, steps: int | None, crop: int = 512,
        batch: int = 8, seed: int = 0) -> list[float]:
    """Train on random crops of `crop` positions from the windows for `seconds` (or `steps` steps)."""
    rng = np.random.default_rng(seed)
    coords = np.argwhere(np.ones(model.shape, bool))
    flat = [to_targets(w.reshape(-1)) for w in windows]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses, t0 = [], time.perf_counter()
    while (len(losses) < steps) if steps is not None else (time.perf_counter() - t0 < seconds):
        picks = [(rng.integers(len(flat)), rng.integers(0, len(coords) - crop + 1)) for _ in range(batch)]
        targets = torch.from_numpy(np.stack([flat[w][s : s + crop] for w, s in picks]))
        where = torch.from_numpy(np.stack([coords[s : s + crop] for _, s in picks]))
        loss = model.loss(targets, where)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=Path, default=ROOT / "samples", help="folder of clips to learn from")
    ap.add_argument("--out", type=Path, default=Path("generated"))
    ap.add_argument("--model", default="infotok-m")
    ap.add_argument("--clips", type=int, default=None, help="use only the first N clips")
    ap.add_argument("--seconds", type=float, default=60.0, help="training time")
    ap.add_argument("--steps", type=int, default=None, help="training steps instead of --seconds")
    args = ap.parse_args()
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    videos = sorted(args.samples.glob("*.mp4"))[: args.clips]
    arrays = export_clips(videos, args.out, args.model)
    # 1. learn: every window of every clip has the same latent grid here (same size, one window per clip)
    windows = [w for npz in arrays for w in windows_of(npz)]
    shape = windows[0].shape
    model = NextToken(shape)
    losses = fit(model, [w for w in windows if w.shape == shape], args.seconds, args.steps)
    print(f"fitted {len(losses)} steps on {len(windows)} windows of {list(shape)}: loss {losses[0]:.2f} -> "
          f"{losses[-1]:.2f}")
    # 2. sample window 0 of the first clip's geometry; its other windows (if any) keep their tokens
    sampled = model.sample()
    geometry = it.Geometry.from_file(arrays[0])
    tokens = [sampled] + windows_of(arrays[0])[1:]
    clip = it.Tokens.from_arrays(geometry, tokens)  # keep = tokens != -1
    print(f"sampled {clip.windows[0].tokens_kept} of {clip.windows[0].tokens_possible} tokens kept")
    # 3. to video: pack and decompress (or `Tokenizer(...).decode(clip)` for the frames in memory)
    it.pack(clip, args.out / "generated.itok", force=True)
    it.decompress(args.out / "generated.itok", args.out / "generated.mp4", force=True, device="cpu")
    # the same window as an export, for `infotok pack` / `infotok decompress`
    with np.load(arrays[0], allow_pickle=False) as z:
        export = {k: z[k] for k in z.files if not k.startswith("keep_")}  # the mask follows tokens != -1
    export["tokens_000000"] = sampled
    np.savez_compressed(args.out / "generated.npz", **export)
    print(f"wrote {args.out / 'generated.mp4'}")


if __name__ == "__main__":
    main()
