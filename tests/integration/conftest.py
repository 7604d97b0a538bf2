"""Fixtures of the integration tests that need Airflow or a mail server.

Airflow reads its configuration once, when first imported: every test that imports Airflow
(the SMTP provider included) asks for ``airflow_home`` first, so the whole session uses the
throwaway Airflow it sets up.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from etl.config.paths import REPO_ROOT


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A throwaway Airflow for the session: its own home, a migrated SQLite metadata database,
    the DAGs of dags/, no examples."""
    if "airflow.configuration" in sys.modules:
        pytest.fail("Airflow was imported before the airflow_home fixture set its environment")
    from demo.airflow_runs import airflow_environment, migrate_metadata_db

    home = tmp_path_factory.mktemp("airflow_home")
    with pytest.MonkeyPatch.context() as env:
        for name, value in airflow_environment(home).items():
            env.setenv(name, value)
        # Airflow's task processes import `etl` from the DAG file.
        env.setenv("PYTHONPATH", str(REPO_ROOT))
        started = time.perf_counter()
        migrate_metadata_db()
        print(f"\nairflow db migrate: {time.perf_counter() - started:.1f}s")
        yield home


@dataclass(frozen=True)
class Received:
    """One message as the server received it: the SMTP envelope and the parsed message."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        assert part is not None, "the message has no HTML body"
        return str(part.get_content())

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None, "the message has no plain-text body"
        return str(part.get_content())


@dataclass
class Mailbox:
    """What the test SMTP server received, and the Airflow connection URI that reaches it."""

    port: int
    messages: list[Received] = field(default_factory=list)

    @property
    def connection_uri(self) -> str:
        # Plain SMTP on localhost: the provider's extras switch off SMTPS and STARTTLS; one
        # attempt, so a refused mail fails fast.
        return (f"smtp://127.0.0.1:{self.port}?disable_ssl=true&disable_tls=true"
                "&from_email=erp-mes-sync%40plant.example&retry_limit=0&timeout=10")

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def wait_for(self, count: int = 1, timeout: float = 10) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.messages)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def smtp_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Mailbox]:
    """A real SMTP server (aiosmtpd) on a free local port, reachable as the Airflow connection
    ``smtp_default`` through ``AIRFLOW_CONN_SMTP_DEFAULT``; stopped at the end of the test."""
    from aiosmtpd.controller import Controller

    mailbox = Mailbox(_free_port())
    controller = Controller(mailbox, hostname="127.0.0.1", port=mailbox.port)
    controller.start()
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", mailbox.connection_uri)
    try:
        yield mailbox
    finally:
        controller.stop()
