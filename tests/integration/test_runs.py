"""Provenance through FiftyOne's runs API, and field locks between runs."""

from __future__ import annotations

import datetime
import socket
import subprocess
import sys

import fiftyone as fo
import pytest
from helpers import force

from fiftyone_florence2 import __version__, load_model
from fiftyone_florence2.runs.labelling import label_samples
from fiftyone_florence2.runs.locks import FieldLockedError, FieldLocks, _collection, list_locks
from fiftyone_florence2.runs.model import Florence2ModelConfig
from fiftyone_florence2.runs.records import (
    delete_run,
    list_runs,
    mark_interrupted,
    new_run_key,
    record_progress,
    run_failures,
    start_run,
    start_stamp,
)
from fiftyone_florence2.runs.summary import Summary

ANSWER = "car<loc_100><loc_200><loc_500><loc_900>"


@pytest.fixture
def model(tiny_checkpoint, tokenizer):
    return load_model("detection", model=str(tiny_checkpoint), num_beams=2, generate_kwargs=force(tokenizer, ANSWER))


def test_each_run_is_recorded_with_its_settings_and_outcome(dataset, model, tmp_path):
    broken = tmp_path / "zero.jpg"
    broken.write_bytes(b"")
    bad = dataset.add_sample(__import__("fiftyone").Sample(filepath=str(broken)))
    summary = label_samples(dataset, model, "det", batch_size=4)
    assert list_runs(dataset) == [summary.run_key]
    config = dataset.get_run_info(summary.run_key).config
    assert config.method == "florence2" and config.status == "completed"
    assert config.tasks == ["detection"] and config.checkpoint == str(model.config.model)
    assert config.generation["num_beams"] == 2 and config.generation["dtype"] == "float32"
    assert config.generation["image_backend"] == "torchvision"  # a native checkpoint's default
    assert config.plugin_version == __version__ and config.label_field == "det"
    assert datetime.datetime.fromisoformat(config.started_at)
    results = dataset.load_run_results(summary.run_key)
    assert (results.labelled, results.failed, results.targeted) == (5, 1, 6)
    assert list(run_failures(dataset, summary.run_key)) == [bad]
    assert "empty file" in run_failures(dataset, summary.run_key)[bad]
    delete_run(dataset, summary.run_key)
    assert list_runs(dataset) == []
    assert dataset.count("det") == 5  # deleting the record keeps the labels


def test_a_live_run_holds_the_field(dataset, model):
    other = FieldLocks(str(dataset._doc.id), ["det"], "someone_elses_run")
    other.acquire()
    try:
        with pytest.raises(FieldLockedError, match="someone_elses_run"):
            label_samples(dataset, model, "det")
        assert not dataset.has_field("det")
        label_samples(dataset, model, "other_field")  # other fields are free
    finally:
        other.release()
    assert [lock["_id"] for lock in list_locks(dataset)] == []
    label_samples(dataset, model, "det")
    assert dataset.count("det") == 5


def test_a_killed_runs_lock_is_taken_over(dataset, model):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    _collection().insert_one(
        {
            "_id": f"{dataset._doc.id}:det",
            "run_key": "killed_run",
            "since": now,
            "holders": {"x": {"host": socket.gethostname(), "pid": dead.pid, "heartbeat": now}},
        }
    )
    summary = label_samples(dataset, model, "det")
    assert summary.labelled == 5 and list_locks(dataset) == []


def test_a_silent_remote_holder_goes_stale(dataset, model):
    long_ago = datetime.datetime(2020, 1, 1)
    _collection().insert_one(
        {
            "_id": f"{dataset._doc.id}:det",
            "run_key": "remote_run",
            "since": long_ago,
            "holders": {"x": {"host": "another-machine", "pid": 1, "heartbeat": long_ago}},
        }
    )
    assert label_samples(dataset, model, "det").labelled == 5


def test_shards_of_one_run_share_its_lock(dataset, model):
    first = FieldLocks(str(dataset._doc.id), ["det"], "one_run")
    first.acquire()
    try:
        summaries = [label_samples(dataset, model, "det", shard=(i, 2), run_key="one_run") for i in range(2)]
    finally:
        first.release()
    assert sum(s.labelled for s in summaries) == 5
    assert sorted(list_runs(dataset)) == ["one_run_shard0of2", "one_run_shard1of2"]


def test_a_failing_run_is_recorded_and_unlocks(dataset, tiny_checkpoint):
    def explode(task, questions):
        raise KeyboardInterrupt

    model = load_model("caption", model=str(tiny_checkpoint), generate_kwargs=explode, skip_failures=False)
    with pytest.raises(KeyboardInterrupt):
        label_samples(dataset, model, "cap")
    (key,) = list_runs(dataset)
    assert dataset.get_run_info(key).config.status == "interrupted"
    assert list_locks(dataset) == []


def test_a_rerun_under_the_same_key_keeps_the_first_record(dataset, model):
    first = label_samples(dataset.limit(2), model, "det", run_key="queued_run")
    second = label_samples(dataset, model, "det", run_key="queued_run", skip_existing=True)
    assert (first.run_key, second.run_key) == ("queued_run", "queued_run_attempt2")
    assert list_runs(dataset) == ["queued_run", "queued_run_attempt2"]
    assert dataset.load_run_results("queued_run").labelled == 2
    assert dataset.load_run_results("queued_run_attempt2").labelled == 3


def test_the_record_of_a_killed_run_is_closed_by_the_run_that_takes_its_lock_over(dataset, model):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = FieldLocks(str(dataset._doc.id), ["det"], "killed_run")
    killed.acquire()
    killed._stop.set()  # the process "dies": no more heartbeats, and its pid is gone
    label_samples(dataset.limit(2), model, "det", run_key="killed_run", record=True)
    _collection().update_one(
        {"_id": f"{dataset._doc.id}:det"},
        {"$set": {f"holders.{killed.holder}.pid": dead.pid, f"holders.{killed.holder}.record": "killed_run"}},
    )
    info = dataset.get_run_info("killed_run")
    info.config.status = "running"  # as a SIGKILL leaves it
    dataset.update_run_config("killed_run", info.config)
    summary = label_samples(dataset, model, "det", skip_existing=True)
    assert summary.labelled == 3
    assert dataset.get_run_info("killed_run").config.status == "interrupted"


def test_fail_fast_keeps_the_reason_that_stopped_the_run(dataset, model, tmp_path):
    import fiftyone as fo

    from fiftyone_florence2 import Florence2Error

    bad = dataset.add_sample(fo.Sample(filepath=str(tmp_path / "missing.jpg")))
    model.config.skip_failures = False
    with pytest.raises(Florence2Error, match="file not found"):
        label_samples(dataset, model, "det", batch_size=8)
    (key,) = list_runs(dataset)
    assert dataset.get_run_info(key).config.status == "failed"
    assert "file not found" in run_failures(dataset, key)[bad]


# ---------------------------------------------------------------- order of runs, counts of running runs


@pytest.fixture
def config(tiny_checkpoint):
    return Florence2ModelConfig({"task": "caption", "model": str(tiny_checkpoint)})


def _set_started_at(dataset, key: str, started_at: str | None) -> None:
    """Rewrites a record's start as an older version of the plugin (or another tool) left it."""
    info = dataset.get_run_info(key)
    info.config.started_at = started_at
    dataset.update_run_config(key, info.config)


OLD = "2020-01-01T00:00:05+00:00"  # an older record's start, to the second
GENERATED = [new_run_key("det") for _ in range(8)]  # within one second: their order is their random part's

# Each row: keys in the order their runs start, rewrites of their records' starts, the order expected.
START_ORDERS = [
    ("keys against the alphabet", ["zeta", "alpha", "mid", "beta"], {}, ["zeta", "alpha", "mid", "beta"]),
    ("generated keys, one second", GENERATED, {}, GENERATED),
    ("attempt suffixes", ["run_b", "run_a", "run_a_attempt2"], {}, ["run_b", "run_a", "run_a_attempt2"]),
    ("older records, one second", ["old_z", "old_a", "new"], {"old_z": OLD, "old_a": OLD}, ["old_z", "old_a", "new"]),
    ("an older record after newer ones", ["c_new", "b_old", "a_new"], {"b_old": OLD}, ["b_old", "c_new", "a_new"]),
    ("a record without a start", ["b", "a", "c"], {"a": None}, ["b", "a", "c"]),
]


@pytest.mark.parametrize(
    ("keys", "rewrites", "expected"), [row[1:] for row in START_ORDERS], ids=[row[0] for row in START_ORDERS]
)
def test_runs_are_listed_oldest_first_by_their_start(dataset, config, keys, rewrites, expected):
    # Regression: list_runs returned FiftyOne's order, by key, so runs started within one
    # second came out in the order of their keys' random part, and [-1] was not the latest.
    for key in keys:
        assert start_run(dataset, key, config, None) == key
    for key, started_at in rewrites.items():
        _set_started_at(dataset, key, started_at)
    assert list_runs(dataset) == expected


def test_start_stamps_keep_microseconds_and_never_repeat():
    stamps = [start_stamp() for _ in range(2000)]
    parsed = [datetime.datetime.fromisoformat(s) for s in stamps]
    assert sorted(set(parsed)) == parsed  # strictly increasing
    assert all(stamp.endswith("+00:00") and len(stamp.split(".")[-1]) == len("123456+00:00") for stamp in stamps)


PROGRESS = [
    ("first batch", dict(targeted=10, labelled=4, skipped=2, seconds=1.23456), {"id1": "empty file"}),
    ("nothing done yet", dict(targeted=5, labelled=0, skipped=0, seconds=0.0), {}),
    ("many failures", dict(targeted=900, labelled=100, skipped=0, seconds=12.0), {f"id{i}": "bad" for i in range(500)}),
]


@pytest.mark.parametrize(("counts", "failures"), [row[1:] for row in PROGRESS], ids=[r[0] for r in PROGRESS])
def test_a_running_runs_counts_are_stored_and_kept_when_it_is_marked_interrupted(dataset, config, counts, failures):
    # Regression: counts were stored only by finish_run, so a SIGKILLed run's record had none.
    key = start_run(dataset, "live_run", config, None)
    stale = Summary({"caption": "cap"}, run_key=key, targeted=99, labelled=1)
    record_progress(dataset, key, stale)
    summary = Summary({"caption": "cap"}, run_key=key, failures=failures, **counts)
    record_progress(dataset, key, summary)  # the last batch's counts replace the earlier ones
    expected = {**counts, "seconds": round(counts["seconds"], 3), "failed": len(failures), "failures": failures}

    def stored(collection):
        results = collection.load_run_results(key, cache=False)
        return {name: getattr(results, name) for name in expected}, results.status

    assert stored(dataset) == (expected, "running")
    assert dataset.get_run_info(key).config.status == "running"

    # The process is killed; the run that takes its lock over closes the record as labelling does.
    mark_interrupted(fo.load_dataset(dataset.name), key)
    assert dataset.get_run_info(key).config.status == "interrupted"
    assert stored(dataset) == (expected, "interrupted")
    assert run_failures(dataset, key) == failures
