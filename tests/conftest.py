"""Shared fixtures: a tiny randomly initialised model and small real videos written with VideoWriter.

The tests never depend on the shipped trained weights: the model here has random weights, which is
enough to check that every frame, timestamp and token count goes where it should.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from infotok_cli.coding.tokenizer import Tokenizer
from infotok_cli.io.video_writer import VideoWriter
from infotok_cli.model import InfoTok, ModelConfig
from infotok_cli.model.store import load_model, save_weights

# One intra-op thread: the tensors here are tiny, and on a busy machine (e.g. with a training job running)
# two OpenMP threads wait on each other so much that a millisecond op can take 100x longer.
torch.set_num_threads(1)

TINY_MODEL = dict(channels_quarter=8, channels_eighth=16, latent_dim=16, width=16, heads=2,
                  compressor_layers=1, decompressor_layers=1)

VideoFactory = Callable[..., Path]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ddp: launches two training processes with torchrun (part of the normal "
                                       "suite, under a minute; deselect with -m 'not ddp')")


def tiny_model(seed: int, name: str = "infotok-test") -> InfoTok:
    torch.manual_seed(seed)
    return InfoTok(ModelConfig(name=name, **TINY_MODEL)).eval()


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random model saved like a real one (safetensors + config + e_ref)."""
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(path, tiny_model(seed=0), e_ref=0.1)
    return path


@pytest.fixture(scope="session")
def other_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same architecture, different random weights: a different SHA-256 than tiny_weights."""
    path = tmp_path_factory.mktemp("weights") / "other.safetensors"
    save_weights(path, tiny_model(seed=1), e_ref=0.1)
    return path


@pytest.fixture(scope="session")
def tokenizer(tiny_weights: Path) -> Tokenizer:
    return Tokenizer(load_model(tiny_weights, "cpu"), "cpu")


def synth_frame(kind: str, k: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Frame k of a synthetic clip: `static` (gradient), `moving` (gradient + a square moving right and
    a scrolling stripe pattern), `noise`, or `ramp` (gradient with noise that grows with k, so later
    windows carry more information)."""
    if kind == "noise":
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if kind == "ramp":
        base = synth_frame("static", k, h, w, rng).astype(np.float32)
        noise = rng.normal(0, 1, (h, w, 3)).astype(np.float32) * 8 * k
        return (base + noise).clip(0, 255).astype(np.uint8)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    frame = np.stack([255 * x / max(w - 1, 1), 255 * y / max(h - 1, 1), np.full_like(x, 96)], axis=-1)
    if kind == "moving":
        frame[..., 2] = 128 + 100 * np.sin((x + 2 * k) / 3.0)
        s = max(2, min(h, w) // 4)
        x0, y0 = (3 * k) % max(1, w - s), (h - s) // 2
        frame[y0:y0 + s, x0:x0 + s] = (250, 240, 30)
    elif kind != "static":
        raise ValueError(kind)
    return frame.clip(0, 255).astype(np.uint8)


def write_video(path: Path, width: int, height: int, frames: int, *, fps: Fraction = Fraction(30),
                kind: str = "moving", pts: list[int] | None = None, time_base: Fraction | None = None,
                seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with VideoWriter(path, width, height, fps, pts=pts, time_base=time_base) as out:
        for k in range(frames):
            out.write(synth_frame(kind, k, height, width, rng))
    return path


@pytest.fixture
def make_video(tmp_path: Path) -> VideoFactory:
    """make_video(width, height, frames, name=..., fps=..., kind=..., pts=..., time_base=...) -> path."""
    counter = iter(range(10**6))

    def make(width: int, height: int, frames: int, name: str | None = None, **kwargs) -> Path:
        return write_video(tmp_path / (name or f"video{next(counter)}.mp4"), width, height, frames, **kwargs)

    return make


@pytest.fixture(scope="session")
def make_shared_video(tmp_path_factory: pytest.TempPathFactory) -> VideoFactory:
    """Like make_video, for module- or session-scoped fixtures (the files live for the whole session)."""
    folder = tmp_path_factory.mktemp("shared")

    def make(width: int, height: int, frames: int, name: str, **kwargs) -> Path:
        return write_video(folder / name, width, height, frames, **kwargs)

    return make


@pytest.fixture(scope="session")
def moving_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48x32, 21 frames: two windows of 17 frames with an overlap of 3."""
    return write_video(tmp_path_factory.mktemp("videos") / "moving.mp4", 48, 32, 21)


@pytest.fixture(scope="session")
def static_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("videos") / "static.mp4", 32, 24, 9, kind="static")


@pytest.fixture(scope="session")
def odd_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Odd frame size (not a multiple of 8 or even of 2) at NTSC rate."""
    return write_video(tmp_path_factory.mktemp("videos") / "odd.mp4", 33, 17, 6, fps=Fraction(30000, 1001))
