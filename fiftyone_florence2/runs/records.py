"""Each run recorded on the dataset through FiftyOne's runs API: what ran, on what, with what outcome."""

from __future__ import annotations

import datetime
import logging
import secrets
import threading
from typing import Any

from fiftyone_florence2.core.version import __version__
from fiftyone_florence2.runs.config import Florence2ModelConfig

logger = logging.getLogger(__name__)

METHOD = "florence2"
TRAIN_METHOD = "florence2_train"  # training runs (train_record.py)
CALIBRATE_METHOD = "florence2_calibrate"  # calibrations (autolabel/calibrate.py)
REVIEW_METHOD = "florence2_review"  # review queues (autolabel/queue.py)
_METHODS = (METHOD, TRAIN_METHOD, CALIBRATE_METHOD, REVIEW_METHOD)
_UTC = datetime.timezone.utc
_last_start = datetime.datetime.min.replace(tzinfo=_UTC)
_start_lock = threading.Lock()


def new_run_key(label_field: str | None = None, method: str = METHOD) -> str:
    """A fresh run key such as ``florence2_20261125_143012_a1b2_detections`` (no last part without a
    label field).

    Keys of runs started within one second do not sort by start; :func:`list_runs` does.
    """
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d_%H%M%S")
    return f"{method}_{stamp}_{secrets.token_hex(2)}" + (f"_{label_field}" if label_field else "")


def now_iso() -> str:
    """The current UTC time, to the second, as ISO 8601."""
    return datetime.datetime.now(_UTC).isoformat(timespec="seconds")


def start_stamp() -> str:
    """A run's start time, to the microsecond, as ISO 8601; strictly increasing within a process.

    The clock can repeat a reading (coarse clocks, quick successive calls);
    then the last stamp plus one microsecond is used, so runs one process
    starts keep their order.
    """
    global _last_start
    with _start_lock:
        now = max(datetime.datetime.now(_UTC), _last_start + datetime.timedelta(microseconds=1))
        _last_start = now
    return now.isoformat(timespec="microseconds")


def run_settings(config: Florence2ModelConfig, runner: Any) -> dict[str, Any]:
    """The settings that decide a run's labels, as JSON: every model option, and what the runner chose."""
    settings = config.settings()
    settings["revision"] = getattr(runner, "revision", None) or config.revision
    # Tells two versions of one checkpoint directory apart (None for a Hub id: its revision does).
    settings["weights_sha256"] = getattr(runner, "weights_sha256", None)
    # An original-format checkpoint loads converted: the fingerprint is the conversion's, and this its source.
    settings["converted_from"] = getattr(runner, "converted_from", None)
    generation = settings["generation"]
    generation["device"] = str(getattr(runner, "device", config.device))
    generation["dtype"] = str(getattr(runner, "dtype", config.dtype)).replace("torch.", "")
    # The image processor's backend: its resize decides the pixels, and so can change answers.
    generation["image_backend"] = getattr(runner, "image_backend", None)
    # Confidences: a coordinate token counts the probability of its bin and of this many bins either side.
    generation["coordinate_window"] = getattr(runner, "coordinate_window", None)
    return settings


def short_weights(config: Any) -> str:
    """The weights a run started from, as listings show them: the first 12 hex digits of the local
    checkpoint's fingerprint, or of its Hub revision."""
    sha256 = getattr(config, "weights_sha256", None)
    if sha256:
        return f"weights {sha256[:12]}"
    revision = getattr(config, "revision", None)
    return f"revision {revision[:12]}" if revision else "weights unrecorded"


def start_run(samples: Any, run_key: str, config: Florence2ModelConfig, runner: Any, **details: Any) -> str:
    """Registers a running labelling run on ``samples`` (its view is kept) and returns its key."""
    return register_running(samples, run_key, METHOD, **run_settings(config, runner), **details)


def register_running(samples: Any, run_key: str, method: str, **details: Any) -> str:
    """Registers a running run of ``method`` on ``samples`` (its view is kept) and returns its key.

    A key already taken (a rerun of a delegated operation, say) gets an
    ``_attemptN`` suffix, so that no earlier record is replaced.
    """
    dataset = samples._root_dataset
    dataset.reload()  # runs other processes registered since this dataset was loaded
    taken = set(dataset.list_runs())
    base, attempt = run_key, 1
    while run_key in taken:
        attempt += 1
        run_key = f"{base}_attempt{attempt}"
    record = samples.init_run(
        method=method, plugin_version=__version__, status="running", started_at=start_stamp(), **details
    )
    samples.register_run(run_key, record, overwrite=False)
    return run_key


def _counts(summary: Any) -> dict[str, Any]:
    """A summary's counts and failure reasons, as JSON (what the record's results hold)."""
    counts = summary.as_dict()
    for key in ("label_fields", "run_key", "embeddings_field"):  # the run's config holds these
        counts.pop(key)
    return counts


def save_results(samples: Any, run_key: str, results: Any) -> None:
    """Stores a run's results in an order a kill cannot break: the new results are written, then the record
    points to them, then the old ones are deleted. (FiftyOne's ``save_run_results`` deletes the old results
    first, so a process killed between the two left a record whose results could no longer be read.)"""
    import fiftyone.core.runs as fors
    from bson import json_util

    run_doc = fors.Run._get_run_doc(samples, run_key)
    proxy = run_doc.results
    old = proxy.grid_id
    proxy.grid_id = proxy.gridout = None  # put() writes a new file instead of refusing to replace the old one
    proxy.put(json_util.dumps(results.serialize()).encode(), content_type="application/json")
    run_doc.results_meta = dict(results.get_meta() or {})
    run_doc.save()
    if old is not None:
        proxy.fs.delete(old)
    getattr(samples._root_dataset, fors.Run._results_cache_field())[run_key] = results


def record_progress(samples: Any, run_key: str, summary: Any) -> None:
    """Stores a running run's counts so far (its status stays ``running``); call it once per batch.

    A run killed later keeps the counts of its last recorded batch.
    """
    results = samples.init_run_results(run_key, status="running", updated_at=now_iso(), **_counts(summary))
    save_results(samples, run_key, results)


def finish_run(samples: Any, run_key: str, status: str, summary: Any) -> None:
    """Stores a run's outcome: counts, the reason each failed sample failed, and its status."""
    results = samples.init_run_results(run_key, status=status, finished_at=now_iso(), **_counts(summary))
    save_results(samples, run_key, results)
    info = samples.get_run_info(run_key)
    info.config.status = status
    samples.update_run_config(run_key, info.config)


def mark_interrupted(dataset: Any, run_key: str) -> None:
    """Marks a run still recorded as running, whose process is gone, as interrupted.

    The counts its last :func:`record_progress` stored are kept.
    """
    dataset.reload()
    if run_key not in dataset.list_runs():
        return
    info = dataset.get_run_info(run_key)
    if getattr(info.config, "status", None) != "running":
        return
    info.config.status = "interrupted"
    dataset.update_run_config(run_key, info.config)
    results = load_results(dataset, run_key)
    if results is not None and getattr(results, "status", None) == "running":
        results.status = "interrupted"
        save_results(dataset, run_key, results)


def _registered(info: Any) -> datetime.datetime:
    """When FiftyOne registered a run (UTC, to the millisecond)."""
    stamp = info.timestamp or datetime.datetime.min
    return stamp.replace(tzinfo=stamp.tzinfo or _UTC)


def _started(info: Any) -> datetime.datetime:
    """When a run started: its ``started_at`` (older records have it to the second), else its registration."""
    try:
        started = datetime.datetime.fromisoformat(info.config.started_at)
    except (AttributeError, TypeError, ValueError):
        return _registered(info)
    return started.replace(tzinfo=started.tzinfo or _UTC)


def list_runs(dataset: Any, method: str = METHOD) -> list[str]:
    """The keys of this project's labelling runs (or runs of ``method``) on ``dataset``, oldest first (by
    start, so ``[-1]`` is the latest).

    Ties (records that kept their start only to the second) go by when
    FiftyOne registered them, then by key.
    """
    dataset.reload()
    infos = [dataset.get_run_info(key) for key in dataset.list_runs(method=method)]
    infos.sort(key=lambda info: (_started(info), _registered(info), info.key))
    return [info.key for info in infos]


def check_run_key(dataset: Any, run_key: str) -> str:
    """Returns the method of this project's run ``run_key`` (labelling, training, calibration or review queue);
    raises ``ValueError`` naming the runs there are for any other key."""
    dataset.reload()
    for method in _METHODS:
        if run_key in dataset.list_runs(method=method):
            return method
    keys = [key for method in _METHODS for key in list_runs(dataset, method)]
    raise ValueError(f"No Florence-2 run {run_key!r} on {dataset.name!r}; runs: {', '.join(keys) or 'none'}.")


def load_results(dataset: Any, run_key: str) -> Any:
    """A run's stored results, or None; its view is never rebuilt (it may use a field since deleted, or
    sample a video's frames again with ffmpeg)."""
    try:
        return dataset.load_run_results(run_key, cache=False, load_view=False)
    except (AttributeError, OSError, ValueError) as error:  # results a kill cut short (older records)
        logger.warning("The results of run %s cannot be read (%s); its record is kept.", run_key, error)
        return None


def run_failures(dataset: Any, run_key: str) -> dict[str, str]:
    """Why each sample of a run was not used: ``{sample_id: reason}``.

    For a labelling run, the samples that failed; for a training run, the
    samples it left out. Any other key raises ``ValueError``.
    """
    method = check_run_key(dataset, run_key)
    results = load_results(dataset, run_key)
    reasons = getattr(results, "failures" if method == METHOD else "skips", None)
    return dict(reasons or {})


def delete_run(dataset: Any, run_key: str) -> None:
    """Deletes the record of a labelling or training run (its labels or checkpoint stay); refuses any
    other run's key with ``ValueError``."""
    check_run_key(dataset, run_key)
    dataset.delete_run(run_key)
