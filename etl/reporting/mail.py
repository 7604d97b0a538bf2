"""Sending mail through an Airflow SMTP connection (the SMTP provider's SmtpHook).

The server, port, login, password and TLS settings all come from the connection named in
``report.smtp_connection`` (mappings/defaults.yaml), e.g. ``AIRFLOW_CONN_SMTP_DEFAULT``; the
YAML holds addresses only. Every mail carries a plain-text part beside its HTML
(``multipart/alternative``), for clients and filters that read no HTML. Airflow is imported when
a mail is sent, never at import.
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from email.message import EmailMessage
from email.utils import formatdate

from etl.config.flows import ReportSettings
from etl.core.errors import EtlError
from etl.core.printable import get_logger

log = get_logger("etl.reporting.mail")
#: Airflow's secrets masker warns about every value it is given that is too short to mask.
_SHORT_SECRET_WARNING = "Skipping masking for a secret as it's too short"
_MASKER_LOGGERS = (
    "airflow.sdk._shared.secrets_masker.secrets_masker",
    "airflow._shared.secrets_masker.secrets_masker",
)
#: Airflow's default ``[logging] min_length_masked_secret``.
MIN_MASKED_LENGTH = 5


class MailNotConfigured(EtlError):
    """The SMTP connection gives no sender and ``report.sender`` is empty."""


def _not_short_secret_warning(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_SHORT_SECRET_WARNING)


@contextmanager
def _extras_not_reported_as_secrets() -> Iterator[None]:
    """Reading an SMTP connection hands every extra (``timeout=10``, ``disable_tls=true``) to
    Airflow's secrets masker, which then warns that they are too short to mask, on every mail.
    They are settings, not secrets; the password is checked on its own (``_check_password``)."""
    loggers = [logging.getLogger(name) for name in _MASKER_LOGGERS]
    for logger in loggers:
        logger.addFilter(_not_short_secret_warning)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(_not_short_secret_warning)


def _check_password(connection_id: str, password: str) -> None:
    if 0 < len(password) < MIN_MASKED_LENGTH:
        log.warning("connection %s: its password is shorter than %d characters, so Airflow cannot mask it "
                    "in logs; use a longer one", connection_id, MIN_MASKED_LENGTH)


def build_message(sender: str, to: Sequence[str], subject: str, html: str, text: str) -> EmailMessage:
    """A ``multipart/alternative`` message: ``text`` first (plain), then ``html``."""
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Date"] = formatdate(localtime=True)
    message.set_content(text)
    # Base64 keeps the page byte for byte: its lines can be longer than SMTP allows.
    message.add_alternative(html, subtype="html", cte="base64")
    return message


def send_html(
    settings: ReportSettings, subject: str, html: str, recipients: Sequence[str] | None = None,
    *, text: str,
) -> list[str]:
    """Send ``html`` with its plain-text twin ``text`` to ``recipients`` (default: the report's)
    through the configured SMTP connection; returns who it went to, ``[]`` (nothing sent) when
    nobody is configured. Raises MailNotConfigured without a sender, and the provider's errors
    (unknown connection, refused server) unchanged."""
    to = list(recipients if recipients is not None else settings.recipients)
    if not to:
        return []
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    with _extras_not_reported_as_secrets(), SmtpHook(smtp_conn_id=settings.smtp_connection) as hook:
        _check_password(settings.smtp_connection, hook.smtp_password)
        sender = settings.sender or hook.from_email
        if not sender:
            raise MailNotConfigured(
                f"mail {subject!r}: no sender: set report.sender in mappings/defaults.yaml or the from_email "
                f"extra of connection {settings.smtp_connection}"
            )
        message = build_message(sender, to, subject, html, text)
        # The hook's own send builds an HTML-only message; its logged-in client sends ours.
        client = hook._smtp_client
        if not isinstance(client, smtplib.SMTP):
            raise MailNotConfigured(f"connection {settings.smtp_connection}: the SMTP client did not connect")
        for attempt in range(hook.smtp_retry_limit + 1):
            try:
                client.send_message(message, from_addr=sender, to_addrs=to)
                break
            except Exception:
                if attempt == hook.smtp_retry_limit:
                    raise
    # Addresses and subject only: the connection and its password are never logged here.
    log.info("mail %r sent to %s through connection %s", subject, ", ".join(to), settings.smtp_connection)
    return to
