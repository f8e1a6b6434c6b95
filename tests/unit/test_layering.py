"""The pure core imports no I/O library: aiohttp, redis, sqlite3 stay at the edges.

A pure module is either one file (``tokens.py``) or a package (``config/``),
in which case every file inside it is checked.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "patgate"
PURE = [
    "tokens",
    "durations",
    "scopes",
    "models",
    "errors",
    "extract",
    "policy",
    "paths",
    "config",
    "gate",
    "service",
    "cache",
    "client",
    "answers",
]
BANNED = ("aiohttp", "redis", "sqlite3", "yarl", "multidict", "socket")


def module_files(name: str) -> list[Path]:
    """The files of the pure module ``name``: ``name.py`` or all of ``name/``."""
    single = SRC / f"{name}.py"
    if single.is_file():
        return [single]
    return sorted((SRC / name).rglob("*.py"))


PURE_FILES = [path for name in PURE for path in module_files(name)]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("name", PURE)
def test_pure_module_exists(name):
    # A renamed or split module must stay listed, not silently drop out.
    assert module_files(name), f"no {name}.py and no {name}/ package under {SRC}"


@pytest.mark.parametrize(
    "path", PURE_FILES, ids=[str(p.relative_to(SRC)) for p in PURE_FILES]
)
def test_pure_module_imports_no_io(path):
    bad = {name for name in imported_modules(path) if name.split(".")[0] in BANNED}
    assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"
