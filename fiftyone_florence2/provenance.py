"""Each run recorded on the dataset through FiftyOne's runs API: what ran, on what, with what outcome."""

from __future__ import annotations

import datetime
import secrets
from typing import Any

from . import __version__
from .config import Florence2ModelConfig

METHOD = "florence2"


def new_run_key(label_field: str) -> str:
    """A fresh, sortable run key such as ``florence2_20261125_143012_a1b2_detections``."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d_%H%M%S")
    return f"{METHOD}_{stamp}_{secrets.token_hex(2)}_{label_field}"


def run_settings(config: Florence2ModelConfig, runner: Any) -> dict[str, Any]:
    """The settings that decide a run's labels, as JSON: every model option, and what the runner chose."""
    settings = config.settings()
    settings["revision"] = getattr(runner, "revision", None) or config.revision
    generation = settings["generation"]
    generation["device"] = str(getattr(runner, "device", config.device))
    generation["dtype"] = str(getattr(runner, "dtype", config.dtype)).replace("torch.", "")
    return settings


def start_run(samples: Any, run_key: str, config: Florence2ModelConfig, runner: Any, **details: Any) -> str:
    """Registers a running run on ``samples`` (its view is kept) and returns its key.

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
        method=METHOD,
        plugin_version=__version__,
        status="running",
        started_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **run_settings(config, runner),
        **details,
    )
    samples.register_run(run_key, record, overwrite=False)
    return run_key


def finish_run(samples: Any, run_key: str, status: str, summary: Any) -> None:
    """Stores a run's outcome: counts, the reason each failed sample failed, and its status."""
    results = samples.init_run_results(
        run_key,
        status=status,
        finished_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        targeted=summary.targeted,
        labelled=summary.labelled,
        skipped=summary.skipped,
        failed=len(summary.failures),
        seconds=round(summary.seconds, 3),
        failures=dict(summary.failures),
    )
    samples.save_run_results(run_key, results, overwrite=True)
    info = samples.get_run_info(run_key)
    info.config.status = status
    samples.update_run_config(run_key, info.config)


def mark_interrupted(dataset: Any, run_key: str) -> None:
    """Marks a run still recorded as running, whose process is gone, as interrupted."""
    dataset.reload()
    if run_key not in dataset.list_runs():
        return
    info = dataset.get_run_info(run_key)
    if getattr(info.config, "status", None) == "running":
        info.config.status = "interrupted"
        dataset.update_run_config(run_key, info.config)


def list_runs(dataset: Any) -> list[str]:
    """The keys of this project's runs on ``dataset``, oldest first."""
    dataset.reload()
    return dataset.list_runs(method=METHOD)


def run_failures(dataset: Any, run_key: str) -> dict[str, str]:
    """Why each sample of a run could not be labelled: ``{sample_id: reason}``."""
    results = dataset.load_run_results(run_key, cache=False)
    return dict(getattr(results, "failures", None) or {}) if results is not None else {}


def delete_run(dataset: Any, run_key: str) -> None:
    """Deletes a run's record (its labels stay)."""
    dataset.delete_run(run_key)
