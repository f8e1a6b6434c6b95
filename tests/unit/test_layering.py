"""The pure core imports no I/O library: aiohttp, redis, sqlite3 stay at the edges."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "patgate"
PURE = [
    "tokens.py",
    "durations.py",
    "scopes.py",
    "models.py",
    "errors.py",
    "extract.py",
    "policy.py",
    "paths.py",
    "config.py",
    "gate.py",
    "service.py",
    "cache.py",
]
BANNED = ("aiohttp", "redis", "sqlite3", "yarl", "multidict", "socket")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", [m for m in PURE if (SRC / m).exists()])
def test_pure_module_imports_no_io(module):
    bad = {
        name for name in imported_modules(SRC / module) if name.split(".")[0] in BANNED
    }
    assert not bad, f"{module} imports {sorted(bad)}"
