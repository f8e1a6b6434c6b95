"""structlog set-up and the redaction processor every log line passes through.

The chain is structlog's production recipe: context variables, log level, an
ISO 8601 UTC timestamp, exception formatting, :func:`redact_secrets`, then a
JSON (or console) renderer, behind a filtering bound logger. Redaction runs
after the exception is formatted, so a token inside a traceback is hidden too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from json.encoder import encode_basestring_ascii
from typing import Any, TextIO, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from patgate.errors import UsageError
from patgate.extract import ASCII_ESCAPE, MAX_ENCODING_LAYERS

REDACTED = "[REDACTED]"

# Anything shaped like a token value of any prefix: 2-16 lowercase letters or
# digits, "_", 46 base62 characters (id + secret + checksum).
# SECURITY: token values in logs; this catches them in messages, URLs and
# nested fields whatever the key is called.
TOKEN_VALUE_PATTERN = re.compile(r"[a-z0-9]{2,16}_[0-9A-Za-z]{46}")
_SHORTEST_TOKEN = 2 + 1 + 46

_SENSITIVE_WORDS = (
    "password",
    "token",
    "secret",
    "authorization",
    "cookie",
    "pepper",
    "api_key",
    "apikey",
)
# Keys that name a sensitive word but hold public data.
_PUBLIC_KEYS = frozenset({"token_id", "token_ids", "token_count"})


@functools.lru_cache(maxsize=4096)
def is_sensitive_key(key: str) -> bool:
    """True for keys like ``password``, ``new_password``, ``Set-Cookie``."""
    name = key.lower().replace("-", "_")
    if name in _PUBLIC_KEYS:
        return False
    return any(word in name for word in _SENSITIVE_WORDS)


def redact_text(text: str) -> str:
    """``text`` with every token-shaped value replaced by ``[REDACTED]``.

    Also a value that only some percent-decoding of ``text`` shows
    (``pgt%5F...``, ``pgt%255F...``, every character escaped): the
    characters it was spelled with are replaced, and every other byte of
    ``text`` stays as it was. SECURITY: the access log writes the raw path,
    where ``/public/pgt%5F...`` is a token to any upstream that decodes it.
    """
    # Most log strings are short, or have neither "_" nor "%": no regex
    # for them (every access-log line passes here).
    if len(text) < _SHORTEST_TOKEN:
        return text
    if "%" not in text:
        if "_" not in text:
            return text
        return TOKEN_VALUE_PATTERN.sub(REDACTED, text)
    spans = _token_spans(text)
    if not spans:
        return text
    return _replace_spans(text, spans)


def _token_spans(text: str) -> list[tuple[int, int]]:
    """Where ``text`` spells a token, as is or in any percent-decoding of it."""
    spans = [match.span() for match in TOKEN_VALUE_PATTERN.finditer(text)]
    layer = text
    bounds: Sequence[int] = range(len(text) + 1)
    for _ in range(MAX_ENCODING_LAYERS):
        decoded = _decode_layer(layer, bounds)
        if decoded is None or len(decoded[0]) < _SHORTEST_TOKEN:
            return spans
        layer, bounds = decoded
        for match in TOKEN_VALUE_PATTERN.finditer(layer):
            start, end = match.span()
            spans.append((bounds[start], bounds[end]))
    # SECURITY: nested deeper than any real encoding: hide all of it.
    return [(0, len(text))]


def _decode_layer(layer: str, bounds: Sequence[int]) -> tuple[str, list[int]] | None:
    """``layer`` with its ASCII escapes decoded once, or None if it has none.

    ``bounds[i]`` is where character ``i`` of ``layer`` starts in the logged
    text (the last entry: its end); the decoded layer gets its own.
    """
    pieces: list[str] = []
    new_bounds: list[int] = []
    at = 0
    for match in ASCII_ESCAPE.finditer(layer):
        start = match.start()
        pieces.append(layer[at:start])
        pieces.append(chr(int(layer[start + 1 : start + 3], 16)))
        new_bounds.extend(bounds[at : start + 1])
        at = start + 3
    if not pieces:
        return None
    pieces.append(layer[at:])
    new_bounds.extend(bounds[at:])
    return "".join(pieces), new_bounds


def _replace_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each (merged) span replaced by one ``[REDACTED]``."""
    pieces: list[str] = []
    at = 0
    for start, end in sorted(spans):
        if end <= at:
            continue
        if start > at:
            pieces.append(text[at:start])
            pieces.append(REDACTED)
        elif not pieces or pieces[-1] != REDACTED:
            pieces.append(REDACTED)
        at = end
    pieces.append(text[at:])
    return "".join(pieces)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            key: REDACTED
            if isinstance(key, str) and is_sensitive_key(key)
            else _redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(item) for item in value]
    return value


def redact_secrets(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    """structlog processor: hide token values and secret-named fields."""
    return cast(EventDict, _redact_value(event_dict))


class NamedPrintLogger(structlog.PrintLogger):
    """A PrintLogger that knows the name it was asked for."""

    def __init__(self, file: TextIO | None = None, name: str | None = None):
        super().__init__(file)
        self.name = name

    def msg(self, message: str) -> None:
        # One write per line: the workers of ``serve`` share stderr, and
        # print() writes the newline apart, so their lines could run together.
        with self._lock:
            self._file.write(message + "\n")
            self._file.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class NamedPrintLoggerFactory:
    """``structlog.get_logger(name)`` → a :class:`NamedPrintLogger` on ``file``."""

    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> NamedPrintLogger:
        name = args[0] if args and isinstance(args[0], str) else None
        return NamedPrintLogger(self._file, name)


def add_logger_name(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    """structlog processor: the ``logger`` field from the logger's name."""
    name = getattr(logger, "name", None)
    if name:
        event_dict.setdefault("logger", name)
    return event_dict


def _level_number(level: str) -> int:
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise UsageError(
            f"invalid log level {level!r}: use debug, info, warning, error or critical"
        )
    return number


def configure_logging(
    level: str = "info",
    json: bool = True,
    stream: TextIO | None = None,
    *,
    cache_loggers: bool = False,
) -> None:
    """Send structlog output to ``stream`` (stderr by default), one line per event.

    ``json=False`` renders for people (no colours). Loggers are not cached on
    first use, so :func:`structlog.testing.capture_logs` and a later call here
    take effect on loggers made earlier; the long-running gateway passes
    ``cache_loggers=True`` (the access log is on every request's path).
    """
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]
    if json:
        processors.append(structlog.processors.JSONRenderer())
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_level_number(level)),
        logger_factory=NamedPrintLoggerFactory(
            stream if stream is not None else sys.stderr
        ),
        cache_logger_on_first_use=cache_loggers,
    )


# Whole lines per write, at most this many bytes: a pipe write that size is
# atomic, so workers sharing stderr never interleave inside a line.
_ATOMIC_WRITE = 4096
# Requests whose lines wait at most this many, or ``flush_delay`` seconds.
_MAX_PENDING = 512
# One request's fields, as AccessLog.request takes them, and when it ended.
_Record = tuple[
    str | None,
    str,
    int | None,
    str | None,
    str | None,
    str | None,
    str | None,
    str | None,
    float | None,
    int | None,
    float,
]


class AccessLog:
    """The access log's fast lane: one JSON line per request, written in batches.

    Every request writes one line, so this skips structlog's generic chain
    (contextvars, recursive redaction, a flush per line): the fields are
    known, only ``method`` and ``path`` carry client text and they are
    redacted (percent-decoded too, see :func:`redact_text`), and lines
    are gathered for at most ``flush_delay`` seconds. The lines have the same
    shape as every other log line (event, logger, level, timestamp).
    """

    @classmethod
    def for_level(cls, level: str, stream: TextIO | None = None) -> AccessLog:
        """The access log of a process logging at ``level``: off above info."""
        return cls(stream, enabled=_level_number(level) <= logging.INFO)

    def __init__(
        self,
        stream: TextIO | None = None,
        flush_delay: float = 0.05,
        *,
        enabled: bool = True,
    ) -> None:
        self.stream = stream
        self.enabled = enabled
        self.flush_delay = flush_delay
        self._pending: list[_Record] = []
        self._timer: asyncio.TimerHandle | None = None
        self._captured: list[dict[str, Any]] | None = None
        self._second = -1
        self._second_text = ""

    @contextmanager
    def capture(self) -> Iterator[list[dict[str, Any]]]:
        """Collect each line's fields, as given, instead of writing them.

        The access log's counterpart of ``structlog.testing.capture_logs``:
        tests see the fields before redaction.
        """
        captured: list[dict[str, Any]] = []
        self._captured = captured
        try:
            yield captured
        finally:
            self._captured = None

    def request(
        self,
        method: str | None = None,
        path: str = "",
        status: int | None = None,
        route: str | None = None,
        token_id: str | None = None,
        user: str | None = None,
        reason: str | None = None,
        client: str | None = None,
        duration_ms: float | None = None,
        pid: int | None = None,
    ) -> None:
        """Queue the line of one request; the caller's values are not copied."""
        if self._captured is not None:
            self._captured.append(
                {
                    "method": method,
                    "path": path,
                    "status": status,
                    "route": route,
                    "token_id": token_id,
                    "user": user,
                    "reason": reason,
                    "client": client,
                    "duration_ms": duration_ms,
                    "pid": pid,
                    "event": "request",
                }
            )
            return
        if not self.enabled:
            return
        # Only the fields now; the lines are made when written, all in one
        # loop: in a running gateway, making a line between two requests'
        # work costs several times what it costs in a batch.
        pending = self._pending
        pending.append(
            (
                method,
                path,
                status,
                route,
                token_id,
                user,
                reason,
                client,
                duration_ms,
                pid,
                time.time(),
            )
        )
        if len(pending) >= _MAX_PENDING:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self.flush_delay, self.flush)

    def _line(self, record: _Record) -> str:
        method, path, status, route, token_id, user, reason, client, ms, pid, at = (
            record
        )
        # Hand-made JSON, with the key order json.dumps(dict) gave: a dict and
        # the generic encoder cost more than the rest of the line together.
        return (
            f'{{"method": {_text(method and redact_text(method))}, '
            f'"path": {_text(redact_text(path))}, '
            f'"status": {_number(status)}, "route": {_text(route)}, '
            f'"token_id": {_text(token_id)}, "user": {_text(user)}, '
            f'"reason": {_text(reason)}, "client": {_text(client)}, '
            f'"duration_ms": {_number(ms)}, "pid": {_number(pid)}, '
            f'"event": "request", "logger": "patgate.access", "level": "info", '
            f'"timestamp": "{self._timestamp(at)}"}}\n'
        )

    def _timestamp(self, now: float) -> str:
        """ISO 8601 UTC with microseconds, as structlog's TimeStamper writes it."""
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((now - second) * 1_000_000):06d}Z"

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        records, self._pending = self._pending, []
        stream = self.stream if self.stream is not None else sys.stderr
        chunk: list[str] = []
        size = 0
        try:
            for record in records:
                line = self._line(record)
                if size + len(line) > _ATOMIC_WRITE and chunk:
                    stream.write("".join(chunk))
                    stream.flush()
                    chunk.clear()
                    size = 0
                chunk.append(line)
                size += len(line)
            stream.write("".join(chunk))
            stream.flush()
        except (OSError, ValueError):
            pass  # stderr closed: an access line is not worth a crash


def _text(value: object) -> str:
    """A JSON string (ASCII, escaped like json.dumps), or null."""
    if value is None:
        return "null"
    return encode_basestring_ascii(value if isinstance(value, str) else str(value))


def _number(value: float | None) -> str:
    if value is None:
        return "null"
    if value != value or value in (_INF, -_INF):
        return "null"
    return repr(value)


_INF = float("inf")


def get_logger(name: str | None = None) -> FilteringBoundLogger:
    """A logger; ``name`` becomes the ``logger`` field of every line."""
    args = (name,) if name else ()
    return cast(FilteringBoundLogger, structlog.get_logger(*args))
