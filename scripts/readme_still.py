"""Render one still of the token-mask visualisation for the README: ``docs/visualize_still.png``.

Compresses a sample clip with a model (the shipped default unless ``--model`` is given), composes the
visualisation (original | reconstruction + mask | tokens kept | keep %) and saves one frame, the middle
one by default, as a PNG. The still is taken straight from the composed pixels, not from an encoded
video, so it carries no compression artefacts.

Usage: ``python scripts/readme_still.py [--video samples/busy.mp4] [--model PATH] [--out PATH]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
from contextlib import closing
from itertools import islice
from pathlib import Path

from PIL import Image

from infotok_cli.coding.compress import compress_video
from infotok_cli.coding.tokenizer import Tokenizer
from infotok_cli.format.reader import ItokReader
from infotok_cli.io.video import probe_video
from infotok_cli.model.store import load_model
from infotok_cli.report.visualize import iter_composed

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=ROOT / "samples" / "busy.mp4", help="source clip")
    parser.add_argument("--model", default=None, help="shipped name or .safetensors path (default: shipped)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "visualize_still.png", help="PNG written")
    parser.add_argument("--frame", type=int, default=None, help="frame to save (default: the middle one)")
    parser.add_argument("--beta", type=float, default=None, help="token budget (default: the codec's)")
    parser.add_argument("--strategy", default=None, help="window, global or video (default: the codec's)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args(argv)

    info = probe_video(args.video)
    frame = info.num_frames // 2 if args.frame is None else args.frame
    if not 0 <= frame < info.num_frames:
        parser.error(f"--frame must be in 0..{info.num_frames - 1}")
    tok = Tokenizer(load_model(args.model), args.device)
    # Only the options given are passed, so the still shows what `infotok compress` does by default.
    options = {k: v for k, v in (("beta", args.beta), ("strategy", args.strategy)) if v is not None}

    with tempfile.TemporaryDirectory() as tmp:
        itok = Path(tmp) / "still.itok"
        compress_video(args.video, itok, tok, **options)
        with ItokReader(itok) as reader, closing(iter_composed(reader, tok, args.video, info)) as frames:
            # islice stops after the chosen frame: the rest of the clip need not be decoded
            composed = next(islice(frames, frame, None))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(f".{args.out.name}.tmp")
    Image.fromarray(composed).save(partial, format="PNG", optimize=True)
    os.replace(partial, args.out)  # never leave a half-written still under the real name
    print(f"wrote {args.out} (frame {frame} of {info.num_frames}, {composed.shape[1]}x{composed.shape[0]})")
    return args.out


if __name__ == "__main__":
    main()
