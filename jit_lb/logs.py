"""Operational logs (not the audit log): structlog key-value lines on stderr."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level_name: str = "INFO") -> None:
    """Log at `level_name` (JIT_LOG_LEVEL, read by Settings) and above."""
    level = getattr(logging, level_name.upper(), logging.INFO)
    logging.basicConfig(stream=sys.stderr, level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(level),
    )
