"""Life-cycle events, and the outbox records that carry them to webhooks.

An :class:`Event` is a fact (``token.revoked``, ``canary.used``...) with the
time and the token it is about. The service and the gate emit them into an
:class:`EventSink`; :class:`patgate.webhooks.Publisher` logs each one and puts
one :class:`Delivery` per matching webhook endpoint into the store's outbox,
from which one replica at a time delivers them (:mod:`patgate.webhooks`).
Every attempt is kept in the delivery log as a :class:`DeliveryAttempt`.

Pure: no I/O.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from patgate.durations import format_time

# Every event type, in the order the docs list them.
EVENT_TYPES = (
    "token.created",
    "token.copied",
    "token.regenerated",
    "token.edited",
    "token.revoked",
    "token.leak_reported",
    "token.first_used",
    "token.new_ip",
    "token.rotation_reuse",
    "token.expiring",
    "token.expired",
    "canary.used",
)


# The lease whose holder delivers the outbox.
WEBHOOK_LEASE = "webhooks"


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class Event:
    """One life-cycle fact. ``data`` holds the token id, owner, actor and the
    like: never a token value or hash."""

    type: str
    at: float
    data: Mapping[str, Any]
    id: str = field(default_factory=new_event_id)

    def to_json(self) -> str:
        """The webhook body: ``{"id", "type", "created_at", "data"}``."""
        return json.dumps(
            {
                "id": self.id,
                "type": self.type,
                "created_at": format_time(self.at),
                "data": dict(self.data),
            },
            sort_keys=True,
        )


class EventSink(Protocol):
    def emit(self, event: Event) -> None:
        """Take ``event``; never blocks, never raises."""


class EventBuffer:
    """Events waiting for a background task: the gate emits on its hot path.

    Bounded: beyond ``limit`` pending events new ones are counted as dropped
    (a flood of canary uses must not grow memory).
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._events: list[Event] = []
        self.limit = limit
        self.dropped = 0
        self.ready = asyncio.Event()

    def emit(self, event: Event) -> None:
        if len(self._events) >= self.limit:
            self.dropped += 1
            return
        self._events.append(event)
        self.ready.set()

    def drain(self) -> list[Event]:
        events, self._events = self._events, []
        self.ready.clear()
        return events


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for one endpoint, waiting in the outbox.

    ``id`` is ``<event id>.<endpoint number>``; ``attempts`` made so far;
    ``next_at`` when it is due (epoch seconds).
    """

    id: str
    event_id: str
    event_type: str
    url: str
    body: str
    next_at: float
    attempts: int = 0

    def to_json(self) -> str:
        return json.dumps(
            [
                self.id,
                self.event_id,
                self.event_type,
                self.url,
                self.body,
                self.next_at,
                self.attempts,
            ]
        )

    @classmethod
    def from_json(cls, text: str) -> Delivery:
        item = json.loads(text)
        return cls(
            str(item[0]),
            str(item[1]),
            str(item[2]),
            str(item[3]),
            str(item[4]),
            float(item[5]),
            int(item[6]),
        )


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """One try at a delivery, as the delivery log keeps it.

    ``status`` is the endpoint's HTTP status (None: no answer; ``error``
    says why); ``final``: no retry follows (delivered, or given up).
    """

    delivery_id: str
    event_id: str
    event_type: str
    url: str
    attempt: int
    at: float
    ok: bool
    status: int | None = None
    error: str = ""
    final: bool = True

    def to_public(self) -> dict[str, Any]:
        return {
            "delivery_id": self.delivery_id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "url": self.url,
            "attempt": self.attempt,
            "at": format_time(self.at),
            "ok": self.ok,
            "status": self.status,
            "error": self.error,
            "final": self.final,
        }

    def to_json(self) -> str:
        return json.dumps(
            [
                self.delivery_id,
                self.event_id,
                self.event_type,
                self.url,
                self.attempt,
                self.at,
                self.ok,
                self.status,
                self.error,
                self.final,
            ]
        )

    @classmethod
    def from_json(cls, text: str) -> DeliveryAttempt:
        item = json.loads(text)
        return cls(
            str(item[0]),
            str(item[1]),
            str(item[2]),
            str(item[3]),
            int(item[4]),
            float(item[5]),
            bool(item[6]),
            None if item[7] is None else int(item[7]),
            str(item[8]),
            bool(item[9]),
        )
