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
    _quiet_ignite(verbose)
    return logger


# ignite announces every launch and data loader at INFO with handlers of its own, and logs an
# engine's exception before re-raising it; geosam reports both itself.
_IGNITE_CHATTER = (
    "ignite.distributed.launcher.Parallel",
    "ignite.distributed.auto.auto_dataloader",
    "ignite.distributed.auto.auto_model",
    "ignite.distributed.auto.auto_optim",
)


def _quiet_ignite(verbose: bool) -> None:
    for name in _IGNITE_CHATTER:
        logging.getLogger(name).disabled = not verbose
    ignite = logging.getLogger("ignite")
    if not verbose and not any(isinstance(h, logging.NullHandler) for h in ignite.handlers):
        ignite.addHandler(logging.NullHandler())
        ignite.propagate = False
