"""Sending HTML mail through an Airflow SMTP connection (the SMTP provider's SmtpHook).

The server, port, login, password and TLS settings all come from the connection named in
``report.smtp_connection`` (mappings/defaults.yaml), e.g. ``AIRFLOW_CONN_SMTP_DEFAULT``; the
YAML holds addresses only. Airflow is imported when a mail is sent, never at import.
"""

from __future__ import annotations

from collections.abc import Sequence

from etl.config import ReportSettings
from etl.printable import get_logger

log = get_logger("etl.mail")


def send_html(settings: ReportSettings, subject: str, html: str, recipients: Sequence[str] | None = None) -> list[str]:
    """Send ``html`` to ``recipients`` (default: the report's) through the configured SMTP
    connection; returns who it went to, ``[]`` (nothing sent) when nobody is configured.
    Raises the provider's errors (unknown connection, refused server) unchanged."""
    to = list(recipients if recipients is not None else settings.recipients)
    if not to:
        return []
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    with SmtpHook(smtp_conn_id=settings.smtp_connection) as hook:
        hook.send_email_smtp(to=to, subject=subject, html_content=html, from_email=settings.sender)
    # Addresses and subject only: the connection and its password are never logged here.
    log.info("mail %r sent to %s through connection %s", subject, ", ".join(to), settings.smtp_connection)
    return to
