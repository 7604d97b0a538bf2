"""Listeners: each hears one event source in a thread of its own and drops what it hears into an
:class:`EventBox`, which counts events and remembers when the first one arrived.

An event carries nothing the run loads (its payload is never read), so the listeners need not
keep order or deduplicate: the box only says "something happened since you last looked". A
listener that loses its connection says so through the box; the watch loop reconnects it.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import paho.mqtt.client as mqtt
import psycopg2
import psycopg2.extensions
from sqlalchemy.engine import URL

from etl.config.flows import Flow
from etl.core.clock import utcnow

#: How long a listener thread blocks before it looks at its stop flag.
POLL_SECONDS = 0.5
#: How long opening a connection may take before it counts as lost.
CONNECT_SECONDS = 10.0


class ListenerLost(Exception):
    """The event source went away (or could not be reached); the message names no password."""


@dataclass(frozen=True)
class Events:
    """What a box held when it was emptied: how many events, the first one's arrival (naive UTC)."""

    count: int
    first_at: datetime


class EventBox:
    """Events counted across threads; :meth:`take` waits for some, a lost source, or a wake-up."""

    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self._cond = threading.Condition()
        self._count = 0
        self._first_at: datetime | None = None
        self._lost: str | None = None
        self._clock = clock

    def add(self, count: int = 1) -> None:
        with self._cond:
            if self._first_at is None:
                self._first_at = self._clock()
            self._count += count
            self._cond.notify_all()

    def lose(self, reason: str) -> None:
        with self._cond:
            self._lost = self._lost or reason
            self._cond.notify_all()

    def wake(self) -> None:
        """Let a waiting :meth:`take` return at once (to stop)."""
        with self._cond:
            self._cond.notify_all()

    def take(self, timeout: float) -> Events | None:
        """The events that arrived (emptying the box), or None after ``timeout`` seconds without
        any. Raises ListenerLost once the source was lost and no event is left to hand out."""
        with self._cond:
            if self._count == 0 and self._lost is None:
                self._cond.wait(timeout)
            if self._count:
                assert self._first_at is not None
                taken = Events(self._count, self._first_at)
                self._count, self._first_at = 0, None
                return taken
            if self._lost is not None:
                reason, self._lost = self._lost, None
                raise ListenerLost(reason)
            return None


class Listener(Protocol):
    """One event source: :meth:`open` connects and starts hearing; :meth:`close` stops."""

    kind: str
    box: EventBox

    def open(self) -> None: ...

    def close(self) -> None: ...


class PostgresNotifyListener:
    """``LISTEN channel`` on a PostgreSQL connection of its own (autocommit, TCP keepalives so
    a dead server is noticed); each notification is one event. Notifications of transactions
    that roll back are never sent, and PostgreSQL folds identical ones of one transaction."""

    kind = "postgres_notify"

    def __init__(self, url: URL, channel: str, box: EventBox) -> None:
        self.url, self.channel, self.box = url, channel, box
        self._conn: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        args: dict[str, Any] = self.url.translate_connect_args(username="user", database="dbname")
        args.update({k: v for k, v in self.url.query.items() if isinstance(v, str)})
        try:
            conn = psycopg2.connect(
                connect_timeout=int(CONNECT_SECONDS), keepalives=1, keepalives_idle=10, keepalives_interval=5,
                keepalives_count=3, application_name="erp-mes-sync watch", **args,
            )
            conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
            with conn.cursor() as cur:
                # The channel is checked on load (lower case, digits, underscore): quoting suffices.
                cur.execute(f'LISTEN "{self.channel}"')
        except psycopg2.Error as exc:
            raise ListenerLost(f"PostgreSQL LISTEN {self.channel}: {_first_line(exc)}") from None
        self._conn = conn
        self._stop.clear()
        self._thread = threading.Thread(target=self._hear, name=f"listen-{self.channel}", daemon=True)
        self._thread.start()

    def _hear(self) -> None:
        conn = self._conn
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([conn], [], [], POLL_SECONDS)
                if not readable:
                    continue
                conn.poll()
                if conn.notifies:
                    count = len(conn.notifies)
                    conn.notifies.clear()
                    self.box.add(count)
        except (psycopg2.Error, OSError, ValueError) as exc:
            if not self._stop.is_set():
                self.box.lose(f"PostgreSQL LISTEN {self.channel}: {_first_line(exc)}")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * POLL_SECONDS)
            self._thread = None
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg2.Error:
                pass
            self._conn = None


class MqttListener:
    """A subscription to one MQTT topic filter with a persistent session (clean session off,
    the same client id each time): what the broker receives at QoS 1 while the listener is
    away is handed over when it connects again. Each message is one event."""

    kind = "mqtt"

    def __init__(self, url: URL, topic: str, qos: int, client_id: str, box: EventBox) -> None:
        self.url, self.topic, self.qos, self.client_id, self.box = url, topic, qos, client_id, box
        self._client: mqtt.Client | None = None

    def open(self) -> None:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False,
            protocol=mqtt.MQTTv311, reconnect_on_failure=False,
        )
        if self.url.username:
            client.username_pw_set(self.url.username, self.url.password)
        connected = threading.Event()
        refused: list[str] = []

        def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if reason.is_failure:
                refused.append(str(reason))
            else:
                c.subscribe(self.topic, self.qos)
            connected.set()

        def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            connected.set()
            if self._client is client:
                self.box.lose(f"MQTT {self.topic}: disconnected ({reason})")

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_message = lambda _c, _u, _m: self.box.add()
        try:
            client.connect(self.url.host or "127.0.0.1", self.url.port or 1883, keepalive=15)
        except OSError as exc:
            raise ListenerLost(f"MQTT {self.url.host}:{self.url.port or 1883}: {exc.strerror or exc}") from None
        self._client = client
        client.loop_start()
        if not connected.wait(CONNECT_SECONDS) or refused:
            self.close()
            raise ListenerLost(f"MQTT {self.url.host}:{self.url.port or 1883}: {refused[0] if refused else 'no answer'}")

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def listener_for(flow: Flow, url: URL, box: EventBox) -> Listener:
    """The listener of a flow's ``trigger.on``; ``url`` is that trigger's connection."""
    assert flow.trigger is not None, f"flow {flow.flow} has no trigger"
    on = flow.trigger.on
    if on.postgres_notify is not None:
        return PostgresNotifyListener(url, on.postgres_notify.channel, box)
    assert on.mqtt is not None
    client_id = on.mqtt.client_id or f"erp-mes-sync-{flow.flow}"
    return MqttListener(url, on.mqtt.topic, on.mqtt.qos, client_id, box)


class Backoff:
    """Waits that double from ``first`` up to ``most`` seconds; :meth:`reset` after a success."""

    def __init__(self, first: float = 0.5, most: float = 30.0) -> None:
        self.first, self.most, self.next = first, most, first

    def pause(self, stop: threading.Event) -> float:
        """Wait the next pause (or until ``stop``); returns the seconds it waited for."""
        seconds = self.next
        self.next = min(self.next * 2, self.most)
        started = time.monotonic()
        stop.wait(seconds)
        return time.monotonic() - started

    def reset(self) -> None:
        self.next = self.first
