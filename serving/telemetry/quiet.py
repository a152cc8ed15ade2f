"""Serve logs every handle call at INFO, including the polls the platform makes of itself (the
router asks each generator for its status every second, the gateway asks the retriever what it
serves): on a console those lines bury what a user needs to read. They are kept at DEBUG."""

from __future__ import annotations

import logging

POLLS = ("CALL status ", "CALL describe ", "CALL models ", "CALL breakers ")


class QuietPolls(logging.Filter):
    """Lower Serve's access-log lines of the platform's own polls to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith(POLLS):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def quiet_polls() -> None:
    """Install the filter on Serve's replica logger, once per process."""
    logger = logging.getLogger("ray.serve")
    if not any(isinstance(f, QuietPolls) for f in logger.filters):
        logger.addFilter(QuietPolls())
