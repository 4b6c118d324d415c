"""Evaluation: how good the tokens are, against what.

Holds the perceptual metric (`perceptual`: ST-LPIPS), codebook statistics (`codebook`: token entropy,
numpy only), the baselines (`baselines`: x264/x265 at the same size, an ElasticTok-style search), the
rate-distortion evaluation (`evaluate`: methods as a table name -> function, report, CSV, plot) and the
test clips the benchmarks and scripts prepare (`clips`). PSNR and SSIM are `coding.metrics` (the
`--target-psnr` rate control needs PSNR).

May import: rank 0, `format`, `io`, `model` and `coding`. Nothing from report, train, cli.
"""
