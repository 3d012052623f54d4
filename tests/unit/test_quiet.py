"""FiftyOne's MongoDB 6.0 notice is hidden wherever the package is imported; other database warnings stay."""

from __future__ import annotations

import logging

import pytest
from packaging.version import Version

import fiftyone_florence2  # noqa: F401  (importing it installs the filter)


@pytest.mark.parametrize(
    ("fcv", "server", "shown"),
    [
        ("6.0", "6.0", None),  # the mongod of the `mongodb` extra: the notice is dropped
        ("6.0", "7.0", None),
        ("8.0", "7.0", "feature compatibility is greater"),  # a real problem: still logged
        ("7.0", "7.0", None),  # nothing to say
    ],
)
def test_only_the_oldest_version_notice_is_dropped(fcv, server, shown, caplog):
    from fiftyone.core.odm.database import _is_fcv_upgradeable

    with caplog.at_level(logging.WARNING):
        _is_fcv_upgradeable(Version(fcv), Version(server))
    messages = [record.getMessage() for record in caplog.records]
    assert not any("oldest supported" in message for message in messages)
    assert [m for m in messages if shown and shown in m] or (shown is None and not messages)
