"""The container files say what the README promises (no Docker engine here).

The image must take its store from the config or ``$PATGATE_STORE``: a
``--store`` on the command line once made ``docker exec ... patgate`` write to
another database than the one ``serve`` read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

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


# deploy/compose: several replicas on one Redis behind a load balancer


def load_yaml(relative: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / relative).read_text())
    assert isinstance(data, dict)
    return data


def test_compose_runs_several_replicas_on_one_redis_behind_nginx():
    compose = load_yaml("deploy/compose/compose.yaml")
    services = compose["services"]
    gateway = services["gateway"]
    assert gateway["deploy"]["replicas"] >= 2
    assert gateway["environment"]["PATGATE_STORE"] == "redis://redis:6379/0"
    assert gateway["environment"]["PATGATE_PEPPER"].startswith("${PATGATE_PEPPER:?")
    assert "./gateway.yaml:/etc/patgate/gateway.yaml:ro" in gateway["volumes"]
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["lb"]["image"].startswith("nginx:")
    nginx = (ROOT / "deploy/compose/nginx.conf").read_text()
    assert "server gateway:8080;" in nginx
    assert "proxy_request_buffering off;" in nginx
    config = parse_config(
        (ROOT / "deploy/compose/gateway.yaml").read_text(),
        {"PATGATE_PEPPER": "x", "PATGATE_STORE": "redis://redis:6379/0"},
        "/etc/patgate",
    )
    assert config.listen_host == "0.0.0.0"
    assert config.trusted_proxies


# deploy/kubernetes: checked against the Kubernetes API schemas


def kubernetes_documents() -> list[dict[str, Any]]:
    kustomization = load_yaml("deploy/kubernetes/kustomization.yaml")
    documents = []
    for name in kustomization["resources"]:
        for document in yaml.safe_load_all(
            (ROOT / "deploy/kubernetes" / name).read_text()
        ):
            documents.append(document)
    return documents


def test_kubernetes_manifests_are_valid_against_the_api_schemas():
    documents = kubernetes_documents()
    assert {d["kind"] for d in documents} == {
        "Namespace", "ConfigMap", "Secret", "Deployment", "Service",
    }  # fmt: skip
    version = kubernetes_validate.latest_version()
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)


def test_kubernetes_deployment_runs_three_non_root_replicas_with_probes():
    by_kind = {d["kind"]: d for d in kubernetes_documents()}
    deployment = by_kind["Deployment"]["spec"]
    assert deployment["replicas"] == 3
    pod = deployment["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/_patgate/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/_patgate/readyz"
    env = {item["name"]: item for item in container["env"]}
    assert (
        env["PATGATE_PEPPER"]["valueFrom"]["secretKeyRef"]["name"]
        == (by_kind["Secret"]["metadata"]["name"])
    )
    assert (
        by_kind["Service"]["spec"]["selector"]
        == (deployment["selector"]["matchLabels"])
    )
    config = parse_config(
        by_kind["ConfigMap"]["data"]["gateway.yaml"],
        {"PATGATE_PEPPER": "x"},
        "/etc/patgate",
    )
    assert config.store.startswith("redis://")
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 8080)


# deploy/forward-auth: nginx and the Caddyfile also run in
# tests/integration/test_forward_auth_proxies.py; Traefik and Envoy are not
# packaged for Debian, so their files are checked here as data.

FORWARD_AUTH = ROOT / "deploy" / "forward-auth"
IDENTITY = ["X-Patgate-User", "X-Patgate-Token-Id", "X-Patgate-Scopes"]


def default_forward_auth_path() -> str:
    config = parse_config(
        "trusted_proxies: [127.0.0.1/32]\nforward_auth: {}\n", {}, "/etc/patgate"
    )
    assert config.forward_auth is not None
    return config.forward_auth.path


def test_traefik_forward_auth_asks_patgate_and_copies_the_identity():
    data: dict[str, Any] = yaml.safe_load((FORWARD_AUTH / "traefik.yaml").read_text())
    http = data["http"]
    router = http["routers"]["app"]
    assert router["middlewares"] == ["patgate", "strip-credentials"]
    forward = http["middlewares"]["patgate"]["forwardAuth"]
    assert forward["address"] == "http://127.0.0.1:8082" + default_forward_auth_path()
    assert forward["trustForwardHeader"] is False
    assert forward["authResponseHeaders"] == IDENTITY
    removed = http["middlewares"]["strip-credentials"]["headers"]
    stripped = removed["customRequestHeaders"]
    assert stripped["Authorization"] == stripped["X-API-Key"] == ""
    assert all(stripped[name.replace("-", "_")] == "" for name in IDENTITY)
    assert http["services"]["app"]["loadBalancer"]["servers"]


def find(data: Any, key: str) -> list[Any]:
    """Every value under ``key`` anywhere in ``data``."""
    found = []
    if isinstance(data, dict):
        for name, value in data.items():
            if name == key:
                found.append(value)
            found.extend(find(value, key))
    elif isinstance(data, list):
        for item in data:
            found.extend(find(item, key))
    return found


def test_envoy_ext_authz_asks_at_the_path_prefix_and_fails_closed():
    data = yaml.safe_load((FORWARD_AUTH / "envoy.yaml").read_text())
    (manager,) = find(data, "stat_prefix") and [
        entry["typed_config"]
        for entry in find(data, "filters")[0]
        if entry["name"].endswith("http_connection_manager")
    ]
    assert manager["normalize_path"] is False
    assert manager["merge_slashes"] is False
    assert manager["path_with_escaped_slashes_action"] == "KEEP_UNCHANGED"
    assert manager["use_remote_address"] is True
    underscores = manager["common_http_protocol_options"]
    assert underscores["headers_with_underscores_action"] == "REJECT_REQUEST"
    (ext_authz,) = [
        entry["typed_config"]
        for entry in manager["http_filters"]
        if entry["name"] == "envoy.filters.http.ext_authz"
    ]
    assert manager["http_filters"][-1]["name"] == "envoy.filters.http.router"
    assert ext_authz["failure_mode_allow"] is False
    service = ext_authz["http_service"]
    assert service["path_prefix"] == default_forward_auth_path()
    assert service["server_uri"]["cluster"] == "patgate"

    def exact(section: dict[str, Any]) -> list[str]:
        return [pattern["exact"] for pattern in section["patterns"]]

    asked = exact(service["authorization_request"]["allowed_headers"])
    assert {"authorization", "x-api-key", "destination", "if"} <= set(asked)
    answered = service["authorization_response"]
    assert exact(answered["allowed_upstream_headers"]) == [
        name.lower() for name in IDENTITY
    ]
    assert "www-authenticate" in exact(answered["allowed_client_headers"])
    (removed,) = find(data, "request_headers_to_remove")
    assert {"authorization", "x-api-key"} <= set(removed)
    clusters = {cluster["name"] for cluster in data["static_resources"]["clusters"]}
    assert clusters == {"patgate", "app"}


def test_nginx_asks_with_the_request_uri_and_strips_what_the_client_sent():
    text = (FORWARD_AUTH / "nginx.conf").read_text()
    assert "proxy_set_header X-Original-URI $request_uri;" in text
    assert not re.search(r"X-Original-URI \$uri\b", text)
    assert f"proxy_pass http://patgate{default_forward_auth_path()};" in text
    assert "proxy_pass http://app$patgate_uri;" in text
    for header in ["Authorization", "X-API-Key", "X-Patgate-Uri"]:
        assert f'proxy_set_header {header} "";' in text
    for name in IDENTITY:
        assert re.search(rf"proxy_set_header {name} \$patgate_\w+;", text)
    assert "error_page 401 403 500 = @patgate_refused;" in text


def test_the_optional_nginx_decision_cache_keys_on_what_a_decision_reads():
    text = (FORWARD_AUTH / "nginx.conf").read_text()
    (key,) = re.findall(r"#cache proxy_cache_key \"([^\"]+)\";", text)
    parts = set(key.split("|"))
    assert {
        "$http_authorization",
        "$http_x_api_key",
        "$request_method",
        "$http_host",
        "$request_uri",
        "$remote_addr",
        "$http_x_forwarded_for",
        "$http_destination",
        "$http_if",
    } <= parts
    # Only allowed decisions, for "1s" (under 2 s in nginx's whole seconds):
    # the bound docs/forward-auth.md states.
    assert "#cache proxy_cache_valid 200 1s;" in text


def test_caddy_asks_patgate_and_copies_the_identity():
    text = (FORWARD_AUTH / "Caddyfile").read_text()
    assert f"uri {default_forward_auth_path()}" in text
    assert "copy_headers " + " ".join(IDENTITY) in text
    assert "header_up -Authorization" in text
    first = text.index("request_header -X-Patgate-*")
    assert first < text.index("forward_auth 127.0.0.1:8082 {")


@pytest.mark.parametrize(
    "name", ["nginx.conf", "Caddyfile", "envoy.yaml", "traefik.yaml"]
)
def test_forward_auth_files_ask_the_decision_listener_they_name(name):
    text = (FORWARD_AUTH / name).read_text()
    needs = re.search(r"^#   (forward_auth: \{.*\})$", text, re.MULTILINE)
    assert needs is not None, f"{name} names no forward_auth: section"
    config = parse_config(
        "trusted_proxies: [127.0.0.1/32]\n" + needs.group(1) + "\n", {}, "/etc/patgate"
    )
    assert config.forward_auth is not None
    assert config.forward_auth.listen is not None
    port = config.forward_auth.listen[1]
    assert f"127.0.0.1:{port}" in text or f"port_value: {port}" in text
