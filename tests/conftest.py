"""Shared fixtures: an isolated FiftyOne database, a tiny offline Florence-2, forced answers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _private_mongod() -> str | None:
    """Starts a mongod of our own and returns its URI (None where FiftyOne ships no mongod binary).

    FiftyOne attaches to a database service already running on the machine,
    whatever FIFTYONE_DATABASE_DIR says, so only a mongod of our own, named by
    URI, isolates a test run (and every process it starts) from any other.
    """
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for benchmarks/
    from benchmarks.mongod import NoMongod, start

    try:
        return start(tempfile.mkdtemp(prefix="florence2-tests-mongod-"), remove=True)
    except NoMongod:
        return None


# FiftyOne reads its configuration at import: isolate the database first.
if "FIFTYONE_DATABASE_URI" not in os.environ:
    _URI = _private_mongod()
    if _URI:
        os.environ["FIFTYONE_DATABASE_URI"] = _URI
os.environ.setdefault("FIFTYONE_DATABASE_DIR", tempfile.mkdtemp(prefix="florence2-tests-db-"))
# Two OpenMP threads on two shared cores spin against each other on the tiny model.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")  # mongod 6.0's "oldest version" notice
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread_per_test_process():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-weight Florence-2 saved as a native safetensors checkpoint."""
    from fiftyone_florence2.engine.random_checkpoint import build_random_checkpoint

    return build_random_checkpoint(tmp_path_factory.mktemp("tiny-florence2"), "tiny")


@pytest.fixture(scope="session")
def tokenizer(tiny_checkpoint):
    from transformers import Florence2Processor

    return Florence2Processor.from_pretrained(tiny_checkpoint).tokenizer


def force(tokenizer, answer: str | Callable[[str, str], str]):
    """``generate_kwargs`` that make the decoder emit ``answer`` (plus ``</s>``).

    ``answer`` may be a function of ``(task name, question)``, so that each
    row of a batch gets its own answer.
    """

    def kwargs(task, questions):
        targets = []
        for question in questions:
            text = answer(task.name, question) if callable(answer) else answer
            targets.append(tokenizer(text + "</s>", add_special_tokens=False).input_ids)

        def allowed(row, prefix):
            target = targets[row]
            n = prefix.shape[-1] - 1
            return [target[n]] if n < len(target) else [tokenizer.pad_token_id]

        return {"prefix_allowed_tokens_fn": allowed, "max_new_tokens": max(map(len, targets)) + 2}

    return kwargs


def write_image(path: Path, size=(96, 64), mode="RGB", seed=0) -> str:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(array).convert(mode).save(path)
    return str(path)


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
