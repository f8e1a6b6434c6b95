"""``patgate config check`` prints the lint's warnings; ``--strict`` fails on them."""

from __future__ import annotations

from tests.integration.test_cli import Cli

LINTED = """\
listen: 0.0.0.0:8080
store: sqlite:///./patgate.db
routes:
  - name: dav
    prefix: /dav/
    upstream: http://127.0.0.1:8081
    credentials: [basic, bearer]
    methods: {GET: files:read, PUT: files:write}
  - name: docs
    prefix: /dav/docs/
    upstream: http://127.0.0.1:8081
    auth: none
  - name: paas
    prefix: /1.0/
    upstream: http://127.0.0.1:8082
    credentials: [query]
    query_params: [session]
    paths:
      /1.0/environment/*: env:read
      /1.0/environment/control/rest/stopenv: env:control
"""


def test_config_check_warns_and_strict_fails(tmp_path):
    (tmp_path / "gateway.yaml").write_text(LINTED)
    cli = Cli(tmp_path)
    out = cli.ok("config", "check")
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert [line.split(":", 2)[1].strip() for line in warnings] == [
        "routes[0] (dav).methods",
        "routes[1] (docs).auth",
        "routes[2] (paas).paths./1.0/environment/control/rest/stopenv",
        "routes[2] (paas).credentials",
    ]
    assert "OPTIONS, POST, PATCH, DELETE, PROPFIND" in warnings[0]
    strict = cli("config", "check", "--strict")
    assert strict.returncode == 1
    assert strict.stdout == out
    assert strict.stderr == "error: 4 warnings (--strict)\n"


def test_a_clean_config_passes_strict(tmp_path):
    clean = LINTED.replace("0.0.0.0", "127.0.0.1").replace(
        "PUT: files:write}", "'*': files:write}"
    )
    clean = clean.split("  - name: docs")[0]
    (tmp_path / "gateway.yaml").write_text(clean)
    out = Cli(tmp_path).ok("config", "check", "--strict")
    assert "warning" not in out
