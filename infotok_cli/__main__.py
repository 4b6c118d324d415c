"""`python -m infotok_cli ...` runs the CLI (also how torchrun launches distributed training)."""

from .cli import main

main()
