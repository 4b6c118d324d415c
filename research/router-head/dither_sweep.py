"""Exploratory (tuned on the dev set itself; not a held-out result): dither amount at keep 0.5."""
import sys, tempfile, warnings, json
from pathlib import Path
import numpy as np, torch
warnings.filterwarnings("ignore")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE)); sys.path.insert(0, str(HERE.parent / "scripts"))
from bench import prepare
from dev_quality import dev_clips
from head import load_head, DITHER_SEED
from eval_dev import head_analysis
import infotok_cli.codec as codec
from infotok_cli.router import tokens_for_rate, top_k_mask
from infotok_cli.video_io import iter_frames
from infotok_cli.weights import load_model
torch.set_num_threads(1)
tok = codec.Tokenizer(load_model("infotok-m"), "cpu", "probe-gain")
heads = {Path(h).stem: load_head(h) for h in sys.argv[1:]}
res = {}
with tempfile.TemporaryDirectory() as tmp:
    for clip in dev_clips(Path("../shared/data/train")):
        src = prepare(clip, Path(tmp) / f"{clip.stem}.mp4", (256, 256), 33)
        frames = np.stack(list(iter_frames(src)))
        a = tok.analyse(frames, 0, (256, 256))
        k = tokens_for_rate(0.5, a.indices.numel())
        noise = torch.randn(tuple(a.indices.shape), generator=torch.Generator().manual_seed(DITHER_SEED))
        for name, head in heads.items():
            s = head_analysis(tok, head, frames, 256)[2]
            s = (s - s.mean()) / s.std()
            for amt in (0.25, 0.5):
                res.setdefault(f"{name} dither {amt}", []).append(tok.window_psnr(a, top_k_mask(s + amt * noise, k), frames))
        print(clip.name, {kk: round(v[-1], 2) for kk, v in res.items()}, flush=True)
print(json.dumps({kk: round(float(np.mean(v)), 3) for kk, v in res.items()}))
