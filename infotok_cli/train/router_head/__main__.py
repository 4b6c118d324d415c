"""`python -m infotok_cli.train.router_head COMMAND [options]`: see the package docstring."""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module

from . import PROG

# command -> (module, function): a command imports only its own module (torch and PyAV load on demand)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("data", "main"),
    "fit": ("fit", "main"),
    "eval": ("evaluate", "main"),
    "attach": ("fit", "attach_main"),
    "curves": ("curves", "main"),
    "curve-fit": ("curve_fit", "main"),
}


def command(name: str) -> Callable[[list[str] | None], int]:
    module, function = COMMANDS[name]
    return getattr(import_module(f"{__package__}.{module}"), function)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    usage = f"usage: {PROG} {{{','.join(COMMANDS)}}} [options]"
    if not argv or argv[0] in ("-h", "--help"):
        from . import __doc__ as doc

        print(f"{usage}\n\n{doc}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"{usage}\nunknown command {argv[0]!r}", file=sys.stderr)
        return 2
    return command(argv[0])(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
