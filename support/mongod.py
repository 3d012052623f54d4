"""A mongod of our own for test sessions and standalone benchmarks: they never share another's database.

FiftyOne attaches to a database service already running on the machine, so
only a mongod started here, named by ``FIFTYONE_DATABASE_URI``, isolates a
benchmark. Call :func:`isolate` before fiftyone is imported.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

QUIET = {
    "FIFTYONE_DO_NOT_TRACK": "true",
    "FIFTYONE_SHOW_PROGRESS_BARS": "false",
    "FIFTYONE_DATABASE_VALIDATION": "false",  # mongod 6.0's "oldest supported version" notice
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
}


class NoMongod(RuntimeError):
    """FiftyOne ships no mongod binary on this machine."""


def start(dbpath: str | Path, remove: bool = False) -> str:
    """Starts mongod on ``dbpath`` and returns its URI; at exit mongod stops and, with ``remove``, its
    directory goes (mongod preallocates a 300 MB journal, so a kept directory per run adds up).

    The tests start theirs with this too, on a fresh directory they remove.
    """
    spec = importlib.util.find_spec("fiftyone")
    binary = Path(spec.submodule_search_locations[0]) / "db" / "bin" / "mongod" if spec else None
    if binary is None or not binary.is_file():
        raise NoMongod("fiftyone ships no mongod binary here; set FIFTYONE_DATABASE_URI to a database of yours.")
    dbpath = Path(dbpath)
    dbpath.mkdir(parents=True, exist_ok=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = dbpath / "mongod.log"
    process = subprocess.Popen(
        [str(binary), "--dbpath", str(dbpath), "--port", str(port), "--bind_ip", "127.0.0.1", "--nounixsocket",
         "--logpath", str(log)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip

    def stop() -> None:
        process.terminate()
        process.wait(timeout=60)
        if remove:
            shutil.rmtree(dbpath, ignore_errors=True)

    atexit.register(stop)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", port)) == 0:
                return f"mongodb://127.0.0.1:{port}"
        if process.poll() is not None:
            raise RuntimeError(f"mongod exited early (is another mongod using {dbpath}?); see {log}")
        time.sleep(0.1)
    raise RuntimeError(f"mongod did not start within 60 s; see {log}")


def isolate(dbpath: str | Path) -> str:
    """Points FiftyOne at a mongod of our own on ``dbpath``, unless FIFTYONE_DATABASE_URI is already set."""
    for key, value in QUIET.items():
        os.environ.setdefault(key, value)
    if "FIFTYONE_DATABASE_URI" not in os.environ:
        os.environ["FIFTYONE_DATABASE_URI"] = start(dbpath)
    return os.environ["FIFTYONE_DATABASE_URI"]
