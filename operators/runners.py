"""Loaded Florence-2 weights, kept across executions in one process (the App server or a worker).

Loading takes seconds to minutes, and an App user runs the operator again and
again; a delegated worker runs one queued operation after another. Runners
are keyed by what decides the weights in memory, and the least recently
used one is dropped when more than :data:`MAX_RUNNERS` are loaded, so that a
GPU does not fill up with checkpoints. A local checkpoint's key includes its
files' stat (:func:`~fiftyone_florence2.core.checkpoints.weights_stat`): once a
fine-tune rewrites the directory, the next run loads the new weights and the
stale runner is dropped.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fiftyone_florence2.core.checkpoints import WeightsStat, weights_stat
from fiftyone_florence2.runs.model import Florence2ModelConfig, load_runner

MAX_RUNNERS = 2

Key = tuple[str, str | None, str | None, str | None, str, WeightsStat | None]

_lock = threading.Lock()
_runners: OrderedDict[Key, tuple[Any, threading.Lock]] = OrderedDict()


def runner_key(config: Florence2ModelConfig) -> Key:
    """What decides the loaded weights: checkpoint, revision, device, dtype, attention kernel, and the
    stat of a local checkpoint's files (None for a Hub id)."""
    base = (config.model, config.revision, config.device, config.dtype, config.attn_implementation)
    return (*base, weights_stat(config.model))


@contextmanager
def use_runner(config: Florence2ModelConfig) -> Iterator[Any]:
    """The runner for ``config``, loaded on first use and again once its files change; one run at a time
    uses it."""
    key = runner_key(config)
    with _lock:
        for stale in [other for other in _runners if other[:-1] == key[:-1] and other != key]:
            del _runners[stale]  # the files changed since it loaded; a run still using it keeps it
        entry = _runners.get(key)
        if entry is None:
            # Loaded under the lock: two first runs must not load the same weights twice.
            runner = load_runner(config)
            # Keyed by the stat the runner checked while loading, which is what its weights came from.
            key = (*key[:-1], getattr(runner, "weights_stat", key[-1]))
            entry = _runners[key] = (runner, threading.Lock())
            while len(_runners) > MAX_RUNNERS:
                _runners.popitem(last=False)
        _runners.move_to_end(key)
    runner, in_use = entry
    with in_use:
        yield runner


def loaded_keys() -> list[Key]:
    """The keys of the runners in memory, least recently used first."""
    with _lock:
        return list(_runners)


def clear() -> None:
    """Drops every loaded runner (their memory is freed once no run uses them)."""
    with _lock:
        _runners.clear()
