"""Console logging for the CLI: plain messages, warnings and errors marked as such."""

from __future__ import annotations

import logging
import sys


class _ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


def setup_logger(verbose: bool = False) -> logging.Logger:
    """Route the ``geosam`` loggers to the current stderr; ``verbose`` adds debug messages.

    Calling it again replaces the handler, so a CLI invoked several times in one process (tests,
    notebooks) always writes to the stderr of the current invocation.
    """
    logger = logging.getLogger("geosam")
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    for old in list(logger.handlers):
        logger.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ConsoleFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    return logger
