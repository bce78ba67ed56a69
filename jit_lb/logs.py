"""Operational logs (not the audit log): structlog key-value lines on stderr, with every secret and token redacted.

No secret or token reaches a log line at any level: at DEBUG, slack_sdk writes each request's body (an
enrolment's DM carries the `otpauth://` URI and its secret) and each answer; botocore writes request
headers. Every line, from the standard library's loggers and from structlog, passes through `redact`,
which removes TOTP secrets and URIs, Slack tokens, and the exact values of the process's own secrets.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

import structlog

REDACTED = "(redacted)"
# Env variables whose values are secrets wherever they appear (the settings' SecretStr fields and the SDKs').
SECRET_VARIABLES = (
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "JIT_AUDIT_KEY",
    "JIT_MFA_KEY",
    "PAGERDUTY_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
# What is kept of a match is its `keep` group (a name worth reading: which secret was removed).
_PATTERNS = (
    re.compile(r"otpauth://[^\s'\"`\\<>|)]+"),  # an enrolment's URI: its secret is in the query
    re.compile(r"(?P<keep>(?i:secret)(?:=|%3D))[A-Za-z2-7]{16,}"),  # a base32 TOTP secret, plain or URL-escaped
    re.compile(r"\bxox[a-z]-[A-Za-z0-9-]+"),  # Slack bot, user and legacy tokens
    re.compile(r"\bxapp-[A-Za-z0-9-]+"),  # Slack app-level tokens
    re.compile(r"(?P<keep>(?i:X-Amz-Security-Token)['\"]?\s*[:=]\s*b?['\"]?)[A-Za-z0-9+/=%]+"),
)
_MIN_SECRET = 6  # a value this short is not redacted by value (it would blank ordinary words)


class Redactor:
    """Removes secrets from text: by pattern, and by the exact values named in the environment."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values = sorted({v for v in values if len(v) >= _MIN_SECRET}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, REDACTED)
        for pattern in _PATTERNS:
            text = pattern.sub(_keep_prefix, text)
        return text


def _keep_prefix(match: re.Match[str]) -> str:
    return (match.group("keep") if "keep" in match.re.groupindex else "") + REDACTED


class _RedactingFilter(logging.Filter):
    """A handler's filter: the record's message is rendered, redacted, and kept without its arguments."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = self.redact(message), None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    return [env[name] for name in SECRET_VARIABLES if env.get(name)]


def configure_logging(level_name: str = "INFO", secrets: Iterable[str] | None = None) -> None:
    """Log at `level_name` (JIT_LOG_LEVEL, read by Settings) and above, every line redacted."""
    level = getattr(logging, level_name.upper(), logging.INFO)
    redact = Redactor(secret_values() if secrets is None else secrets)
    logging.basicConfig(stream=sys.stderr, level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_RedactingFilter(redact))

    def redact_line(_: Any, __: str, line: Any) -> Any:
        return redact(line) if isinstance(line, str) else line

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(colors=False),
            redact_line,
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(level),
    )
