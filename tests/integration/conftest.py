"""Fixtures of the integration tests: the App operators, loaded from this clone as FiftyOne's plugins.

FiftyOne is imported inside the fixtures, never here: this file may load before the root conftest has
pointed FiftyOne at the session's database (``pytest tests/integration/...``).
"""

from __future__ import annotations

import sys

import pytest
from helpers import ROOT


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread_per_test_process():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def operator():
    import fiftyone as fo
    import fiftyone.operators as foo
    from helpers.operators import URI

    previous = fo.config.plugins_dir
    fo.config.plugins_dir = str(ROOT)
    try:
        yield foo.get_operator(URI)
    finally:
        fo.config.plugins_dir = previous


@pytest.fixture
def plugin_module(operator):
    """The plugin's ``operators`` package, as FiftyOne imported it."""
    return sys.modules[type(operator).__module__.rsplit(".", 1)[0]]


@pytest.fixture
def boxes(dataset):
    """The dataset with a Detections field ``gt`` and a Classification field ``cls``."""
    import fiftyone.core.labels as fol

    box = fol.Detection(label="thing", bounding_box=[0.1, 0.2, 0.5, 0.4])
    dataset.set_values("gt", [fol.Detections(detections=[box.copy()]) for _ in range(len(dataset))])
    dataset.set_values("cls", [fol.Classification(label="cat") for _ in range(len(dataset))])
    return dataset


@pytest.fixture
def runner_loads(plugin_module, monkeypatch) -> list[str]:
    """The checkpoints the operators load from now on; none is loaded yet."""
    runners = plugin_module.runners
    runners.clear()
    loads = []
    real = runners.load_runner
    monkeypatch.setattr(runners, "load_runner", lambda config: loads.append(config.model) or real(config))
    return loads
