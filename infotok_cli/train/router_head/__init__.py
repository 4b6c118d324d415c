"""Training of the learned router head (model/router_head.py) and of its rate curve, the tokenizer frozen.

One command, `python -m infotok_cli.train.router_head COMMAND [options]`, in the order the shipped head
was made (docs/training-log.md):

  data       the head's inputs and probe-gain targets of random training windows (`data`)
  fit        train a head on those windows, keeping the checkpoint that places best on held-out clips (`fit`)
  eval       the head against the other placements on the dev set, at the same token counts (`evaluate`)
  attach     put a trained head into a model's weights file, the tokens' identity kept (`fit.attach`)
  curves     PSNR against keep rate of random training windows, placed by the head (`curves`)
  curve-fit  fit the head's rate curve on those and report it; --attach writes it into the weights (`curve_fit`)

`COMMAND --help` lists each one's options. The commands that draw windows at random take --seed; each
writes only the files it is told to. May import everything below train (rank 0, `format`, `io`, `model`,
`coding`, `eval`) and the rest of `train`; nothing from cli.
"""

from __future__ import annotations

from pathlib import Path

PROG = "python -m infotok_cli.train.router_head"
# The repository checkout the package runs from: default folders (../shared/data/train) are relative to it.
ROOT = Path(__file__).resolve().parents[3]
