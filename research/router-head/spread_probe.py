"""Throwaway: why does the head lose at keep 0.25? Test structure of the selection on a few dev clips."""
import sys, tempfile, warnings
from pathlib import Path
import numpy as np, torch
warnings.filterwarnings("ignore")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE)); sys.path.insert(0, str(HERE.parent / "scripts"))
from bench import prepare
from dev_quality import dev_clips
from head import load_head
from eval_dev import head_analysis
import infotok_cli.codec as codec
from infotok_cli.router import probe_half, random_mask, tokens_for_rate, top_k_mask
from infotok_cli.video_io import iter_frames
from infotok_cli.weights import load_model
torch.set_num_threads(1)
tok = codec.Tokenizer(load_model("infotok-m"), "cpu", "probe-gain")
head = load_head(sys.argv[1])
names = sys.argv[2].split(",")
clips = [c for c in dev_clips(Path("../shared/data/train")) if c.stem in names]
with tempfile.TemporaryDirectory() as tmp:
    for clip in clips:
        src = prepare(clip, Path(tmp) / f"{clip.stem}.mp4", (256, 256), 33)
        frames = np.stack(list(iter_frames(src)))
        a = tok.analyse(frames, 0, (256, 256))
        _, _, s, e = head_analysis(tok, head, frames, 256)
        shape = tuple(a.indices.shape); n = a.indices.numel()
        half = probe_half(shape)
        pg = a.placement_score
        hs = (s - s.mean()) / s.std()
        pgs = (pg - pg.mean()) / pg.std()
        for rate in (0.25, 0.5):
            k = tokens_for_rate(rate, n)
            m = top_k_mask(pg, k)
            print(clip.stem, rate, "probe-gain top-k share in half %.3f" % (m & half).sum().div(k).item(),
                  "per latent frame", m.float().mean((1, 2)).numpy().round(2),
                  "head per latent frame", top_k_mask(hs, k).float().mean((1, 2)).numpy().round(2))
            g = torch.Generator().manual_seed(5)
            noise = torch.randn(shape, generator=g)
            sign = half.float() * 2 - 1
            variants = {"probe-gain": pg, "head": hs, "head+0.5noise": hs + 0.5 * noise, "head+1noise": hs + noise,
                        "head+0.5half": hs + 0.5 * sign, "head+1half": hs + sign,
                        "probe-gain-minus-halfmean": pgs - sign * ((pgs * sign).mean())}
            res = {kname: tok.window_psnr(a, top_k_mask(v, k), frames) for kname, v in variants.items()}
            res["random"] = tok.window_psnr(a, random_mask(shape, k, torch.Generator().manual_seed(0)), frames)
            print(clip.stem, rate, " ".join(f"{kk} {v:.2f}" for kk, v in res.items()), "mean pgs*sign %.3f" % (pgs * sign).mean().item(), flush=True)
