"""The package's layering: every module's imports (read with ast, without importing anything) go to its own
layer or lower ones, never up, and never round in a cycle; the format layer stays free of torch and PyAV."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import infotok_cli

PACKAGE = Path(infotok_cli.__file__).parent
ROOT_NAME = "infotok_cli"

# Layer rank of each part of the package (the longest matching prefix wins): a module may import from its own
# rank or a lower one. See the package docstring and each subpackage's docstring.
PREFIX_RANKS = {
    "infotok_cli.constants": 0,
    "infotok_cli.errors": 0,
    "infotok_cli.format": 1,
    "infotok_cli.io": 2,
    "infotok_cli.model": 3,
    "infotok_cli.coding": 4,
    "infotok_cli.eval": 5,
    "infotok_cli.report": 6,
    "infotok_cli.train": 6,
    "infotok_cli.integrations": 7,
    "infotok_cli.bench": 7,  # a developer tool: the library below it, the command line only as a subprocess
    "infotok_cli.api": 7,
    "infotok_cli.ray_data": 7,  # the documented alias of integrations.ray_data
    "infotok_cli.cli": 8,
}
# Modules ranked by their exact name only. Not prefixes: every module's name starts with the package's, so a
# prefix entry for it would give any module outside every layer a rank.
EXACT_RANKS = {
    "infotok_cli": 9,  # the package's own __init__: the lazy public API
    "infotok_cli.__main__": 9,
}
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def rank(module: str) -> int | None:
    """The module's layer rank; None for a module outside every layer."""
    if module in EXACT_RANKS:
        return EXACT_RANKS[module]
    prefixes = [prefix for prefix in PREFIX_RANKS if module == prefix or module.startswith(prefix + ".")]
    return PREFIX_RANKS[max(prefixes, key=len)] if prefixes else None


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported module, line, only under `if TYPE_CHECKING`) of every import of the package's own modules,
    at any depth (function-level imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.If) and is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_only)
            return
        if isinstance(node, ast.Import):
            found.extend((a.name, node.lineno, type_only) for a in node.names if a.name.split(".")[0] == ROOT_NAME)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == ROOT_NAME:
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
                found.extend((t, node.lineno, type_only) for t in (subs or [target]))
        for child in ast.iter_child_nodes(node):
            visit(child, type_only)

    visit(tree, False)
    return found


def graph() -> dict[str, list[tuple[str, int, bool]]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def test_every_module_has_a_layer() -> None:
    unranked = [name for name in modules() if rank(name) is None]
    assert not unranked, f"modules outside every layer (add them to PREFIX_RANKS): {unranked}"


def test_rank_finds_no_layer_for_an_unlisted_module() -> None:
    """The package root ranks only itself: a new top-level module or subpackage has no layer until listed."""
    assert rank("infotok_cli") == 9 and rank("infotok_cli.__main__") == 9
    assert rank("infotok_cli.model.store") == 3
    assert rank("infotok_cli.newpart") is None and rank("infotok_cli.newpart.sub") is None
    assert rank("infotok_cli.__main__.sub") is None


def test_every_internal_import_exists() -> None:
    """Function-level imports included: a stale path would only fail when that function runs."""
    known = set(modules())
    missing = [f"{src} line {line} imports {dst}" for src, edges in graph().items() for dst, line, _ in edges
               if dst not in known]
    assert not missing, "\n".join(missing)


def test_no_module_imports_from_a_layer_above() -> None:
    def above(dst: str, src: str) -> bool:  # unranked modules fail test_every_module_has_a_layer instead
        dst_rank, src_rank = rank(dst), rank(src)
        return dst_rank is not None and src_rank is not None and dst_rank > src_rank

    upward = [f"{src} (rank {rank(src)}) line {line} imports {dst} (rank {rank(dst)})"
              for src, edges in graph().items() for dst, line, _ in edges if above(dst, src)]
    assert not upward, "\n".join(upward)


def test_no_import_cycles() -> None:
    edges = {src: sorted({dst for dst, _, type_only in deps if not type_only and dst != src})
             for src, deps in graph().items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_only_main_imports_the_cli() -> None:
    def in_cli(module: str) -> bool:
        return module == "infotok_cli.cli" or module.startswith("infotok_cli.cli.")

    users = {src for src, deps in graph().items() for dst, _, _ in deps if in_cli(dst) and not in_cli(src)}
    assert users <= {"infotok_cli.__main__"}, users


def test_subpackages_say_what_they_hold_and_may_import() -> None:
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and "May import" in doc, f"{init.relative_to(PACKAGE)} lacks a docstring saying what it may import"


def test_no_module_is_too_long() -> None:
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long


@pytest.mark.parametrize("module", ["infotok_cli.format", "infotok_cli.format.chunks", "infotok_cli.format.export",
                                    "infotok_cli.report.stats"])
def test_format_layer_imports_neither_torch_nor_pyav(module: str) -> None:
    code = (f"import sys, {module}; heavy = sorted(m for m in ('torch', 'av') if m in sys.modules); "
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


FAMILY_WORDS = ("flex", "infotok_m", "infotok_s", "serial")  # model families and infotok-s's layout
FAMILY_CLASSES = {"InfoTok", "FlexTokenizer", "FlexConfig", "ModelConfig"}


def test_the_coding_engine_names_no_model_family() -> None:
    """coding/ reaches a model only through model/family.py's surface, so a new family needs no change there."""
    found = []
    for name, path in modules().items():
        if not name.startswith("infotok_cli.coding"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Name):
                names = [node.id]
            elif isinstance(node, ast.Attribute):
                names = [node.attr]
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.arg)):
                names = [getattr(node, "name", None) or getattr(node, "arg", "")]
            for ident in names:
                if ident in FAMILY_CLASSES or any(w in ident.lower() for w in FAMILY_WORDS):
                    found.append(f"{name}:{node.lineno} {ident}")
    assert not found, found
