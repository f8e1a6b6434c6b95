"""The container files say what the README promises (no Docker engine here).

The image must take its store from the config or ``$PATGATE_STORE``: a
``--store`` on the command line once made ``docker exec ... patgate`` write to
another database than the one ``serve`` read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from patgate.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instruction(name: str) -> list[str]:
    found = re.findall(rf"^{name} (.+)$", DOCKERFILE, flags=re.MULTILINE)
    return found


def test_the_container_config_parses_and_listens_on_every_interface():
    text = (ROOT / "deploy/container/gateway.yaml").read_text()
    config = parse_config(text, {"PATGATE_PEPPER": "x"}, "/etc/patgate")
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 8080)
    assert config.store == "sqlite:////var/lib/patgate/patgate.db"
    assert "/etc/patgate/gateway.yaml" in DOCKERFILE


def test_serve_is_the_entry_point_and_nothing_overrides_the_store():
    (entrypoint,) = instruction("ENTRYPOINT")
    (command,) = instruction("CMD")
    assert json.loads(entrypoint) == ["patgate"]
    assert json.loads(command) == ["serve"]
    instructions = "\n".join(
        line for line in DOCKERFILE.splitlines() if not line.startswith("#")
    )
    assert "--store" not in instructions
    assert "--listen" not in instructions
    assert "PATGATE_STORE" not in instructions


def test_the_image_runs_as_a_numeric_non_root_user():
    (user,) = instruction("USER")
    uid, _, gid = user.partition(":")
    assert int(uid) > 0
    assert int(gid) > 0


def test_dependencies_come_from_the_lock_before_the_source():
    lines = [line for line in DOCKERFILE.splitlines() if not line.startswith("#")]
    lock = next(i for i, line in enumerate(lines) if "requirements/run.lock" in line)
    source = next(i for i, line in enumerate(lines) if line.startswith("COPY src"))
    assert lock < source
    assert "--require-hashes" in "\n".join(lines)
    assert re.search(r"^FROM python:3\.11-slim", DOCKERFILE, flags=re.MULTILINE)
