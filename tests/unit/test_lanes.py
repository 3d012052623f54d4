"""The unit lane starts no database: which sessions get a mongod, and this session's own state."""

from __future__ import annotations

import os

import psutil
import pytest
from helpers import ROOT
from helpers.lanes import NO_DATABASE, collects_integration

TESTS = ROOT / "tests"


@pytest.mark.parametrize(
    ("args", "cwd", "expected"),
    [
        (["tests/unit"], ROOT, False),
        (["tests/unit/test_shape.py::test_no_import_cycles_counting_imports_inside_functions"], ROOT, False),
        (["tests/unit/test_tiles.py", "tests/unit/test_shape.py"], ROOT, False),
        (["unit"], TESTS, False),
        (["tests/helpers"], ROOT, False),
        (["tests"], ROOT, True),  # testpaths, as pytest passes them when none are given
        (["."], ROOT, True),
        ([], ROOT, True),
        (["tests/integration"], ROOT, True),
        (["tests/integration/test_cli.py::test_x[a::b]"], ROOT, True),
        (["tests/unit", "tests/integration/test_cli.py"], ROOT, True),
        (["../integration"], TESTS / "unit", True),
        (["fiftyone_florence2.tests"], ROOT, True),  # --pyargs: not a path, so it may reach anything
    ],
)
def test_a_session_gets_a_database_only_when_it_collects_integration_tests(args, cwd, expected):
    assert collects_integration(args, cwd) is expected


def test_this_session_has_a_database_exactly_when_it_collects_integration_tests(pytestconfig):
    mongods = [p for p in psutil.Process().children(recursive=True) if p.name().startswith("mongod")]
    if collects_integration(pytestconfig.args, pytestconfig.invocation_params.dir):
        assert os.environ["FIFTYONE_DATABASE_URI"] != NO_DATABASE
        return
    assert mongods == []
    assert os.environ["FIFTYONE_DATABASE_URI"] == NO_DATABASE
    import fiftyone as fo

    with pytest.raises(ConnectionError, match="Could not connect"):
        fo.list_datasets()
