"""The ``patgate`` command, run as a real process on a real SQLite store."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from patgate import tokens
from patgate.cli import main
from patgate.errors import AuthenticationError
from patgate.service import TokenService
from patgate.store import open_store

PEPPER = "cli-test-pepper"
SPEC_FIELDS = {
    "id",
    "name",
    "owner",
    "scopes",
    "project",
    "expiry",
    "expires_at",
    "created_at",
    "created_by",
    "last_used_at",
    "last_used_ip",
    "use_count",
    "status",
}
CONFIG = """\
store: sqlite:///./patgate.db
token_prefix: pgt
scope_sets:
  files-rw: [files:read, files:write]
routes:
  - name: files
    prefix: /dav/
    upstream: http://127.0.0.1:8081
    methods: {GET: files:read, "*": files:write}
"""


def patgate_command() -> list[str]:
    script = Path(sys.executable).parent / "patgate"
    return [str(script)] if script.exists() else [sys.executable, "-m", "patgate"]


class Cli:
    """Runs ``patgate`` in a directory holding gateway.yaml."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("PATGATE_")
        }
        self.env["PATGATE_PEPPER"] = PEPPER

    def __call__(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run(
            [*patgate_command(), *args],
            cwd=self.directory,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def ok(self, *args: str, stdin: str = "") -> str:
        result = self(*args, stdin=stdin)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        return result.stdout

    def json(self, *args: str) -> object:
        return json.loads(self.ok(*args, "--json"))

    def fails(self, code: int, *args: str, stdin: str = "") -> str:
        """The one stderr line of a command that must fail with ``code``."""
        result = self(*args, stdin=stdin)
        assert result.returncode == code, (result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ")
        assert result.stdout == ""
        return lines[0]


@pytest.fixture
def cli(tmp_path):
    (tmp_path / "gateway.yaml").write_text(CONFIG)
    return Cli(tmp_path)


@pytest.fixture
def alice(cli):
    cli.ok("user", "add", "alice", "-s", "@files-rw", "-s", "env:read")
    return "alice"


def create_token(cli, *args: str) -> str:
    value = cli.ok("token", "create", "-u", "alice", "-q", *args).strip()
    parsed = tokens.parse_token(value, "pgt")
    assert parsed is not None
    return parsed.token_id


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# config


def test_config_check_reports_routes_store_and_warnings(cli, tmp_path):
    assert cli.ok("config", "check") == (
        f"ok: 1 routes, store sqlite:///{tmp_path}/patgate.db\n"
        "pepper: from $PATGATE_PEPPER\n"
    )
    del cli.env["PATGATE_PEPPER"]
    out = cli.ok("config", "check")
    assert out.splitlines()[1] == (
        f"pepper: none yet; a new store generates one into {tmp_path}/patgate.db.pepper"
    )
    assert "warning" not in out
    out = cli.ok("--store", "redis://127.0.0.1:6390/0", "config", "check")
    assert out.splitlines()[1:] == [
        "pepper: none",
        "warning: no pepper: set $PATGATE_PEPPER to the same long random value for"
        " every process before creating tokens (token hashes depend on it)",
    ]


def test_config_check_hides_a_redis_password(cli):
    out = cli.ok("--store", "redis://:hunter2@127.0.0.1:6390/0", "config", "check")
    assert "hunter2" not in out
    assert "redis://:***@127.0.0.1:6390/0" in out


def test_broken_config_is_one_line(cli, tmp_path):
    (tmp_path / "bad.yaml").write_text("routes: [\n")
    line = cli.fails(1, "--config", "bad.yaml", "config", "check")
    assert "bad.yaml" in line
    (tmp_path / "bad.yaml").write_text("store: sqlite:///x.db\nbogus: 1\n")
    assert "bogus" in cli.fails(1, "--config", "bad.yaml", "token", "list")
    assert "not found" in cli.fails(1, "--config", "missing.yaml", "user", "list")


def test_global_options_work_after_the_command_too(cli, tmp_path):
    (tmp_path / "gateway.yaml").rename(tmp_path / "other.yaml")
    cli.ok("user", "add", "bob", "--config", "other.yaml")
    assert "bob" in cli.ok("--config", "other.yaml", "user", "list")


def test_store_url_alone_needs_no_config_file(tmp_path):
    cli = Cli(tmp_path)
    cli.ok("--store", "sqlite:///alone.db", "user", "add", "alice")
    assert (tmp_path / "alone.db").exists()
    create = cli.ok("--store", "sqlite:///alone.db", "token", "create", "-u", "alice")
    assert "pgt_" in create


# users


def test_user_add_and_list(cli):
    out = cli.ok("user", "add", "alice", "-s", "@files-rw", "--password-stdin",
                 stdin="correct horse battery\n")  # fmt: skip
    assert out.startswith("created user alice")
    cli.ok("user", "add", "root", "--admin")
    users = cli.json("user", "list")
    assert [(u["login"], u["admin"], u["has_password"]) for u in users] == [
        ("alice", False, True),
        ("root", True, False),
    ]
    assert users[0]["scopes"] == ["files:read", "files:write"]
    assert "correct horse" not in json.dumps(users)
    table = cli.ok("user", "list").splitlines()
    assert table[0].split() == [
        "LOGIN",
        "ADMIN",
        "STATUS",
        "SCOPES",
        "PASSWORD",
        "CREATED",
    ]
    assert "already exists" in cli.fails(1, "user", "add", "alice")
    assert "invalid login" in cli.fails(2, "user", "add", "not a login")
    assert "no password" in cli.fails(2, "user", "add", "bob", "--password-stdin")


async def test_user_passwd_reads_stdin_when_not_a_terminal(cli, alice, tmp_path):
    cli.ok("user", "passwd", "alice", stdin="first password\n")
    cli.ok("user", "passwd", "alice", "--password-stdin", stdin="second password\n")
    assert "no user bob" in cli.fails(1, "user", "passwd", "bob", stdin="whatever1\n")
    store = open_store(f"sqlite:///{tmp_path}/patgate.db")
    try:
        service = TokenService(store)
        assert (await service.authenticate("alice", "second password")).login == "alice"
        with pytest.raises(AuthenticationError):
            await service.authenticate("alice", "first password")
    finally:
        await store.close()


def test_user_disable_stops_token_creation_until_enabled(cli, alice):
    assert "disabled" in cli.ok("user", "disable", "alice")
    assert cli.json("user", "list")[0]["disabled"] is True
    line = cli.fails(1, "token", "create", "-u", "alice")
    assert line == "error: user alice is disabled"
    cli.ok("user", "enable", "alice")
    create_token(cli)


def test_user_scopes_narrow_what_star_tokens_hold_and_admin_flag(cli, alice):
    assert "may now grant api:read" in cli.ok(
        "user", "scopes", "alice", "-s", "api:read"
    )
    (user,) = cli.json("user", "list")
    assert user["scopes"] == ["api:read"]
    line = cli.fails(1, "token", "create", "-u", "alice", "-s", "api:write")
    assert "api:write" in line
    assert "is an admin" in cli.ok("user", "admin", "alice", "on")
    assert cli.json("user", "list")[0]["admin"] is True
    assert "not an admin" in cli.ok("user", "admin", "alice", "off")
    cli.fails(2, "user", "admin", "alice", "maybe")


# tokens


def test_token_create_quiet_prints_exactly_the_value(cli, alice):
    result = cli("token", "create", "-u", "alice", "-q")
    assert result.returncode == 0
    assert result.stderr == ""
    value = result.stdout.removesuffix("\n")
    assert "\n" not in value
    assert tokens.parse_token(value, "pgt") is not None


def test_token_create_json_has_the_spec_fields_and_the_value_once(cli, alice):
    created = cli.json(
        "token", "create", "-u", "alice", "-n", "ci", "-s", "files:read",
        "-e", "20d", "--ip", "10.0.0.0/8", "--project", "alpha", "--rate-limit", "60",
    )  # fmt: skip
    assert set(created) >= SPEC_FIELDS | {"token"}
    value = created["token"]
    assert tokens.parse_token(value, "pgt").token_id == created["id"]
    assert created["name"] == "ci"
    assert created["owner"] == "alice"
    assert created["scopes"] == ["files:read"]
    assert created["project"] == "alpha"
    assert created["expiry"] == "hard"
    assert created["expires_at"].endswith("Z")
    assert created["created_at"].endswith("Z")
    assert created["created_by"].startswith("cli:")
    assert (created["last_used_at"], created["last_used_ip"]) == (None, None)
    assert created["use_count"] == 0
    assert created["status"] == "active"
    assert created["allowed_cidrs"] == ["10.0.0.0/8"]
    assert created["rate_limit"] == 60

    shown = cli.json("token", "show", created["id"])
    assert set(shown) >= SPEC_FIELDS
    assert "token" not in shown
    assert shown == {k: v for k, v in created.items() if k != "token"}
    listed = cli.json("token", "list")
    assert listed == [shown]
    assert value not in cli.ok("token", "list") + cli.ok("token", "show", shown["id"])


def test_token_create_for_people_shows_the_value_once_with_a_warning(cli, alice):
    lines = cli.ok("token", "create", "-u", "alice", "-a", "1h").splitlines()
    assert lines[0].startswith("created token ")
    assert "(sliding 1h)" in lines[0]
    assert tokens.parse_token(lines[1], "pgt") is not None
    assert "only once" in lines[2]


def test_token_list_table_and_owner_filter(cli, alice):
    cli.ok("user", "add", "bob")
    first = create_token(cli, "-n", "laptop")
    cli.ok("token", "create", "-u", "bob", "-q")
    table = cli.ok("token", "list", "-u", "alice").splitlines()
    header = table[0]
    for column in ("ID", "NAME", "OWNER", "SCOPES", "EXPIRES", "LAST USED", "STATUS"):
        assert column in header
    assert len(table) == 2
    assert table[1].split()[:3] == [first, "laptop", "alice"]
    assert table[1].split()[-1] == "active"
    assert len(cli.json("token", "list")) == 2
    assert cli.json("token", "list", "-u", "bob")[0]["owner"] == "bob"
    assert cli.fails(1, "token", "list", "-u", "nobody") == "error: no user nobody"


def test_token_edit(cli, alice):
    token_id = create_token(cli, "-e", "1d")
    out = cli.ok(
        "token", "edit", token_id, "-n", "renamed", "-s", "files:read",
        "-a", "2h", "--max-lifetime", "1d", "--ip", "192.0.2.7/24",
        "--project", "beta", "--rate-limit", "9",
    )  # fmt: skip
    assert out.startswith(f"updated token {token_id}")
    # Every changed field is echoed, old -> new; nothing else is.
    echoed = {line.split(":")[0].strip() for line in out.splitlines()[1:]}
    assert echoed == {
        "name", "scopes", "project", "expiry", "expires_at", "sliding_window",
        "max_lifetime", "allowed_cidrs", "rate_limit",
    }  # fmt: skip
    assert "  name:  -> renamed" in out.splitlines()
    assert "  scopes: * -> files:read" in out.splitlines()
    assert "  rate_limit: none -> 9" in out.splitlines()
    renamed_again = cli.ok("token", "edit", token_id, "-n", "renamed")
    assert renamed_again.splitlines()[1:] == []
    shown = cli.json("token", "show", token_id)
    assert shown["name"] == "renamed"
    assert shown["scopes"] == ["files:read"]
    assert (shown["expiry"], shown["sliding_window"]) == ("sliding", "2h")
    assert shown["max_lifetime"] == "1d"
    assert shown["allowed_cidrs"] == ["192.0.2.0/24"]
    assert (shown["project"], shown["rate_limit"]) == ("beta", 9)
    cleared = cli.json(
        "token", "edit", token_id, "--never", "--no-max-lifetime", "--any-ip",
        "--project", "", "--no-rate-limit",
    )  # fmt: skip
    assert (cleared["expiry"], cleared["expires_at"]) == ("never", None)
    assert cleared["allowed_cidrs"] == []
    assert (cleared["project"], cleared["rate_limit"]) == (None, None)
    assert cleared["name"] == "renamed"
    assert "nothing to change" in cli.fails(2, "token", "edit", token_id)
    line = cli.fails(1, "token", "edit", token_id, "-s", "admin:all")
    assert line == "error: token scopes exceed what alice holds: admin:all"
    assert "not allowed with" in cli.fails(
        2, "token", "edit", token_id, "--never", "-e", "1d"
    )


def test_token_regenerate(cli, alice):
    created = cli.json("token", "create", "-u", "alice")
    value = cli.ok("token", "regenerate", created["id"], "-q").strip()
    assert value != created["token"]
    assert tokens.parse_token(value, "pgt").token_id == created["id"]
    graced = cli.json("token", "regenerate", created["id"], "--grace", "5m")
    assert graced["id"] == created["id"]
    assert graced["token"] not in (value, created["token"])
    human = cli.ok("token", "regenerate", created["id"]).splitlines()
    assert "old value no longer works" in human[0]
    assert "only once" in human[2]


def test_token_copy(cli, alice):
    source = cli.json("token", "create", "-u", "alice", "-n", "ci", "-s", "env:read")
    copy = cli.json("token", "copy", source["id"])
    assert copy["id"] != source["id"]
    assert copy["token"] != source["token"]
    assert (copy["name"], copy["scopes"]) == ("ci", ["env:read"])
    value = cli.ok("token", "copy", source["id"], "-q").strip()
    assert tokens.parse_token(value, "pgt") is not None
    assert len(cli.json("token", "list")) == 3


def test_token_revoke_one_or_many_or_none(cli, alice):
    first, second, third = (create_token(cli) for _ in range(3))
    line = cli.fails(1, "token", "revoke", first, "Nope1234")
    assert line == "error: no token Nope1234; nothing revoked"
    assert cli.json("token", "show", first)["status"] == "active"
    assert cli.ok("token", "revoke", first, second) == (
        f"revoked {first}\nrevoked {second}\n"
    )
    statuses = {t["id"]: t["status"] for t in cli.json("token", "list")}
    assert statuses == {first: "revoked", second: "revoked", third: "active"}
    assert cli.ok("token", "revoke", second, third) == (
        f"{second} was already revoked\nrevoked {third}\n"
    )
    assert cli.fails(1, "token", "edit", first, "-n", "x") == (
        f"error: token {first} is revoked"
    )


def test_subset_rule_refusal_is_clear(cli, alice):
    line = cli.fails(1, "token", "create", "-u", "alice", "-s", "files:read",
                     "-s", "admin:write")  # fmt: skip
    assert line == "error: token scopes exceed what alice holds: admin:write"
    assert cli.json("token", "list") == []


@pytest.mark.parametrize(
    ("code", "args", "expected"),
    [
        (2, ["token", "create", "-u", "alice", "-e", "3x"], "invalid expiry '3x'"),
        (2, ["token", "create", "-u", "alice", "-a", "soon"], "invalid duration"),
        (2, ["token", "create", "-u", "alice", "-e", "2001-01-01"], "in the past"),
        (2, ["token", "create", "-u", "alice", "-e", "1d", "-a", "1h"], "not allowed"),
        (2, ["token", "create", "-u", "alice", "--max-lifetime", "0s"], "duration"),
        (2, ["token", "create", "-u", "alice", "--ip", "10.0.0.300"], "invalid CIDR"),
        (2, ["token", "create", "-u", "alice", "--rate-limit", "0"], "positive"),
        (2, ["token", "create", "-u", "alice", "-s", "@nope"], "unknown scope set"),
        (2, ["token", "create", "-u", "alice", "-q", "--json"], "not allowed"),
        (2, ["token", "create"], "-u/--user"),
        (1, ["token", "create", "-u", "nobody"], "no user nobody"),
        (1, ["token", "show", "Nope1234"], "no token Nope1234"),
        (2, ["token", "show", "nope"], "invalid token id"),
        (1, ["token", "regenerate", "Nope1234"], "no token Nope1234"),
        (1, ["token", "copy", "Nope1234"], "no token Nope1234"),
        (2, ["token", "regenerate", "Nope1234", "--grace", "1y"], "invalid duration"),
        (2, [], "required: COMMAND"),
        (2, ["token"], "required: ACTION"),
        (2, ["token", "frobnicate"], "invalid choice"),
        (2, ["--bogus", "token", "list"], "unrecognized arguments"),
        (1, ["user", "disable", "nobody"], "no user nobody"),
        (2, ["serve", "--workers", "0"], "expected 1 to 1024, not '0'"),
    ],
)
def test_errors_are_one_clear_line(cli, alice, code, args, expected):
    assert expected in cli.fails(code, *args)


def test_a_pasted_token_value_is_not_echoed(cli, alice):
    value = cli.ok("token", "create", "-u", "alice", "-q").strip()
    for command in (["token", "show", value], ["token", "revoke", value]):
        result = cli(*command)
        assert result.returncode == 2
        assert value not in result.stderr


def test_unreachable_redis_store_is_one_line(cli):
    url = f"redis://127.0.0.1:{closed_port()}/0"
    # Exit 3, apart from "refused or not found" (1): a script may retry.
    line = cli.fails(3, "--store", url, "token", "list")
    assert line.startswith("error: store unavailable: ")
    cli.env["PATGATE_STORE"] = url
    assert cli.fails(3, "user", "add", "bob").startswith("error: store unavailable")


def test_unwritable_sqlite_store_is_one_line(cli, tmp_path):
    url = f"sqlite:///{tmp_path}/no/such/dir/patgate.db"
    assert "store unavailable" in cli.fails(3, "--store", url, "user", "list")


def test_empty_pepper_warns_once_on_stderr_after_success_only(cli, redis_url):
    # A Redis store has no pepper file: without $PATGATE_PEPPER, a warning.
    del cli.env["PATGATE_PEPPER"]
    cli.env["PATGATE_STORE"] = redis_url
    assert cli("user", "add", "alice").returncode == 0
    result = cli("token", "create", "-u", "alice", "-q")
    assert result.returncode == 0
    assert tokens.parse_token(result.stdout.strip(), "pgt") is not None
    warnings = result.stderr.splitlines()
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: no pepper: set $PATGATE_PEPPER")
    assert cli.fails(1, "token", "show", "Nope1234") == "error: no token Nope1234"


def test_audit_events_go_to_stderr_as_json_when_asked(cli, alice):
    cli.env["PATGATE_LOG_LEVEL"] = "info"
    result = cli("token", "create", "-u", "alice", "-q")
    assert result.returncode == 0
    value = result.stdout.strip()
    (event,) = [json.loads(line) for line in result.stderr.splitlines()]
    assert event["event"] == "token.created"
    assert event["owner"] == "alice"
    assert event["token_id"] == value[4:12]
    assert event["actor"].startswith("cli:")
    assert value not in result.stderr


def test_python_dash_m_runs_the_same_cli(cli):
    result = subprocess.run(
        [sys.executable, "-m", "patgate", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.strip() == "0.1.0"


class InterruptedStdin:
    def readline(self) -> str:
        raise KeyboardInterrupt


def test_ctrl_c_is_exit_130_and_one_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", InterruptedStdin())
    assert main(["user", "passwd", "alice", "--password-stdin"]) == 130
    captured = capsys.readouterr()
    assert captured.err == "error: interrupted\n"
    assert captured.out == ""


def test_help_returns_zero_instead_of_raising(capsys):
    assert main(["token", "create", "--help"]) == 0
    assert "--max-lifetime" in capsys.readouterr().out


def test_a_closed_stdout_is_not_a_traceback(cli, alice):
    for _ in range(3):
        create_token(cli)
    process = subprocess.Popen(
        [*patgate_command(), "token", "list", "--json"],
        cwd=cli.directory,
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()  # the reader goes away before anything is written
    _, err = process.communicate(timeout=30)
    assert b"Traceback" not in err
    assert b"Exception ignored" not in err
