"""Gateway fixtures: a recording upstream and a gateway factory on real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.gateway_harness import Gateway, RecordingUpstream, start_gateway

StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    server = RecordingUpstream()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def make_gateway() -> AsyncIterator[StartGateway]:
    started: list[Gateway] = []

    async def make(store_url: str, routes: str, **kwargs: object) -> Gateway:
        gateway = await start_gateway(store_url, routes, **kwargs)  # type: ignore[arg-type]
        started.append(gateway)
        return gateway

    try:
        yield make
    finally:
        for gateway in reversed(started):
            await gateway.stop()
