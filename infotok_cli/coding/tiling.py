"""Spatial tiling of the network passes on frames larger than a tile.

A window whose padded frame exceeds the tile in either direction runs every network pass (the encode,
the router head, the full-rate and probe decodes, the receiver's decode) tile by tile: the frame is cut
into *cores* that cover it without overlap, and each core is computed from a *crop* that adds a halo of
context around it (clipped at the frame's borders). Only the core of each pass's output is kept, so
memory follows the crop, not the frame. The token grid stays the whole frame's grid: placement and rate
control see the same [t, h, w] maps as without tiles, and the file's layout does not change.

infotok-m's transformers attend inside fixed 8x8 latent windows (`attn_window`), so cores and crops start
on window borders (multiples of 64 pixels) and a crop's attention windows are the whole frame's. What a
crop cannot see, the convolutions and the MLP's depthwise convolution carry in from beyond its halo; the
halo is sized so that this changes no more than floating-point noise does (docs/USAGE.md, "Tiling").
InfoTok-Flex attends across the whole frame (and normalises each frame as a whole), so tiles change its
tokens; a frame that fits its 96x96 rotary table (768x768 pixels) is coded whole, as the release codes it,
and larger frames in tiles whose crop fits the table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..constants import SPATIAL_STRIDE
from ..errors import CodecError
from ..model.router_head import extract_features, window_summary
from .geometry import padded_length
from .metrics import mse_sum, psnr_from_mse
from .router import position_error, probe_half

if TYPE_CHECKING:  # pragma: no cover
    from .tokenizer import Tokenizer

# Each model family's default tile (core, halo) is its `default_tile` (model/family.py), chosen from the
# measurements in docs/USAGE.md ("Tiling").
MAX_TILE = 1 << 14  # bounds on the tile a file may record (a file can be untrusted)


@dataclass(frozen=True)
class TileSpec:
    """Cores of at most `size` pixels a side with `halo` pixels of context, both multiples of `align`
    (where cores and crops may start: the model's attention windows); `limit`: the largest crop the model
    accepts (InfoTok-Flex's rotary table), None for any."""

    size: int
    halo: int
    align: int = SPATIAL_STRIDE
    limit: int | None = None

    @property
    def whole(self) -> int:
        """The largest frame side coded whole: the tile, or for a model with a largest input, that input."""
        return self.limit or self.size

    def __post_init__(self) -> None:
        if not (self.align <= self.size <= MAX_TILE and 0 <= self.halo <= MAX_TILE
                and self.size % self.align == 0 and self.halo % self.align == 0):
            raise CodecError(f"tiles of {self.size} pixels with a {self.halo}-pixel halo: both must be multiples "
                             f"of {self.align} (the tile at least {self.align}, at most {MAX_TILE})")
        if self.limit is not None and self.size + 2 * self.halo > self.limit:
            raise CodecError(f"a tile of {self.size} pixels with a {self.halo}-pixel halo exceeds the model's "
                             f"largest input of {self.limit} pixels")

    def record(self) -> dict[str, int]:
        """What the file's header records (key `tiles` of its extra map)."""
        return {"size": self.size, "halo": self.halo}


@dataclass(frozen=True)
class Tile:
    """core and crop as (top, bottom, left, right) pixel bounds in the padded frame; the crop holds the core."""

    core: tuple[int, int, int, int]
    crop: tuple[int, int, int, int]

    def latent(self, box: tuple[int, int, int, int]) -> tuple[slice, slice]:
        """(rows, columns) of the latent grid under a pixel box."""
        top, bottom, left, right = (v // SPATIAL_STRIDE for v in box)
        return slice(top, bottom), slice(left, right)

    def inner(self) -> tuple[slice, slice]:
        """(rows, columns) of the core inside the crop, in pixels."""
        top, bottom, left, right = self.core
        return slice(top - self.crop[0], bottom - self.crop[0]), slice(left - self.crop[2], right - self.crop[2])

    def inner_latent(self) -> tuple[slice, slice]:
        rows, cols = self.inner()
        s = SPATIAL_STRIDE
        return slice(rows.start // s, rows.stop // s), slice(cols.start // s, cols.stop // s)


def split(length: int, size: int, align: int) -> list[tuple[int, int]]:
    """Cut [0, length) into the fewest parts of at most `size`, as even as whole `align` units allow."""
    parts = -(-length // size)
    units = -(-length // align)
    bounds = [min(length, round(i * units / parts) * align) for i in range(parts)] + [length]
    return list(zip(bounds, bounds[1:]))


def plan_tiles(height: int, width: int, spec: TileSpec) -> list[Tile] | None:
    """The tiles of a padded frame, row by row; None when the frame is coded whole."""
    if height <= spec.whole and width <= spec.whole:
        return None
    tiles = []
    for top, bottom in split(height, spec.size, spec.align):
        for left, right in split(width, spec.size, spec.align):
            crop = (max(0, top - spec.halo), min(height, bottom + spec.halo),
                    max(0, left - spec.halo), min(width, right + spec.halo))
            tiles.append(Tile((top, bottom, left, right), crop))
    return tiles


def tile_input(frames: np.ndarray, crop: tuple[int, int, int, int], device: torch.device) -> torch.Tensor:
    """The model's input for a crop of a window: what geometry.to_model_input gives for the whole frame,
    cut to the crop (edge pixels repeated into the stride padding, the last frame into the time padding),
    made from the uint8 frames so that no float copy of the whole window exists."""
    n, h, w, _ = frames.shape
    top, bottom, left, right = crop
    part = frames[:, top:min(bottom, h), left:min(right, w)]
    x = torch.from_numpy(np.ascontiguousarray(part)).to(device).permute(3, 0, 1, 2).float().div_(127.5).sub_(1)
    if bottom > h or right > w:
        x = torch.nn.functional.pad(x, (0, max(0, right - w), 0, max(0, bottom - h)), mode="replicate")
    t = padded_length(n)
    if t > n:
        x = torch.cat([x, x[:, -1:].expand(-1, t - n, -1, -1)], dim=1)
    return x[None]


def core_of(x: torch.Tensor, tile: Tile) -> torch.Tensor:
    rows, cols = tile.inner()
    return x[..., rows, cols]


def core_frames(recon: torch.Tensor, tile: Tile, n: int, h: int, w: int
                ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The core of a crop's reconstruction [1,3,T,H,W] as uint8 frames (converted as to_frames converts:
    clamp, scale, round), cut to the frame's real size [n,h,w]; and its bounds in the frame."""
    top, bottom, left, right = tile.core
    bottom, right = min(bottom, h), min(right, w)
    rows, cols = tile.inner()
    part = recon[0, :, :n, rows.start:rows.start + max(0, bottom - top), cols.start:cols.start + max(0, right - left)]
    out = np.empty((n, part.shape[2], part.shape[3], 3), dtype=np.uint8)
    for i in range(n):
        frame = part[:, i].float().clamp(-1, 1).add_(1).mul_(127.5).round_()  # clamp copies: recon stays
        out[i] = frame.to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return out, (top, bottom, left, right)


class TiledPasses:
    """The tokenizer's network passes over one window, tile by tile (see the module's docstring)."""

    def __init__(self, tok: Tokenizer, tiles: list[Tile], grid: tuple[int, int, int], frames: np.ndarray | None = None):
        """grid: the window's latent grid [t,h,w]; frames: its uint8 frames [n,H,W,3] (not needed to decode)."""
        self.tok, self.tiles, self.grid, self.t = tok, tiles, grid, grid[0]
        self.frames = frames

    def inputs(self) -> Iterator[tuple[Tile, torch.Tensor]]:
        assert self.frames is not None
        for tile in self.tiles:
            top, bottom, left, right = tile.crop
            self.tok.bound_chunks(bottom - top, right - left)
            yield tile, tile_input(self.frames, tile.crop, self.tok.device)

    def encode(self) -> torch.Tensor:
        """Token indices [t,h,w] of the window."""
        indices: torch.Tensor | None = None
        for tile, x in self.inputs():
            with self.tok.stage("encoder"), self.tok.autocast():
                part = self.tok.model.encode(x)[1][0]
            if indices is None:
                indices = part.new_empty(self.grid, device="cpu")
            indices[(slice(None), *tile.latent(tile.core))] = core_latent(part, tile).cpu()
        return indices

    def encode_predicted(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(indices, head score, head full-rate error estimate [t,h,w], window summary) with the router
        head run on each crop's features (its dilated convolutions reach 7 positions, inside the halo)."""
        tok = self.tok
        indices = torch.empty(self.grid, dtype=torch.int64)
        score, error = torch.empty(self.grid), torch.empty(self.grid)
        pix, zrms, positions = torch.zeros(4, dtype=torch.float64), 0.0, 0
        for tile, x in self.inputs():
            with tok.stage("encoder"), tok.autocast():
                features, _, part = extract_features(tok.model, x)
            with tok.stage("router"), tok.autocast():
                s, e = tok.head.predict(features)
            where = (slice(None), *tile.latent(tile.core))
            indices[where] = core_latent(part[0], tile).cpu()
            score[where], error[where] = core_latent(s, tile).cpu(), core_latent(e, tile).cpu()
            # the summary's feature means, pooled over the cores
            rows, cols = tile.inner_latent()
            pix += features["pix"][0][:, :, rows, cols].double().sum((1, 2, 3)).cpu()
            zrms += features["zrms"][0][:, :, rows, cols].double().sum().item()
            positions += self.t * (rows.stop - rows.start) * (cols.stop - cols.start)
        pooled = {"pix": (pix / positions).float().view(1, 4, 1, 1, 1), "zrms": torch.tensor(zrms / positions)}
        return indices, score, error, window_summary(pooled, score, error.log())

    def decode(self, indices: torch.Tensor, keep: torch.Tensor | None,
               sink: Callable[[Tile, torch.Tensor], None], stage: str) -> None:
        """Decode the window's tokens (keep None: all of them) crop by crop; sink(tile, reconstruction
        [1,3,T,h,w] of the crop) takes each."""
        tok = self.tok
        for tile in self.tiles:
            where = (slice(None), *tile.latent(tile.crop))
            part = indices[where][None].to(tok.device)
            mask = torch.ones_like(part, dtype=torch.bool) if keep is None else keep[where][None].to(tok.device)
            top, bottom, left, right = tile.crop
            tok.bound_chunks(bottom - top, right - left)
            with tok.stage(stage), tok.autocast():
                recon = tok.model.decode_indices(part, mask)
            sink(tile, recon)

    def errors(self, indices: torch.Tensor, keep: torch.Tensor | None, stage: str,
               psnr: bool = False) -> tuple[torch.Tensor, float | None]:
        """(per-position error [t,h,w] of a decode, PSNR of its reconstruction when `psnr`)."""
        error = torch.empty(self.grid)
        sse = [0.0, 0]
        assert self.frames is not None

        def sink(tile: Tile, recon: torch.Tensor) -> None:
            x = tile_input(self.frames, tile.crop, self.tok.device)
            where = (slice(None), *tile.latent(tile.core))
            error[where] = position_error(core_of(x, tile), core_of(recon, tile))[0].cpu()
            if psnr:
                part, (top, bottom, left, right) = core_frames(recon, tile, *self.frames.shape[:3])
                s, count = mse_sum(part, self.frames[:, top:bottom, left:right])
                sse[0] += s
                sse[1] += count

        self.decode(indices, keep, sink, stage)
        return error, psnr_from_mse(sse[0] / sse[1]) if psnr else None

    def probe_scores(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(error where dropped, error where sent), as router.probe_errors gives them for the whole frame."""
        half = probe_half(self.grid)
        at_half, _ = self.errors(indices, half, "probe decodes")
        at_rest, _ = self.errors(indices, ~half, "probe decodes")
        return torch.where(half, at_rest, at_half), torch.where(half, at_half, at_rest)

    def frames_of(self, indices: torch.Tensor, keep: torch.Tensor, n: int, h: int, w: int) -> np.ndarray:
        """The decoded frames uint8 [n,h,w,3] of kept tokens."""
        out = np.empty((n, h, w, 3), dtype=np.uint8)

        def sink(tile: Tile, recon: torch.Tensor) -> None:
            part, (top, bottom, left, right) = core_frames(recon, tile, n, h, w)
            out[:, top:bottom, left:right] = part

        self.decode(indices, keep, sink, "decoder")
        return out


def core_latent(x: torch.Tensor, tile: Tile) -> torch.Tensor:
    """The core of a crop's latent map [..., h, w]."""
    rows, cols = tile.inner_latent()
    return x[..., rows, cols]
