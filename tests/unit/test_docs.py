"""The reference docs in docs/ name everything the code accepts and serves.

Cheap checks against the code itself, no server: every config key the parser
accepts is in docs/config.md and its complete example parses and uses them
all; every CLI subcommand, option and exit code is in docs/cli.md; every route
the gateway registers, every OpenAPI operation and every error code it answers
with is in docs/api.md. A new key, option or route fails here until it is
documented.
"""

from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import patgate.web.manage as manage_package
from patgate import cli
from patgate.answers import MESSAGES, RESULT_CODES
from patgate.config import parse_config
from patgate.errors import ConfigError
from patgate.store import open_store
from patgate.storeurl import REDIS_URL_OPTIONS
from patgate.web.app import create_app
from patgate.web.manage import endpoint as endpoint_module
from patgate.web.manage.openapi import build_document
from patgate.web.manage.routes import ROUTES
from patgate.web.manage.tokens import API_PREFIX
from patgate.web.server import RESTART_ONLY

DOCS = Path(__file__).resolve().parents[2] / "docs"
ROUTE = "routes: [{name: a, prefix: /a/, upstream: 'http://u', %s: 1}]"
UNKNOWN = "zz_not_a_key"


def read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """The text under ``heading`` (a whole heading line) up to the next heading
    of the same or a higher level; ``#`` lines inside code blocks are no
    headings."""
    level = len(heading.split(" ", 1)[0])
    lines = text.splitlines()
    assert heading in lines, f"no heading {heading!r}"
    body: list[str] = []
    fenced = False
    for line in lines[lines.index(heading) + 1 :]:
        if line.startswith("```"):
            fenced = not fenced
        marks = re.match(r"(#+) ", line)
        if not fenced and marks and len(marks.group(1)) <= level:
            break
        body.append(line)
    return "\n".join(body)


def named(text: str, word: str) -> bool:
    """``word`` stands on its own in ``text`` (not inside a longer name)."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def accepted_keys(text: str, tmp_path: Path) -> list[str]:
    """The keys the parser lists when ``text`` holds an unknown one."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, {}, str(tmp_path))
    message = str(info.value)
    _, found, known = message.partition("(known keys: ")
    assert found, f"no list of known keys in {message!r}"
    return known.rstrip(")").split(", ")


# --------------------------------------------------------------------------
# docs/config.md


def test_every_top_level_key_is_documented(tmp_path: Path) -> None:
    keys = accepted_keys(f"{UNKNOWN}: 1", tmp_path)
    table = section(read("config.md"), "## Top-level keys")
    missing = [key for key in keys if f"| `{key}` |" not in table]
    assert not missing, f"top-level keys missing from docs/config.md: {missing}"


@pytest.mark.parametrize(
    "name", ["cache", "identity_headers", "limits", "forward_auth"]
)
def test_every_key_of_a_section_is_documented(tmp_path: Path, name: str) -> None:
    keys = accepted_keys(f"{name}: {{{UNKNOWN}: 1}}", tmp_path)
    text = section(read("config.md"), f"### {name}")
    missing = [key for key in keys if f"`{name}.{key}`" not in text]
    assert not missing, f"{name} keys missing from docs/config.md: {missing}"


def test_every_route_key_is_documented(tmp_path: Path) -> None:
    keys = accepted_keys(ROUTE % UNKNOWN, tmp_path)
    table = section(read("config.md"), "## Routes")
    missing = [key for key in keys if f"| `{key}` |" not in table]
    assert not missing, f"route keys missing from docs/config.md: {missing}"


def test_every_store_url_option_is_documented() -> None:
    text = section(read("config.md"), "## Store URLs")
    missing = [name for name in REDIS_URL_OPTIONS if f"| `{name}` |" not in text]
    assert not missing, f"store URL options missing from docs/config.md: {missing}"


def test_every_restart_only_setting_is_named_in_the_reload_section() -> None:
    text = section(read("config.md"), "## Reloading: SIGHUP")
    # Config attributes as the file spells them; the pepper is no key at all.
    spelled = {"listen_host": "`listen`", "listen_port": "`listen`", "pepper": "pepper"}
    names = [spelled.get(name, f"`{name}`") for name in RESTART_ONLY]
    missing = [name for name in names if name not in text]
    assert not missing, f"restart-only settings not in the reload section: {missing}"


def example_config() -> str:
    text = section(read("config.md"), "## Complete example")
    match = re.search(r"```yaml\n(.*?)```", text, re.DOTALL)
    assert match, "no yaml block under '## Complete example'"
    return match.group(1)


def test_the_complete_example_parses_without_warnings(tmp_path: Path) -> None:
    text = example_config()
    env = {name: "example" for name in re.findall(r"\$\{(\w+)\}", text)}
    config = parse_config(text, env, str(tmp_path))
    assert config.routes
    assert config.warnings == ()


def test_the_complete_example_uses_every_key(tmp_path: Path) -> None:
    data = yaml.safe_load(example_config())
    unused = set(accepted_keys(f"{UNKNOWN}: 1", tmp_path)) - set(data)
    assert not unused, f"top-level keys the example leaves out: {sorted(unused)}"
    used = {key for route in data["routes"] for key in route}
    unused = set(accepted_keys(ROUTE % UNKNOWN, tmp_path)) - used
    assert not unused, f"route keys the example leaves out: {sorted(unused)}"


# --------------------------------------------------------------------------
# docs/cli.md


def leaf_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command that runs something, with its words: ("token", "create")."""
    groups = [
        action
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    if not groups:
        yield path, parser
    for group in groups:
        for name, child in group.choices.items():
            yield from leaf_parsers(child, (*path, name))


LEAVES = list(leaf_parsers(cli.build_parser()))
GLOBAL_OPTIONS = ("--config", "--store")


def test_the_parser_walk_finds_the_commands() -> None:
    words = {" ".join(path) for path, _ in LEAVES}
    assert {"serve", "config check", "token create", "user add"} <= words


@pytest.mark.parametrize(
    ("path", "parser"), LEAVES, ids=[" ".join(path) for path, _ in LEAVES]
)
def test_every_subcommand_and_option_is_documented(
    path: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    text = section(read("cli.md"), f"### `patgate {' '.join(path)}`")
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        words = list(action.option_strings)
        if not words and isinstance(action.metavar, str):
            words = [action.metavar]
        missing += [
            word
            for word in words
            if word not in GLOBAL_OPTIONS and not named(text, word)
        ]
    assert not missing, f"patgate {' '.join(path)}: not in docs/cli.md: {missing}"


def test_the_global_options_are_documented() -> None:
    text = section(read("cli.md"), "## Global options")
    options = [
        word
        for action in cli.build_parser()._actions
        if not isinstance(action, argparse._SubParsersAction)
        for word in action.option_strings
    ]
    missing = [word for word in options if f"`{word}" not in text]
    assert not missing, f"global options missing from docs/cli.md: {missing}"


def test_every_exit_code_is_documented() -> None:
    text = section(read("cli.md"), "## Exit status")
    codes = [
        cli.EXIT_OK,
        cli.EXIT_REFUSED,
        cli.EXIT_USAGE,
        cli.EXIT_STORE_DOWN,
        cli.EXIT_INTERRUPTED,
    ]
    missing = [code for code in codes if f"| `{code}` |" not in text]
    assert not missing, f"exit codes missing from docs/cli.md: {missing}"


# --------------------------------------------------------------------------
# docs/api.md


def test_every_openapi_operation_is_documented() -> None:
    document = build_document([op for op, _ in ROUTES], API_PREFIX)
    text = read("api.md")
    missing = [
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method in operations
        if f"`{method.upper()} {path}`" not in text
    ]
    assert not missing, f"API operations missing from docs/api.md: {missing}"


def registered_routes(tmp_path: Path) -> list[tuple[str, str]]:
    """(method, path) of every route the app registers, catch-alls left out."""
    config = parse_config("", {}, str(tmp_path))
    app = create_app(config, open_store(f"sqlite:///{tmp_path}/docs.db"))
    found = []
    for resource in app.router.resources():
        path = resource.canonical
        if "{tail}" in path:
            continue
        if path.startswith(API_PREFIX + "/"):
            path = path[len(API_PREFIX) :]
        for route in resource:
            if route.method not in ("*", "HEAD"):
                found.append((route.method, path))
    return found


def test_every_registered_route_is_documented(tmp_path: Path) -> None:
    routes = registered_routes(tmp_path)
    assert ("GET", "/_patgate/healthz") in routes
    assert ("POST", "/tokens") in routes
    text = read("api.md")
    missing = [f"{m} {p}" for m, p in routes if f"`{m} {p}`" not in text]
    assert not missing, f"routes missing from docs/api.md: {missing}"


def api_error_codes() -> set[tuple[int, str]]:
    """(status, error) of every ApiError the management API raises."""
    found = {(status, error) for _, status, error in endpoint_module.ERRORS}
    folder = Path(manage_package.__file__).parent
    trees = [
        ast.parse(path.read_text(encoding="utf-8")) for path in folder.glob("*.py")
    ]
    for node in (node for tree in trees for node in ast.walk(tree)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "ApiError"
            and len(node.args) >= 2
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[1], ast.Constant)
        ):
            found.add((node.args[0].value, node.args[1].value))
    return found


def test_every_api_error_code_is_documented() -> None:
    codes = api_error_codes()
    assert (404, "not_found") in codes
    assert (429, "too_many_requests") in codes
    text = section(read("api.md"), "### Errors")
    missing = [
        f"{status} {error}"
        for status, error in sorted(codes)
        if f"| {status} | `{error}` |" not in text
    ]
    assert not missing, f"API errors missing from docs/api.md: {missing}"


def test_every_gateway_error_and_result_code_is_documented() -> None:
    text = section(read("api.md"), "## The gateway's own answers")
    missing = [error for error in MESSAGES if f"`{error}`" not in text]
    missing += [
        f"{status}->{code}"
        for status, code in RESULT_CODES.items()
        if not (named(text, str(status)) and named(text, str(code)))
    ]
    assert not missing, f"gateway answers missing from docs/api.md: {missing}"


def test_the_index_lists_every_document() -> None:
    index = read("README.md")
    pages = sorted(path.name for path in DOCS.glob("*.md") if path.name != "README.md")
    assert pages
    missing = [page for page in pages if f"]({page})" not in index]
    assert not missing, f"docs/README.md does not list: {missing}"


# docs/redis.md


def test_the_documented_acl_rules_are_the_ones_the_contract_suite_runs_as() -> None:
    from tests.redis_topologies import ACL_RULES

    text = read("redis.md")
    assert f"ACL SETUSER patgate on >PASSWORD {ACL_RULES}\n" in text
