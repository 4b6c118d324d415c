"""Show where the tokens of an .itok file go: one output frame per source frame, panels side by side.

    [original] | reconstruction + mask | tokens kept | keep %

* original: the source frame (only when the source video is given);
* reconstruction + mask: the decoded frame, with the positions whose token was dropped dimmed and
  tinted blue, so moving detail (kept) stands out against a static background (dropped);
* tokens kept: the keep mask itself, white = kept, black = dropped, each latent position drawn as
  the 8x8 pixels it covers;
* keep %: a bar filled to the fraction of that frame's latent frame that was kept.

A frame shows the mask of the latent frame it belongs to (frame 0 of a window -> latent frame 0,
frames 1-4 -> latent frame 1, ...); frames shared by two windows belong to the earlier one. Both
rules live in `stats`, so `infotok inspect` and this view always agree.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..coding.decompress import iter_decoded
from ..coding.geometry import Progress
from ..coding.tokenizer import Tokenizer
from ..constants import SPATIAL_STRIDE
from ..errors import CodecError, OptionError
from ..format.header import Header
from ..format.reader import ItokReader
from ..io.video import VideoInfo, iter_frames, probe_video
from ..io.video_writer import VideoWriter
from .stats import frame_owners, latent_index

PANEL_NAMES = ("original", "reconstruction + mask", "tokens kept", "keep %")
# Shorter captions, tried in turn when a panel is too narrow for the full one (small videos).
_CAPTIONS = {
    "original": ("original", "orig", "src"),
    "reconstruction + mask": ("reconstruction + mask", "recon + mask", "recon"),
    "tokens kept": ("tokens kept", "tokens", "mask"),
    "keep %": ("keep %", "%"),
}

DIM = 90  # dropped positions keep 90/256 (~0.35) of their brightness ...
TINT = np.array([0, 18, 64], dtype=np.uint16)  # ... plus a blue tint, so "dark" reads as "dropped"
BACKGROUND = (48, 48, 48)  # grey, so the black of a fully dropped mask panel is still visible
CAPTION_COLOR = (235, 235, 235)
BAR_EMPTY = (20, 20, 20)
BAR_FILL = (255, 190, 40)
BAR_OUTLINE = (150, 150, 150)
MIN_ROW = 64  # panel rows are at least this tall, so the bar and its label fit next to tiny videos


# ----------------------------------------------------------------------------- drawing


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled default font (no system fonts, no network); scalable where FreeType exists."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font only
        return ImageFont.load_default()


def _text_size(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return int(right - left), int(bottom - top)


def _fit_caption(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, name: str, width: int) -> str:
    """The longest caption variant that fits `width`; the shortest one, cut, if none does."""
    for text in _CAPTIONS[name]:
        if _text_size(font, text)[0] <= width:
            return text
    text = _CAPTIONS[name][-1]
    while text and _text_size(font, text)[0] > width:
        text = text[:-1]
    return text


@dataclass(frozen=True)
class Layout:
    """Geometry of a composed frame for frames of height x width; every x/y is the top-left corner."""

    height: int  # frame size (display orientation)
    width: int
    out_height: int  # composed frame size
    out_width: int
    row_y: int  # top of the panel row
    row_h: int
    panels: tuple[tuple[str, int, int], ...]  # (name, x, panel width)
    margin: int
    scale: int  # 1 up to ~540-pixel rows, then grows so that text and bar stay legible
    font_size: int
    caption: bool

    @property
    def frame_y(self) -> int:
        """Top of the frames: centred in the row (which is taller than tiny frames)."""
        return self.row_y + (self.row_h - self.height) // 2

    def x_of(self, name: str) -> int:
        return next(x for n, x, _ in self.panels if n == name)

    def bar_box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the bar's interior (exclusive ends), inside the keep % panel."""
        _, x, w = self.panels[-1]
        bar_w = 24 * self.scale
        text_h = _text_size(_font(self.font_size), "100%")[1]
        x0 = x + (w - bar_w) // 2
        y0 = self.row_y + self.margin + 1
        y1 = self.row_y + self.row_h - text_h - 2 * self.margin - 1
        return x0 + 1, y0, x0 + bar_w - 1, y1


@lru_cache(maxsize=8)
def layout_for(height: int, width: int, with_original: bool, caption: bool = True) -> Layout:
    """Panel positions for frames of height x width (cached: it is the same for every frame)."""
    row_h = max(height, MIN_ROW)
    scale = max(1, round(row_h / 360))  # text and bar grow with the video, so 4K output stays legible
    font_size, margin = 11 * scale, 4 * scale
    font = _font(font_size)
    bar_col = max(24 * scale + 16 * scale, _text_size(font, "100%")[0] + 2 * margin,
                  _text_size(font, "keep %")[0] + 2 * margin)
    names = PANEL_NAMES if with_original else PANEL_NAMES[1:]
    widths = [width] * (len(names) - 1) + [bar_col]
    panels, x = [], margin
    for name, w in zip(names, widths, strict=True):
        panels.append((name, x, w))
        x += w + margin
    caption_h = _text_size(font, "Ag%")[1] + 2 * margin if caption else 0
    row_y = margin + caption_h
    return Layout(height=height, width=width, out_height=row_y + row_h + margin, out_width=x, row_y=row_y,
                  row_h=row_h, panels=tuple(panels), margin=margin, scale=scale, font_size=font_size,
                  caption=caption)


@lru_cache(maxsize=8)
def _base_canvas(lay: Layout) -> np.ndarray:
    """The parts that never change: background, captions and the bar's outline (drawn once)."""
    img = Image.new("RGB", (lay.out_width, lay.out_height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    font = _font(lay.font_size)
    if lay.caption:
        top = font.getbbox("Ag%")[1]  # one baseline for all captions, whatever their letters
        for name, x, w in lay.panels:
            text = _fit_caption(font, name, w)
            tw = _text_size(font, text)[0]
            left = font.getbbox(text)[0]
            draw.text((x + (w - tw) // 2 - left, lay.margin - top), text, fill=CAPTION_COLOR, font=font)
    x0, y0, x1, y1 = lay.bar_box()
    draw.rectangle((x0 - 1, y0 - 1, x1, y1), outline=BAR_OUTLINE, fill=BAR_EMPTY)
    canvas = np.asarray(img).copy()
    canvas.flags.writeable = False  # shared by every frame: compose_frame copies it
    return canvas


def mask_to_pixels(mask_hw: np.ndarray, height: int, width: int) -> np.ndarray:
    """Latent keep mask [h,w] -> bool [height,width]: each position covers its 8x8 pixels (nearest),
    cropped to the frame (the latent grid covers the frame padded up to a multiple of 8)."""
    mask = np.asarray(mask_hw, dtype=bool)
    if mask.ndim != 2 or mask.shape[0] * SPATIAL_STRIDE < height or mask.shape[1] * SPATIAL_STRIDE < width:
        raise ValueError(f"a latent mask of shape {mask.shape} does not cover a {width}x{height} frame")
    rows = np.repeat(mask[: -(-height // SPATIAL_STRIDE)], SPATIAL_STRIDE, axis=0)[:height]
    return np.repeat(rows[:, : -(-width // SPATIAL_STRIDE)], SPATIAL_STRIDE, axis=1)[:, :width]


def overlay_mask(recon: np.ndarray, mask_px: np.ndarray) -> np.ndarray:
    """Dim and tint the pixels whose token was dropped; kept pixels are left exactly as they are."""
    dropped = (recon.astype(np.uint16) * DIM >> 8) + TINT
    return np.where(mask_px[..., None], recon, np.minimum(dropped, 255).astype(np.uint8))


def compose_frame(original: np.ndarray | None, recon: np.ndarray, mask_hw: np.ndarray, keep_fraction: float,
                  caption: bool = True) -> np.ndarray:
    """One output frame (uint8 [H', W', 3]): [original |] reconstruction + mask | mask | keep % bar.

    `mask_hw` is either the latent keep mask [ceil(H/8), ceil(W/8)] or already the pixel mask [H, W]
    (the two readings coincide for the one shape they share, 1x1).
    """
    if recon.dtype != np.uint8 or recon.ndim != 3 or recon.shape[2] != 3:
        raise ValueError(f"recon must be a uint8 [H,W,3] frame, got {recon.dtype} {recon.shape}")
    height, width = recon.shape[:2]
    if original is not None and (original.shape != recon.shape or original.dtype != np.uint8):
        raise ValueError(f"original {original.dtype} {original.shape} does not match recon {recon.shape}")
    mask = np.asarray(mask_hw, dtype=bool)
    mask_px = mask if mask.shape == (height, width) else mask_to_pixels(mask, height, width)
    lay = layout_for(height, width, original is not None, caption)
    out = _base_canvas(lay).copy()
    y = lay.frame_y
    for name, pixels in (("original", original), ("reconstruction + mask", overlay_mask(recon, mask_px)),
                         ("tokens kept", np.where(mask_px, 255, 0).astype(np.uint8)[..., None])):
        if pixels is not None:
            x = lay.x_of(name)
            out[y : y + height, x : x + width] = pixels
    _draw_bar(out, lay, float(np.clip(keep_fraction, 0.0, 1.0)))
    return out


def _draw_bar(out: np.ndarray, lay: Layout, fraction: float) -> None:
    """Fill the bar from the bottom and write the percentage under it (into `out`, in place)."""
    x0, y0, x1, y1 = lay.bar_box()
    filled = round(fraction * (y1 - y0))
    if filled:
        out[y1 - filled : y1, x0:x1] = BAR_FILL
    _, px, pw = lay.panels[-1]
    text = f"{100 * fraction:.0f}%"
    font = _font(lay.font_size)
    tw, th = _text_size(font, text)
    left, top, _, _ = font.getbbox(text)
    # Draw on a small crop only: converting the whole frame to PIL per frame would be wasted work.
    ty0 = y1 + lay.margin
    crop = Image.fromarray(out[ty0 : ty0 + th + lay.margin, px : px + pw])
    ImageDraw.Draw(crop).text(((pw - tw) // 2 - left, -top), text, fill=CAPTION_COLOR, font=font)
    out[ty0 : ty0 + th + lay.margin, px : px + pw] = np.asarray(crop)


# ----------------------------------------------------------------------------- streaming


def to_display(frame: np.ndarray, rotation: int) -> np.ndarray:
    """Coded orientation -> display orientation (`rotation`: counter-clockwise degrees, as probed)."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(frame, k)) if k else frame


def iter_frame_masks(reader: ItokReader) -> Iterator[tuple[np.ndarray, float]]:
    """(latent keep mask [h,w], kept fraction) of every source frame, in order.

    Reads one window at a time (the owner of the next frame), so memory stays at one window's mask.
    """
    current, mask = -1, None
    for window, j in frame_owners(reader.windows):
        if window != current:
            current, mask = window, reader.read_window(window).keep_mask
        latent = mask[latent_index(j)]
        yield latent, float(latent.mean())


def check_source(source: str | Path, header: Header) -> VideoInfo:
    """Probe `source` and insist that it is the video the .itok file was made from (size, frames): an
    OptionError (the wrong source was given) otherwise."""
    info = probe_video(source)
    if (info.width, info.height, info.num_frames) != (header.width, header.height, header.num_frames):
        raise OptionError(
            f"--source {Path(source).name} does not match the .itok file: it is {info.width}x{info.height} "
            f"with {info.num_frames} frames, the .itok file is {header.width}x{header.height} with "
            f"{header.num_frames} frames")
    return info


def iter_composed(reader: ItokReader, tok: Tokenizer, source: str | Path | None = None,
                  source_info: VideoInfo | None = None, caption: bool = True) -> Iterator[np.ndarray]:
    """Composed frames of an open .itok file, one per source frame, in display orientation."""
    h = reader.header
    originals = iter_frames(source, source_info) if source is not None else None
    for recon, (latent, fraction) in zip(iter_decoded(reader, tok), iter_frame_masks(reader), strict=False):
        # The pixel mask is built in coded orientation (the latent grid's padding is right/bottom there).
        mask_px = mask_to_pixels(latent, h.height, h.width)
        original = to_display(next(originals), h.rotation) if originals is not None else None
        recon, mask_px = to_display(recon, h.rotation), to_display(mask_px, h.rotation)
        yield compose_frame(original, recon, mask_px, fraction, caption)


def visualize(itok_path: str | Path, out_path: str | Path, tok: Tokenizer, *,
              source: str | Path | None = None, overwrite: bool = False,
              progress: Progress | None = None) -> dict:
    """Render the token-mask visualisation of `itok_path` to the video `out_path`.

    The output has the source's frame count, frame rate and timestamps; it is written atomically and
    never replaces an existing file unless `overwrite`. Returns a small summary dict.
    """
    t0 = time.perf_counter()
    with ItokReader(itok_path) as reader:
        h = reader.header
        tok.check_weights(h.weights_sha256, h.model_name)
        info = check_source(source, h) if source is not None else None
        quarter_turn = (h.rotation // 90) % 2 == 1
        disp_h, disp_w = (h.width, h.height) if quarter_turn else (h.height, h.width)
        lay = layout_for(disp_h, disp_w, source is not None)
        sar = Fraction(h.sar_num, h.sar_den) if h.sar_num else Fraction(1)
        # Panels are rotated upright here (captions must not be sideways), so no display rotation.
        with VideoWriter(out_path, lay.out_width, lay.out_height, Fraction(h.fps_num, h.fps_den),
                         pts=list(h.pts), time_base=Fraction(h.time_base_num, h.time_base_den),
                         sar=1 / sar if quarter_turn else sar, overwrite=overwrite) as out:
            count = 0
            for frame in iter_composed(reader, tok, source, info):
                out.write(frame)
                count += 1
                if progress:
                    progress(count, h.num_frames)
            if count != h.num_frames:  # raised inside the writer, so no partial output is left
                raise CodecError(f"decoded {count} frames, but the file declares {h.num_frames}")
    return {
        "input": str(itok_path),
        "output": str(out_path),
        "source": str(source) if source is not None else None,
        "frames": count,
        "width": lay.out_width,
        "height": lay.out_height,
        "panels": [name for name, _, _ in lay.panels],
        "seconds": time.perf_counter() - t0,
    }
