"""Reports: what is in a token file and how it was used, for people.

Holds the statistics of an .itok file (`stats`: from its index, torch-free), its plots and CSV
(`plots`), the token-mask visualization video (`visualize`), the human-readable summaries the command
line prints (`text`) and the environment report (`doctor`).

May import: rank 0, `format`, `io`, `model`, `coding` and `eval`. Nothing from train, cli. Modules are
imported on their own, so `inspect` (stats, plots, text) does not pay for torch.
"""
