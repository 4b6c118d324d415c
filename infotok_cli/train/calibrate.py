"""Calibration: a model's reference errors measured on the user's own clips.

The `global` rate strategy and the probe-gain placement scale errors by two reference errors that the
shipped weights carry from training (`e_ref`, `e_ref_probe`: train.reference_errors). Imported weights
record none; `infotok models import --calibrate DIR` measures them with `calibrate_model`, which works
for either model family (train.window_reference_errors), and model.flex_store stores them with the
weights.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import closing
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..coding.geometry import padded_size, plan_windows, to_model_input
from ..coding.precision import resolve_device, resolve_precision
from ..constants import VIDEO_INPUT_SUFFIXES
from ..errors import OptionError, VideoError, one_line
from ..io.video import iter_frames, probe_video
from .objective import window_reference_errors

CALIBRATION_WINDOW = 17  # frames per coding window: the authors' window
# At most this many windows per clip, so that one long clip does not outweigh the others (and the work
# stays bounded: each window costs four network passes).
CALIBRATION_MAX_WINDOWS = 4
CALIBRATION_MAX_FRAMES = CALIBRATION_WINDOW * CALIBRATION_MAX_WINDOWS
StepProgress = Callable[[int, int, str], None]  # (windows done, windows total, what runs next)


def calibration_clips(folder: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """The video files directly in `folder` (by name; the first `limit` of them); VideoError if none."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "not a folder" if folder.exists() else "folder not found"
        raise VideoError(f"{folder}: {what} (--calibrate takes a folder of video clips)")
    try:
        clips = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_INPUT_SUFFIXES and p.is_file())
    except OSError as exc:
        raise VideoError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None
    if not clips:
        raise VideoError(f"{folder}: no video files ({', '.join(VIDEO_INPUT_SUFFIXES)}) to calibrate on")
    if limit is not None:
        if limit < 1:
            raise OptionError(f"--calibrate-clips must be at least 1, got {limit}")
        clips = clips[:limit]
    return clips


def check_calibration_frames(frames: int) -> None:
    if not 1 <= frames <= CALIBRATION_MAX_FRAMES:
        raise OptionError(f"--calibrate-frames must be between 1 and {CALIBRATION_MAX_FRAMES} "
                          f"({CALIBRATION_MAX_WINDOWS} windows of {CALIBRATION_WINDOW}), got {frames}")


def calibrate_model(model: nn.Module, clips: list[Path], *, frames: int = CALIBRATION_WINDOW,
                    device: str | torch.device = "auto", progress: StepProgress | None = None) -> dict:
    """(e_ref, e_ref_probe) of `model` (any family) on the first `frames` frames of each clip, cut into
    coding windows of CALIBRATION_WINDOW frames (a shorter last window padded as `compress` pads it), at
    the clips' own size, in the precision `auto` resolves to on `device`: the mean over windows of each
    window's mean per-position error in the full-rate decode and in the probe decodes where a position is
    sent (window_reference_errors). Clips that cannot be read or coded are left out and listed in
    `skipped`; VideoError if none is left. Returns the two errors and what they were measured on
    (model.flex_store refuses errors that are not finite and positive)."""
    check_calibration_frames(frames)
    device = resolve_device(device) if isinstance(device, str) else device
    precision = resolve_precision("auto", device)
    # Probe every clip first (fast): unreadable ones are known, and the total for the progress bar, before
    # the first network pass.
    plans, skipped = [], []
    for clip in clips:
        try:
            info = probe_video(clip)
        except VideoError as exc:
            skipped.append(one_line(exc))
            continue
        if info.num_frames < 1:
            skipped.append(f"{clip}: no frames")
            continue
        plans.append((clip, info, plan_windows(min(frames, info.num_frames), CALIBRATION_WINDOW, 0)))
    total = sum(len(windows) for _, _, windows in plans)
    model.eval().to(device)
    errors, sizes, used_frames, done = [], set(), 0, 0
    for clip, info, windows in plans:
        if progress is not None:
            progress(done, total, clip.name)
        n = windows[-1][0] + windows[-1][1]
        measured: list[tuple[float, float]] = []
        try:
            with closing(iter_frames(clip, info)) as stream:
                video = np.stack(list(islice(stream, n)))
            padded_hw = padded_size(info.height, info.width)
            for start, count in windows:
                x = to_model_input(video[start:start + count], padded_hw, device)
                measured.append(window_reference_errors(model, x, precision))
                if progress is not None:
                    progress(done + len(measured), total, clip.name)
        except VideoError as exc:  # names the file
            skipped.append(one_line(exc))
        except ValueError as exc:  # the model refuses the input, e.g. frames larger than its rotary table
            skipped.append(one_line(f"{clip}: {exc}"))
        else:
            errors += measured
            sizes.add(f"{info.width}x{info.height}")
            used_frames += n
        done += len(windows)
    if not errors:
        raise VideoError(f"none of the {len(clips)} video files could be used for calibration ({skipped[0]})")
    e_ref, e_ref_probe = float(np.mean([e[0] for e in errors])), float(np.mean([e[1] for e in errors]))
    return {"e_ref": e_ref, "e_ref_probe": e_ref_probe, "clips": len(clips) - len(skipped),
            "windows": len(errors), "frames": used_frames, "frames_per_clip": frames, "window": CALIBRATION_WINDOW,
            "sizes": sorted(sizes), "precision": precision.name, "device": device.type, "skipped": skipped}
