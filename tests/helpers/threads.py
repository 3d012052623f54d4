"""One torch thread for the tiny model: on two cores shared with other jobs, two OpenMP threads
spin against each other and make each tiny forward pass about ten times slower."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
