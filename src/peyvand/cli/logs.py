"""Logging set-up shared by the commands."""

from __future__ import annotations

import logging

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str) -> None:
    """Log to stderr at ``level`` (a name such as ``INFO``), replacing earlier handlers."""
    logging.basicConfig(level=level, format=_FORMAT, force=True)
    # aiohttp's access log at INFO is one line per request: too chatty below DEBUG.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
