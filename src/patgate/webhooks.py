"""Webhook signatures, retry schedule, and the publisher of events.

Signature (like Stripe's): the header ``X-Patgate-Signature: t=<unix
seconds>,v1=<hex>`` where ``hex`` is HMAC-SHA256 under the endpoint's secret
of ``<t>.<body>`` (the body's bytes exactly as sent). A receiver recomputes
it, compares in constant time, and refuses a ``t`` too far from its clock
(replays); :func:`verify_signature` does all three.

:class:`Publisher` turns events into outbox deliveries, one per endpoint
that wants the event's type; the delivery itself (HTTP) is
:mod:`patgate.web.webhooks`. Pure of I/O libraries: the store is any Store.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from structlog.typing import FilteringBoundLogger

from patgate.config import WebhookConfig, WebhookDelivery
from patgate.events import Delivery, Event
from patgate.logs import get_logger
from patgate.store.base import Store

SIGNATURE_HEADER = "X-Patgate-Signature"
EVENT_HEADER = "X-Patgate-Event"
EVENT_ID_HEADER = "X-Patgate-Event-Id"
DELIVERY_HEADER = "X-Patgate-Delivery"
# How far a signature's time may be from the receiver's clock.
TOLERANCE = 300.0


def url_for_log(url: str) -> str:
    """``url`` as a log line may show it: its scheme, host and port only.

    SECURITY: receivers often take their key in the URL: in the user info
    (``user:pass@``), the query (``?token=``) or the path itself (chat
    services' ``/services/T0/B0/<key>``). Logs travel where the config
    does not, so they name the endpoint by its origin.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return "[unparsable URL]"
    if not parts.scheme or not host:
        return "[unparsable URL]"
    shown = f"[{host}]" if ":" in host else host
    if port is not None:
        shown += f":{port}"
    return f"{parts.scheme}://{shown}/..."


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Patgate-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


_STAMP = re.compile(r"[0-9]{1,12}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def verify_signature(
    secret: bytes, header: str, body: bytes, now: float, tolerance: float = TOLERANCE
) -> bool:
    """Whether ``header`` signs ``body`` under ``secret`` within ``tolerance``."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    stamp, given = parts.get("t", ""), parts.get("v1", "")
    # ASCII digits and hex only: "²".isdigit() is True but int() refuses it,
    # and compare_digest raises on non-ASCII text; a forged header is False.
    if _STAMP.fullmatch(stamp) is None or _HEX64.fullmatch(given) is None:
        return False
    if abs(now - int(stamp)) > tolerance:
        return False
    expected = sign(secret, int(stamp), body).partition(",v1=")[2]
    return hmac.compare_digest(expected.encode(), given.encode())


def retry_delay(attempt: int, options: WebhookDelivery) -> float:
    """Seconds before try ``attempt + 1``: doubling from ``first_retry``."""
    return float(min(options.first_retry * 2 ** (attempt - 1), options.max_retry))


def deliveries_of(
    events: Sequence[Event], webhooks: Sequence[WebhookConfig]
) -> list[Delivery]:
    """One delivery per (event, endpoint that wants it), due at once."""
    return [
        Delivery(
            f"{event.id}.{number}",
            event.id,
            event.type,
            hook.url,
            event.to_json(),
            event.at,
        )
        for event in events
        for number, hook in enumerate(webhooks)
        if hook.wants(event.type)
    ]


class Publisher:
    """Logs every event (the audit log) and queues it for the webhooks."""

    def __init__(
        self,
        store: Store,
        webhooks: Sequence[WebhookConfig] = (),
        *,
        audit: FilteringBoundLogger | None = None,
    ) -> None:
        self.store = store
        self.webhooks = tuple(webhooks)
        self._audit = audit if audit is not None else get_logger("patgate.audit")

    async def publish(self, events: Sequence[Event]) -> None:
        """Log ``events`` and put their deliveries in the outbox.

        Raises StoreUnavailableError when the outbox cannot be written (the
        events were logged).
        """
        for event in events:
            self._audit.info(event.type, **event.data)
        await self.store.enqueue_deliveries(deliveries_of(events, self.webhooks))
