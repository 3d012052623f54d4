"""Shared fixtures (a tiny offline Florence-2, images, a dataset) and the session's database.

A session that collects integration tests gets a mongod of its own (see :func:`pytest_configure`); a
unit-lane session (``pytest tests/unit``) starts none. Helpers live in ``tests/helpers``, not here.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

if "FIFTYONE_DATABASE_DIR" not in os.environ:  # FiftyOne's own mongod's folder, used only without ours
    os.environ["FIFTYONE_DATABASE_DIR"] = tempfile.mkdtemp(prefix="florence2-tests-db-")
    atexit.register(shutil.rmtree, os.environ["FIFTYONE_DATABASE_DIR"], ignore_errors=True)
# Two OpenMP threads on two shared cores spin against each other on the tiny model.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")  # mongod 6.0's "oldest version" notice
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
from helpers import write_image
from helpers.lanes import NO_DATABASE, collects_integration


def pytest_configure(config: pytest.Config) -> None:
    """Points FiftyOne at a mongod of our own, started only when integration tests are collected.

    FiftyOne reads its configuration at import and attaches to a database service already running on the
    machine, whatever FIFTYONE_DATABASE_DIR says, so only a mongod of our own, named by URI, isolates a
    test run (and every process it starts) from any other. No conftest imports FiftyOne before this.
    """
    if "FIFTYONE_DATABASE_URI" in os.environ:
        return
    if not collects_integration(config.args, config.invocation_params.dir):
        os.environ["FIFTYONE_DATABASE_URI"] = NO_DATABASE
        return
    if _spreads_over_workers(config):
        return  # each pytest-xdist worker starts a mongod of its own: tests read database-wide state
    from support.mongod import NoMongod, start

    with contextlib.suppress(NoMongod):  # then FiftyOne's own mongod, in FIFTYONE_DATABASE_DIR
        os.environ["FIFTYONE_DATABASE_URI"] = start(tempfile.mkdtemp(prefix="florence2-tests-mongod-"), remove=True)


def _spreads_over_workers(config: pytest.Config) -> bool:
    """Whether this process hands the tests to pytest-xdist workers (``-n 2``) instead of running them."""
    workers = getattr(config.option, "numprocesses", None)
    return bool(workers) and "PYTEST_XDIST_WORKER" not in os.environ


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-weight Florence-2 saved as a native safetensors checkpoint."""
    from fiftyone_florence2.engine.random_checkpoint import build_random_checkpoint

    return build_random_checkpoint(tmp_path_factory.mktemp("tiny-florence2"), "tiny")


@pytest.fixture(scope="session")
def tokenizer(tiny_checkpoint):
    from transformers import Florence2Processor

    return Florence2Processor.from_pretrained(tiny_checkpoint).tokenizer


@pytest.fixture
def image_dir(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(5):
        write_image(folder / f"img_{i}.jpg", size=(80 + 8 * i, 60), seed=i)
    return folder


@pytest.fixture
def dataset(image_dir):
    import fiftyone as fo

    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=str(p)) for p in sorted(image_dir.iterdir())])
    yield ds
    ds.delete()
