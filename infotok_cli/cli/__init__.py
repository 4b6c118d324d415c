"""The `infotok` command line (Typer + Rich): the app and its exit codes (`app`), one module per command
group (`coding`: compress, decompress; `files`: inspect, export, visualize, doctor; `models`: models,
models import / remove; `evaluation`: eval, train) and batch mode (`batch`).

May import everything in the package. Nothing imports it but `__main__` and the console script
(`infotok = infotok_cli.cli:main`). Library modules are imported inside the commands, so quick paths
(`--help`, a missing input, `inspect`) do not pay for torch.
"""

from . import coding, evaluation, files, models  # noqa: F401  (registers the commands on `app`)
from .app import app, main

__all__ = ["app", "main"]
