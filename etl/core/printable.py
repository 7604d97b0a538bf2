"""Text safe to show on a terminal or in a log: control characters escaped.

Source values reach the screen and the logs (quarantine keys, reasons, warnings, errors). An
escape sequence among them would clear the screen, retitle the window, hide text or forge a
log line; a bidirectional override would show text in another order than it is. Every such
character is shown as its escape (``\\x1b``, ``\\u202e``) instead. ``python -m etl`` writes all
its output through :class:`EscapingStream`; the pipeline's loggers come from :func:`get_logger`.
"""

from __future__ import annotations

import logging
import re
from typing import Any, TextIO

# C0 and C1 controls, DEL, and the bidirectional embeddings, overrides and isolates.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROLS_BUT_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str, *, keep_lines: bool = False) -> str:
    """``text`` with every control character escaped; ``keep_lines`` keeps newlines and tabs
    (for whole messages and tracebacks, not for one value in a table cell or a log line)."""
    return (_CONTROLS_BUT_LINES if keep_lines else _CONTROLS).sub(_escape, text)


class EscapingStream:
    """A text stream that escapes control characters (but newlines and tabs) on the way out."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(escape_controls(text, keep_lines=True))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class EscapeControls(logging.Filter):
    """Escapes control characters in a record's message (newlines too: one record, one line)
    and in its traceback, whichever handler writes it (the CLI's, Airflow's task log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = escape_controls(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = escape_controls(logging.Formatter().formatException(record.exc_info), keep_lines=True)
        return True


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` whose records are escaped (see :class:`EscapeControls`)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, EscapeControls) for f in logger.filters):
        logger.addFilter(EscapeControls())
    return logger
