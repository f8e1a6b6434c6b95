"""Long-lived responses (downloads, WebSockets) that a revocation must cut.

A request that was authorised once may stream for hours. Every such stream is
registered under its token id and owner; when a change notice for either
arrives, the stream's request is authorised again (the cache entry is already
dropped, so this asks the store) and the stream is cancelled unless it still
passes. SPEC §8 "Long-lived connections".
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from patgate.gate import Gate, RequestView
from patgate.models import Change, ChangeKind
from patgate.policy import Decision
from patgate.routing import CompiledRoute


@dataclass(slots=True, eq=False)  # made per request: not frozen, which costs more
class Stream:
    """One registered response; compared and hashed by identity (cheap: the
    registry adds and removes one on every proxied request)."""

    task: asyncio.Task[object]
    route: CompiledRoute
    view: RequestView
    token_id: str
    owner: str


class StreamRegistry:
    def __init__(self) -> None:
        self._streams: set[Stream] = set()

    def __len__(self) -> int:
        return len(self._streams)

    def open(
        self,
        route: CompiledRoute,
        view: RequestView | None,
        decision: Decision | None,
    ) -> Stream | None:
        """Register the current task's response; pair with :meth:`close`."""
        if view is None or decision is None or not decision.token_id:
            return None
        task = asyncio.current_task()
        if task is None:
            return None
        stream = Stream(task, route, view, decision.token_id, decision.user or "")
        self._streams.add(stream)
        return stream

    def close(self, stream: Stream | None) -> None:
        if stream is not None:
            self._streams.discard(stream)

    def affected(self, change: Change) -> list[Stream]:
        if change.kind is ChangeKind.TOKEN:
            return [s for s in self._streams if s.token_id == change.key]
        return [s for s in self._streams if s.owner == change.key]

    def all(self) -> list[Stream]:
        return list(self._streams)

    async def revalidate(self, gate: Gate, streams: list[Stream]) -> int:
        """Authorise each stream's request again; cancel the ones now refused."""
        cancelled = 0
        for stream in streams:
            decision = await gate.authorize(stream.route, stream.view, note_usage=False)
            if not decision.allowed and not stream.task.done():
                stream.task.cancel()
                cancelled += 1
        return cancelled
