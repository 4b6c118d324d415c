"""Generate the four sample clips in ``samples/``, from nearly static to very busy.

All frames are synthesised with numpy (seeded, so every run produces the same pictures) and
encoded with :class:`infotok_cli.io.video_writer.VideoWriter` (libx264, yuv420p, crf 18):

* ``static.mp4``  - a fixed photo-like textured scene with faint sensor-like noise;
* ``slow.mp4``    - the same kind of scene with a few soft objects drifting slowly;
* ``busy.mp4``    - dozens of fast, high-detail sprites over a scrolling fine texture;
* ``camera.mp4``  - a camera panning (sub-pixel, diagonal) across a large textured world.

Usage: ``python scripts/make_samples.py --out samples``
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from infotok_cli.io.video_writer import VideoWriter

SIZE = 256
FRAMES = 33
FPS = Fraction(30)
CRF = 18

Frames = Callable[[np.random.Generator], Iterator[np.ndarray]]


def bilinear(img: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample ``img`` [H, W, C] at float coordinates (wrapping around), bilinearly."""
    h, w = img.shape[:2]
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = (ys - y0)[..., None], (xs - x0)[..., None]
    y0, x0 = y0 % h, x0 % w
    y1, x1 = (y0 + 1) % h, (x0 + 1) % w
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def fractal_texture(rng: np.random.Generator, h: int, w: int, cells: tuple[int, ...]) -> np.ndarray:
    """Photo-like 1/f texture in [0, 1]: random colour grids of several scales, smoothly upsampled.

    Coarse grids (few cells) give large colour regions, fine ones give detail; amplitude falls
    with the cell count as in natural images. Tiles seamlessly (the grids wrap)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.zeros((h, w, 3))
    for n in cells:
        grid = rng.random((n, n, 3))
        # smoothstep the fractional part so cell borders do not show as a lattice
        gy, gx = ys * n / h, xs * n / w
        iy, ix = np.floor(gy), np.floor(gx)
        ty, tx = gy - iy, gx - ix
        ty, tx = ty * ty * (3 - 2 * ty), tx * tx * (3 - 2 * tx)
        out += bilinear(grid, iy + ty, ix + tx) / n**0.35
    out -= out.min()
    return out / out.max()


def with_edges(rng: np.random.Generator, tex: np.ndarray, count: int) -> np.ndarray:
    """Add a few hard-edged shapes (like buildings/objects) so the scene has structure, not only blur."""
    h, w = tex.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    tex = tex.copy()
    for _ in range(count):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(8, max(9, h // 6))
        colour = rng.random(3)
        if rng.random() < 0.5:
            mask = (ys - cy) ** 2 + (xs - cx) ** 2 < r * r
        else:
            mask = (abs(ys - cy) < r) & (abs(xs - cx) < r * 0.6)
        tex[mask] = 0.35 * tex[mask] + 0.65 * colour
    return tex


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def static_frames(rng: np.random.Generator) -> Iterator[np.ndarray]:
    scene = with_edges(rng, fractal_texture(rng, SIZE, SIZE, (3, 6, 12, 24, 48, 96)), 12)
    for _ in range(FRAMES):
        yield to_uint8(scene + rng.normal(0, 0.6 / 255, scene.shape))


def slow_frames(rng: np.random.Generator) -> Iterator[np.ndarray]:
    scene = with_edges(rng, fractal_texture(rng, SIZE, SIZE, (3, 6, 12, 24, 48)), 8)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    blobs = [(rng.uniform(40, 216), rng.uniform(40, 216), rng.uniform(18, 36), rng.random(3),
              rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.8)) for _ in range(4)]  # fmt: skip
    for t in range(FRAMES):
        frame = scene.copy()
        for cy, cx, r, colour, vy, vx in blobs:
            d2 = (ys - cy - vy * t) ** 2 + (xs - cx - vx * t) ** 2
            alpha = np.exp(-d2 / (2 * r * r))[..., None] * 0.8
            frame = frame * (1 - alpha) + colour * alpha
        yield to_uint8(frame * (1 + 0.03 * np.sin(t / 10)))  # gentle light change


def busy_frames(rng: np.random.Generator) -> Iterator[np.ndarray]:
    background = fractal_texture(rng, SIZE, SIZE, (16, 32, 64, 128))
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    sprites = []
    for _ in range(40):
        s = int(rng.integers(12, 40))
        texture = fractal_texture(rng, s, s, (4, 8, 16))
        stripes = (np.indices((s, s)).sum(0) // int(rng.integers(2, 5))) % 2
        texture = 0.6 * texture + 0.4 * stripes[..., None] * rng.random(3)
        pos = rng.uniform(0, SIZE, 2)
        vel = rng.uniform(-9, 9, 2)
        sprites.append((texture, pos, vel))
    for t in range(FRAMES):
        # the background scrolls one way and shimmers, the sprites fly every way
        frame = bilinear(background, ys + 2.5 * t, xs - 1.7 * t)
        frame = frame + rng.normal(0, 4 / 255, frame.shape)
        for texture, pos, vel in sprites:
            s = texture.shape[0]
            y, x = (pos + vel * t).astype(int) % SIZE
            rows, cols = (np.arange(s) + y) % SIZE, (np.arange(s) + x) % SIZE
            frame[np.ix_(rows, cols)] = texture
        yield to_uint8(frame)


def camera_frames(rng: np.random.Generator) -> Iterator[np.ndarray]:
    world = with_edges(rng, fractal_texture(rng, 512, 768, (4, 8, 16, 32, 64, 128, 256)), 40)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    for t in range(FRAMES):
        # sub-pixel pan to the right and slightly down, like a hand-held camera sweep
        yield to_uint8(bilinear(world, ys + 60 + 0.9 * t, xs + 40 + 4.3 * t))


SAMPLES: dict[str, Frames] = {
    "static.mp4": static_frames,
    "slow.mp4": slow_frames,
    "busy.mp4": busy_frames,
    "camera.mp4": camera_frames,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("samples"), help="output folder (default: samples)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for index, (name, make) in enumerate(SAMPLES.items()):
        rng = np.random.default_rng([args.seed, index])  # independent stream per clip
        path = args.out / name
        with VideoWriter(path, SIZE, SIZE, FPS, crf=CRF, pix_fmt="yuv420p", overwrite=True) as writer:
            for frame in make(rng):
                writer.write(frame)
        print(f"{path}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
