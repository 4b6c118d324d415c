"""Convert the ST-LPIPS AlexNet weights of the stlpips-pytorch wheel into the safetensors file shipped in
infotok_cli/perceptual_weights/ (run once; the result is committed).

    pip download stlpips-pytorch==0.0.2 --no-deps -d wheels/
    python scripts/convert_stlpips.py wheels/stlpips_pytorch-0.0.2-py3-none-any.whl

The .pth is read straight out of the wheel (a zip) with torch.load(weights_only=True): nothing from the
wheel is imported or unpickled as code. Every tensor must fit infotok's own network definition with no
missing or unexpected key (perceptual.load_state_strict), and is stored unchanged (float32).
"""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

from safetensors.torch import save_file

from infotok_cli.eval.perceptual import ALEX_WEIGHTS, STLPIPS, _sha256, load_state_strict
from infotok_cli.io.atomic import atomic_write

MEMBER = "stlpips_pytorch/weights/vST0.0/alex_shift_tolerant.pth"
MAX_BYTES = 64 << 20  # the member is 9.9 MB


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wheel", type=Path, help="stlpips_pytorch-0.0.2-py3-none-any.whl")
    ap.add_argument("--out", type=Path, default=ALEX_WEIGHTS)
    ap.add_argument("--force", action="store_true", help="overwrite --out")
    args = ap.parse_args(argv)

    import torch

    with zipfile.ZipFile(args.wheel) as zf:
        info = zf.getinfo(MEMBER)
        if info.file_size > MAX_BYTES:
            raise SystemExit(f"{MEMBER}: {info.file_size} bytes, larger than expected")
        data = zf.read(MEMBER)
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    model = STLPIPS("alex")
    load_state_strict(model, state, MEMBER)  # raises on any missing/unexpected/misshapen key
    tensors = {k: v.contiguous() for k, v in state.items()}
    meta = {"source": f"stlpips-pytorch 0.0.2 wheel, {MEMBER}", "license": "BSD-2-Clause"}
    atomic_write(args.out, lambda tmp: save_file(tensors, str(tmp), metadata=meta), args.force)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes), {len(tensors)} tensors, "
          f"sha256 {_sha256(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
