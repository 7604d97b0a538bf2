"""The event trigger of an event-driven flow's asset watcher, run by Airflow's triggerer.

No provider listens to PostgreSQL NOTIFY, and none of common-messaging's queue providers
subscribes to an MQTT topic with a persistent session, so one small trigger serves both with the listeners of ``python -m etl watch``
(etl.events.listeners): it yields one TriggerEvent for each batch of events the box held
(a flood becomes a few asset events, not thousands), and one when it (re)connects, since what
was sent while nobody listened is not sent again. The event says which flow and when its first
event arrived, never what to read: the run reads from the watermark. So an asset event that
Airflow keeps after its source has moved on (apache/airflow#64205), or one it holds back while
the DAG is at max_active_runs (#56050), costs at most an extra run that loads nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from etl.events.listeners import (
    Backoff,
    EventBox,
    Listener,
    ListenerLost,
    MqttListener,
    PostgresNotifyListener,
)

CLASSPATH = "etl.airflow.triggers.FlowEventTrigger"
#: How long one wait for events lasts inside the triggerer's event loop (in a worker thread).
WAIT_SECONDS = 1.0


class FlowEventTrigger(BaseEventTrigger):
    """Fires when the flow's event source (``postgres_notify`` channel or ``mqtt`` topic) does.

    Every argument is the flow's YAML as it was when the DAG was parsed, so a changed trigger
    block gives a new trigger (Airflow identifies event triggers by their arguments)."""

    def __init__(
        self, flow: str, kind: str, connection: str, address: str, qos: int = 1, client_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.flow, self.kind, self.connection, self.address = flow, kind, connection, address
        self.qos, self.client_id = qos, client_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return CLASSPATH, {
            "flow": self.flow, "kind": self.kind, "connection": self.connection, "address": self.address,
            "qos": self.qos, "client_id": self.client_id,
        }

    def _listener(self, box: EventBox) -> Listener:
        from etl.sync.connections import resolve_url

        url = resolve_url(self.connection)
        if self.kind == "postgres_notify":
            return PostgresNotifyListener(url, self.address, box)
        # Its own session: an `etl watch` of the same flow keeps the plain client id.
        return MqttListener(url, self.address, self.qos, self.client_id or f"erp-mes-sync-{self.flow}-airflow", box)

    def _event(self, woken_by: str, count: int, first_at: Any) -> TriggerEvent:
        return TriggerEvent({
            "flow": self.flow, "woken_by": woken_by, "events": count,
            "event_at": first_at.isoformat() if first_at is not None else None,
        })

    async def run(self) -> AsyncIterator[TriggerEvent]:
        box = EventBox()
        listener = await asyncio.to_thread(self._listener, box)
        backoff = Backoff()
        try:
            while True:
                try:
                    await asyncio.to_thread(listener.open)
                except ListenerLost as exc:
                    self.log.warning("flow %s: %s; trying again in %.1fs", self.flow, exc, backoff.next)
                    await asyncio.sleep(backoff.next)
                    backoff.next = min(backoff.next * 2, backoff.most)
                    continue
                backoff.reset()
                yield self._event("reconnect", 0, None)
                while True:
                    try:
                        events = await asyncio.to_thread(box.take, WAIT_SECONDS)
                    except ListenerLost as exc:
                        self.log.warning("flow %s: %s; reconnecting", self.flow, exc)
                        await asyncio.to_thread(listener.close)
                        break
                    if events is not None:
                        yield self._event(self.kind, events.count, events.first_at)
        finally:
            await asyncio.to_thread(listener.close)
