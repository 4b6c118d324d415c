"""Window geometry: how a video is cut into coding windows and how a window's frames become the model's
input and come back.

Frames stream through in coding windows of `window` = 1 + 4k frames that overlap by `overlap`
frames, so memory is bounded by one window whatever the video's length. Each window is padded to the
model's stride (edge pixels repeated; cropped back on decode) and a short last window is padded in time
by repeating its last frame to the nearest 1 + 4k (the padding is dropped on decode). On decode,
overlapping frames are blended (`blend_weights`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from ..constants import SPATIAL_STRIDE, TEMPORAL_STRIDE
from ..errors import CodecError
from ..format.header import check_window, plan_windows  # noqa: F401 (the format's rules, used here)

Progress = Callable[[int, int], None]  # a progress callback: (frames done, frames total)


def padded_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) rounded up to the model's spatial stride: the frame size a window is coded at."""
    return -(-height // SPATIAL_STRIDE) * SPATIAL_STRIDE, -(-width // SPATIAL_STRIDE) * SPATIAL_STRIDE


def padded_length(frames: int) -> int:
    """Smallest 1 + 4k that is >= frames."""
    return 1 + -(-(frames - 1) // TEMPORAL_STRIDE) * TEMPORAL_STRIDE


def iter_windows(frames: Iterator[np.ndarray], num_frames: int, window: int, overlap: int
                 ) -> Iterator[tuple[int, np.ndarray]]:
    """Group a frame stream into (first frame, frames [n,H,W,3]) windows, keeping only one window."""
    plan = plan_windows(num_frames, window, overlap)
    buffer: list[np.ndarray] = []
    buffer_start = 0
    for start, count in plan:
        drop = start - buffer_start  # frames of the previous window that are not shared
        buffer, buffer_start = buffer[drop:], start
        while len(buffer) < count:
            try:
                buffer.append(next(frames))
            except StopIteration:
                raise CodecError(f"the video ended after {start + len(buffer)} of {num_frames} frames") from None
        yield start, np.stack(buffer[:count])


def to_model_input(frames: np.ndarray, padded_hw: tuple[int, int], device: torch.device) -> torch.Tensor:
    """uint8 [n,H,W,3] -> float [1,3,T,Hp,Wp] in [-1, 1], padded in time (1 + 4k) and space (stride)."""
    n, h, w, _ = frames.shape
    x = torch.from_numpy(frames).to(device).permute(3, 0, 1, 2).float().div_(127.5).sub_(1)
    hp, wp = padded_hw
    if (hp, wp) != (h, w):  # repeat edge pixels: cheaper to code than a black border
        x = torch.nn.functional.pad(x, (0, wp - w, 0, hp - h), mode="replicate")
    t = padded_length(n)
    if t > n:
        x = torch.cat([x, x[:, -1:].expand(-1, t - n, -1, -1)], dim=1)
    return x[None]


def to_frames(x: torch.Tensor, n: int, h: int, w: int) -> np.ndarray:
    """[1,3,T,Hp,Wp] in [-1, 1] -> uint8 [n,h,w,3] (padding cropped), one frame at a time so that no
    float copy of the whole window is made."""
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        # clamp, not clamp_: float() returns x itself when it is float32, and x must stay as it was
        frame = x[0, :, i, :h, :w].float().clamp(-1, 1).add_(1).mul_(127.5).round_()
        out[i] = frame.to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return out




def blend_weights(overlap: int) -> np.ndarray:
    """Weights of the earlier window on the shared frames: 0.75, 0.5, 0.25 for an overlap of 3."""
    return np.array([(overlap - i) / (overlap + 1) for i in range(overlap)], dtype=np.float32)

