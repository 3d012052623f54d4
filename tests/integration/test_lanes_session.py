"""The unit lane, run as a contributor runs it (``pytest tests/unit``), starts no mongod and reaches none."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import ROOT


def test_the_unit_lane_alone_starts_no_mongod():
    env = {k: v for k, v in os.environ.items() if k != "FIFTYONE_DATABASE_URI"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/test_lanes.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
