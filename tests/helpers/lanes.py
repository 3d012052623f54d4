"""The two test lanes: ``tests/unit`` (no database) and ``tests/integration`` (a private mongod).

A session gets a mongod of its own only when it collects integration tests; otherwise FiftyOne is pointed
at :data:`NO_DATABASE`, so that a unit test that touches the database fails at once instead of finding one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
# Nothing listens on port 1: pymongo gives up after half a second.
NO_DATABASE = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500&connectTimeoutMS=500"


def collects_integration(args: Sequence[str], invocation_dir: Path, integration: Path = INTEGRATION) -> bool:
    """Whether pytest's positional ``args`` (paths relative to ``invocation_dir``, maybe with ``::test``
    suffixes) reach into ``integration``; an argument that names no path (``--pyargs``) counts as reaching."""
    for arg in args or ["."]:
        path = (Path(invocation_dir) / arg.split("::", 1)[0]).resolve()
        if not path.exists() or path.is_relative_to(integration) or integration.is_relative_to(path):
            return True
    return False
