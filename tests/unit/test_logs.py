"""Log set-up: redaction of token values and secrets, JSON lines, UTC timestamps."""

import asyncio
import io
import json
import time
from datetime import UTC, datetime
from urllib.parse import unquote

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from patgate import logs, tokens
from patgate.errors import UsageError
from patgate.logs import AccessLog

VALUE = tokens.format_token("pgt", "AbCd1234", "0123456789abcdefghijABCDEFGHIJkl")
OTHER_PREFIX = tokens.format_token("acme", "zzzzzzzz", "Z" * 32)


@pytest.fixture
def stream():
    out = io.StringIO()
    logs.configure_logging(level="info", json=True, stream=out)
    yield out
    structlog.reset_defaults()


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_with_level_and_utc_iso_timestamp(stream):
    log = logs.get_logger("patgate.test")
    log.info("token_refused", token_id="AbCd1234", reason="expired")
    log.warning("second")
    first, second = lines(stream)
    assert first["event"] == "token_refused"
    assert first["level"] == "info"
    assert first["logger"] == "patgate.test"
    assert first["token_id"] == "AbCd1234"
    assert second["level"] == "warning"
    moment = datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00"))
    assert moment.utcoffset().total_seconds() == 0
    assert first["timestamp"].endswith("Z")


def test_level_filters_lower_levels():
    out = io.StringIO()
    logs.configure_logging(level="warning", stream=out)
    try:
        log = logs.get_logger()
        log.info("quiet")
        log.error("loud")
    finally:
        structlog.reset_defaults()
    assert [line["event"] for line in lines(out)] == ["loud"]


def test_unknown_level_is_a_usage_error():
    with pytest.raises(UsageError, match="invalid log level"):
        logs.configure_logging(level="chatty")


def test_token_values_are_redacted_everywhere_in_the_rendered_line(stream):
    log = logs.get_logger()
    log.info(
        f"got {VALUE}",
        url=f"/files?access_token={VALUE}&x=1",
        nested={"deep": [f"Bearer {OTHER_PREFIX}"], "token_id": "AbCd1234"},
        items=(VALUE,),
    )
    text = stream.getvalue()
    assert VALUE not in text
    assert OTHER_PREFIX not in text
    (line,) = lines(stream)
    assert line["event"] == "got [REDACTED]"
    assert line["url"] == "/files?access_token=[REDACTED]&x=1"
    assert line["nested"] == {"deep": ["Bearer [REDACTED]"], "token_id": "AbCd1234"}


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "new_password",
        "token",
        "tokens",
        "token_hash",
        "secret",
        "Authorization",
        "cookie",
        "Set-Cookie",
        "pepper",
        "x-api-key",
    ],
)
def test_secret_named_keys_are_redacted(key):
    event = logs.redact_secrets(None, "info", {"event": "e", key: "hunter2-secret"})
    assert event[key] == logs.REDACTED


@pytest.mark.parametrize("key", ["token_id", "token_ids", "owner", "actor", "event"])
def test_public_keys_are_kept(key):
    event = logs.redact_secrets(None, "info", {"event": "e", key: "AbCd1234"})
    assert event[key] == "AbCd1234"


def test_secret_named_keys_inside_nested_headers_are_redacted():
    event = logs.redact_secrets(
        None,
        "info",
        {"event": "e", "headers": {"Authorization": "Basic YWxpY2U6eA==", "Host": "h"}},
    )
    assert event["headers"] == {"Authorization": logs.REDACTED, "Host": "h"}


def test_exception_text_is_redacted_after_formatting(stream):
    log = logs.get_logger()
    try:
        raise ValueError(f"bad {VALUE}")
    except ValueError:
        log.exception("boom")
    assert VALUE not in stream.getvalue()
    (line,) = lines(stream)
    assert "[REDACTED]" in line["exception"]


def test_capture_logs_sees_events_of_loggers_made_before(stream):
    log = logs.get_logger("patgate.audit")
    with capture_logs() as captured:
        log.info("token.created", token_id="AbCd1234")
    assert captured == [
        {"event": "token.created", "token_id": "AbCd1234", "log_level": "info"}
    ]


def test_console_rendering_is_redacted_too():
    out = io.StringIO()
    logs.configure_logging(json=False, stream=out)
    try:
        logs.get_logger().info("hello", value=VALUE)
    finally:
        structlog.reset_defaults()
    assert "hello" in out.getvalue()
    assert VALUE not in out.getvalue()


# The access log's fast lane


def write_line(access: AccessLog, path: str = "/api/x") -> None:
    access.request("GET", path, 200, token_id="AbCd1234")


def test_access_lines_are_json_with_the_common_shape_and_a_redacted_path():
    out = io.StringIO()
    access = AccessLog(out)
    leaked = "pgt_" + "A" * 46
    write_line(access, f"/api/{leaked}/x")
    access.flush()
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "request"
    assert record["logger"] == "patgate.access"
    assert record["level"] == "info"
    assert record["timestamp"].endswith("Z")
    assert record["path"] == "/api/[REDACTED]/x"
    assert leaked not in line


def test_access_lines_escape_client_text_exactly_as_json_does():
    out = io.StringIO()
    access = AccessLog(out)
    odd = 'quote" back\\slash \x00\x1f tab\t é ✓ \udcff'
    access.request("GET", "/api/" + odd, 404, None, None, odd, None, "::1", 0.125, 7)
    access.flush()
    (line,) = out.getvalue().splitlines()
    assert line.isascii()
    record = json.loads(line)
    assert record["path"] == "/api/" + odd
    assert record["user"] == odd
    assert record["route"] is None
    assert record["token_id"] is None
    assert (record["status"], record["duration_ms"], record["pid"]) == (404, 0.125, 7)
    assert record["client"] == "::1"
    stamp = datetime.fromisoformat(record["timestamp"].removesuffix("Z"))
    assert abs(stamp.replace(tzinfo=UTC).timestamp() - time.time()) < 5
    assert list(record) == [
        "method",
        "path",
        "status",
        "route",
        "token_id",
        "user",
        "reason",
        "client",
        "duration_ms",
        "pid",
        "event",
        "logger",
        "level",
        "timestamp",
    ]


async def test_access_lines_are_batched_then_flushed_soon():
    out = io.StringIO()
    access = AccessLog(out, flush_delay=0.01)
    for _ in range(3):
        write_line(access)
    assert out.getvalue() == ""  # nothing written per request
    await asyncio.sleep(0.05)
    assert len(out.getvalue().splitlines()) == 3


def test_each_write_is_whole_lines_within_an_atomic_pipe_write():
    writes: list[str] = []

    class Recorder(io.StringIO):
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

    access = AccessLog(Recorder())
    for index in range(200):
        write_line(access, f"/api/{index}")
    access.flush()
    assert len(writes) > 1
    for text in writes:
        assert text.endswith("\n")
        assert len(text.encode()) <= 4096
    assert sum(len(text.splitlines()) for text in writes) == 200


def test_access_log_follows_the_configured_level():
    out = io.StringIO()
    assert not AccessLog.for_level("warning", out).enabled
    assert AccessLog.for_level("info", out).enabled
    assert AccessLog.for_level("debug", out).enabled
    quiet = AccessLog.for_level("warning", out)
    quiet.request("GET", "/x", 200)
    quiet.flush()
    assert out.getvalue() == ""


# --------------------------------------------------------------------------
# Redaction sees through percent-encoding (issue 11, finding 12)

_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=15)


def _decodings(text: str) -> list[str]:
    forms = [text]
    while (decoded := unquote(forms[-1])) != forms[-1]:
        forms.append(decoded)
    return forms


def _spell(value: str, how: int) -> str:
    if how == 1:
        return value.replace("_", "%5F")
    if how == 2:
        return value.replace("_", "%255F")
    if how == 3:
        return "".join(f"%{ord(c):02x}" for c in value)
    if how == 4:  # every character escaped, then the escapes' "%" again
        return "".join(f"%25{ord(c):02X}" for c in value)
    return value


@given(_text, _text, st.integers(0, 4), st.integers(0, 4))
def test_redacted_text_holds_no_token_in_any_decoding(before, after, how, how2):
    value = tokens.new_token().value
    other = tokens.new_token(prefix="abc").value
    text = before + _spell(value, how) + after + _spell(other, how2)
    redacted = logs.redact_text(text)
    secrets = (value, value[4:], other, other[4:])
    for form in _decodings(redacted):
        assert not any(secret in form for secret in secrets)
    assert logs.REDACTED in redacted


@given(_text.filter(lambda text: "%" not in text or "_" not in text))
def test_text_without_a_token_is_unchanged(text):
    text = text * 5
    assert logs.redact_text(text) == text


def test_redaction_keeps_every_other_byte():
    value = tokens.new_token().value
    body = value[4:]
    assert (
        logs.redact_text(f"/a%20b/pgt%5F{body}/c%2Fd?x=%41")
        == "/a%20b/[REDACTED]/c%2Fd?x=%41"
    )
    assert logs.redact_text(f"{value}%5F{value}") == "[REDACTED]%5F[REDACTED]"


def test_access_line_redacts_an_encoded_path_and_a_token_method():
    out = io.StringIO()
    log = AccessLog(stream=out)
    value = tokens.new_token().value
    log.request(value, "/p/pgt%255F" + value[4:], 404)
    log.flush()
    line = json.loads(out.getvalue())
    assert (line["method"], line["path"]) == ("[REDACTED]", "/p/[REDACTED]")
