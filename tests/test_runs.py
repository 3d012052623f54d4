"""Provenance through FiftyOne's runs API, and field locks between runs."""

from __future__ import annotations

import datetime
import socket
import subprocess
import sys

import pytest
from conftest import force

from fiftyone_florence2 import __version__, load_model
from fiftyone_florence2.labeling import label_samples
from fiftyone_florence2.locks import FieldLockedError, FieldLocks, _collection, list_locks
from fiftyone_florence2.provenance import delete_run, list_runs, run_failures

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

    from fiftyone_florence2.model import Florence2Error

    bad = dataset.add_sample(fo.Sample(filepath=str(tmp_path / "missing.jpg")))
    model.config.skip_failures = False
    with pytest.raises(Florence2Error, match="file not found"):
        label_samples(dataset, model, "det", batch_size=8)
    (key,) = list_runs(dataset)
    assert dataset.get_run_info(key).config.status == "failed"
    assert "file not found" in run_failures(dataset, key)[bad]
