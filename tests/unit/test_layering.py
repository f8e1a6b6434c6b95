"""The pure core imports no I/O library: aiohttp, redis, sqlite3 stay at the edges.

Two checks, because either alone can be dodged:

- **Transitively, at import time**: each core module is imported in a fresh
  interpreter, and nothing it pulls in, through any other patgate module, may
  be an I/O library or an edge module (``patgate.web``, the store adapters,
  the CLI). A core module that reaches ``store.redis`` through another patgate
  module fails here.
- **In the source**, any import statement of a core module, also one inside a
  function (which the import-time check would not run): the same libraries.
  ruff's banned-API rule (TID251, ``pyproject.toml``) says the same while
  editing.

A core module is one file (``tokens.py``) or a package (``config/``).
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "patgate"
CORE = [
    "tokens",
    "durations",
    "scopes",
    "models",
    "errors",
    "extract",
    "paths",
    "routing",
    "policy",
    "config",
    "client",
    "answers",
    "cache",
    "usage",
    "throttle",
    "gate",
    "service",
    "pepper",
    "storeurl",
]
BANNED = ("aiohttp", "redis", "sqlite3", "yarl", "multidict", "hiredis")
# Not loaded through any import, nor imported in the source; the source may not
# import socket either (asyncio itself loads it, so only the source is checked).
BANNED_IN_SOURCE = (*BANNED, "socket")
EDGES = ("patgate.web", "patgate.cli", "patgate.store.sqlite", "patgate.store.redis")


def is_edge(module: str) -> bool:
    return any(module == edge or module.startswith(edge + ".") for edge in EDGES)


def module_files(name: str) -> list[Path]:
    """The files of the core module ``name``: ``name.py`` or all of ``name/``."""
    single = SRC / f"{name}.py"
    if single.is_file():
        return [single]
    return sorted((SRC / name).rglob("*.py"))


CORE_FILES = [path for name in CORE for path in module_files(name)]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


_PROBE = """
import importlib, json, sys
before = set(sys.modules)
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def loaded_by(module: str) -> list[str]:
    """Every module that importing ``module`` loads, in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, module],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded: list[str] = json.loads(done.stdout)
    return loaded


@pytest.mark.parametrize("name", CORE)
def test_core_module_exists(name):
    # A renamed or split module must stay listed, not silently drop out.
    assert module_files(name), f"no {name}.py and no {name}/ package under {SRC}"


@pytest.mark.parametrize("name", CORE)
def test_core_module_loads_no_io_library_through_any_import(name):
    loaded = loaded_by(f"patgate.{name}")
    banned = [m for m in loaded if m.split(".")[0] in BANNED]
    edges = [m for m in loaded if is_edge(m)]
    assert not banned, f"patgate.{name} loads {banned}"
    assert not edges, f"patgate.{name} loads edge modules {edges}"


def test_the_probe_sees_what_an_edge_module_loads():
    """The import-time check is not vacuous: an edge module trips it."""
    loaded = loaded_by("patgate.store.sqlite")
    assert "sqlite3" in loaded
    assert "patgate.store.base" in loaded


@pytest.mark.parametrize(
    "path", CORE_FILES, ids=[str(p.relative_to(SRC)) for p in CORE_FILES]
)
def test_core_source_imports_no_io_library(path):
    names = imported_modules(path)
    bad = {name for name in names if name.split(".")[0] in BANNED_IN_SOURCE}
    bad |= {name for name in names if is_edge(name)}
    assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"
