"""A training run recorded on the dataset through FiftyOne's runs API, as labelling runs are: the data,
view, label fields, hyperparameters, metrics per evaluation, and the checkpoint path."""

from __future__ import annotations

import os
from typing import Any

from fiftyone_florence2.runs.records import TRAIN_METHOD, mark_interrupted, now_iso, register_running, save_results
from fiftyone_florence2.training.options import TrainOptions
from fiftyone_florence2.training.output import writer_alive

METHOD = TRAIN_METHOD
# Options that are not settings of the run (where it goes, how it was started).
_NOT_SETTINGS = ("val_view", "overwrite", "resume")


def training_settings(options: TrainOptions) -> dict[str, Any]:
    """The checked options as JSON, the validation view by its stages."""
    settings = {name: value for name, value in options.as_dict().items() if name not in _NOT_SETTINGS}
    settings["val_view"] = None if options.val_view is None else options.val_view._serialize()
    settings["model"] = str(settings["model"])
    return settings


def start_training_run(
    samples: Any,
    run_key: str,
    options: TrainOptions,
    split: Any,
    resumed_from: Any = None,
    changes=None,
    runner: Any = None,
) -> str:
    """Registers a running training run on ``samples`` (its view is kept) and returns its key (``run_key``,
    or a variant of it when taken). A resume records the checkpoint it went on from and the schedule options
    it changed, ``{option: [before, now]}``. ``runner`` holds the starting weights: their fingerprint is
    recorded (``weights_sha256``, None for a Hub id), and the Hub commit they came from as the ``revision``."""
    settings = training_settings(options)
    settings["revision"] = getattr(runner, "revision", None) or settings.get("revision")
    return register_running(
        samples,
        run_key,
        METHOD,
        weights_sha256=getattr(runner, "weights_sha256", None),
        train_samples=len(split.train_ids),
        val_samples=len(split.val_ids),
        train_examples=len(split.train),
        skipped=len(split.skips),
        resumed_from=None if resumed_from is None else str(resumed_from),
        resume_changes=changes or {},
        **settings,
    )


def record_training_progress(samples: Any, run_key: str, entry: dict[str, Any]) -> None:
    """Stores the latest logged step of a running training run (its status stays ``running``)."""
    results = samples.init_run_results(run_key, status="running", updated_at=now_iso(), last=entry)
    save_results(samples, run_key, results)


def finish_training_run(samples: Any, run_key: str, status: str, summary: dict[str, Any]) -> None:
    """Stores a training run's outcome: its history of losses and metrics, skips and checkpoint."""
    results = samples.init_run_results(run_key, status=status, finished_at=now_iso(), **_jsonable(summary))
    save_results(samples, run_key, results)
    info = samples.get_run_info(run_key)
    info.config.status = status
    info.config.checkpoint_sha256 = summary.get("checkpoint_sha256")  # listed without reading the results
    samples.update_run_config(run_key, info.config)


def _jsonable(summary: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in summary.items() if not key.startswith("_")}


def list_training_runs(dataset: Any) -> list[str]:
    """The keys of the training runs on ``dataset``, oldest first."""
    return [key for key, _ in _training_configs(dataset)]


def _training_configs(dataset: Any) -> list[tuple[str, Any]]:
    """``(key, config)`` of each training run on ``dataset``, oldest first: one read of each run's config. A
    run recorded as running whose process no longer holds its output directory is marked interrupted."""
    dataset.reload()
    configs = [(key, dataset.get_run_info(key).config) for key in dataset.list_runs(method=METHOD)]
    for key, config in configs:
        if config.status == "running" and not writer_alive(config.output_dir, key):
            mark_interrupted(dataset, key)  # its process is gone (killed, or its machine lost)
            config.status = "interrupted"
    return sorted(configs, key=lambda pair: pair[1].started_at)


def finished_checkpoints(dataset: Any) -> dict[str, str]:
    """``{checkpoint directory: what it is}`` for the completed training runs on ``dataset`` whose checkpoint
    is still on disk, newest first: what the labelling form offers as checkpoints.

    It reads the runs' configs only (not their results), so that a form can call it as it is filled in.
    """
    found = {}
    for key, config in reversed(_training_configs(dataset)):
        output_dir = getattr(config, "output_dir", None)
        if config.status != "completed" or not output_dir or output_dir in found or not os.path.isdir(output_dir):
            continue
        fields = getattr(config, "label_field", None) or {}
        learnt = ", ".join(f"{task} from {field}" for task, field in fields.items())
        found[output_dir] = f"fine-tuned: {learnt}, {config.train_samples} samples ({key})"
    return found
