"""What every model family gives the coding engine: `coding/` calls a model only through this surface,
so it names no family.

A family is a torch module with
- `encode(frames) -> (codes, indices)` and `decode(codes, keep=None) -> frames` (frames [B,3,T,H,W] in
  [-1, 1], codes [B,t,h,w,d], indices and keep [B,t,h,w]), `indices_to_codes(indices)`;
- `for_inference_(dtype)`: eval mode, ready to run under autocast to `dtype` (in place; returns itself);
- `default_placement`: the router placement used when the weights carry no learned router head;
- `keep_count(rate, capacity)`: how many of a window's `capacity` positions a keep rate keeps;
- `default_tile`: (core, halo) in pixels of the tiles a frame larger than the core is coded in
  (coding/tiling.py); `tile_align`: the pixel grid tiles start on (where the model's attention windows
  do); `largest_side`: the largest frame side the model takes at once, None for any;
- `bound_memory(latent_frames_per_chunk)`: how many latent frames a per-frame stage may hold at once (a
  family that bounds its memory otherwise ignores it).
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

import torch


def tokens_for_rate(rate: float, capacity: int) -> int:
    """k = round(rate x N), at least 1 so a window is never empty."""
    return max(1, min(capacity, int(round(rate * capacity))))


@runtime_checkable
class TokenizerModel(Protocol):
    default_placement: ClassVar[str]
    default_tile: ClassVar[tuple[int, int]]

    @property
    def tile_align(self) -> int: ...

    @property
    def largest_side(self) -> int | None: ...

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decode(self, codes: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor: ...

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor: ...

    def for_inference_(self, dtype: torch.dtype) -> TokenizerModel: ...

    def keep_count(self, rate: float, capacity: int) -> int: ...

    def bound_memory(self, latent_frames_per_chunk: int) -> None: ...
