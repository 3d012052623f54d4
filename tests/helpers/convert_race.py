"""Several processes loading one checkpoint at the same moment (for the conversion cache's race)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from helpers import ROOT

# Each process imports, says it is ready, waits for the word, loads, and prints what it loaded.
_LOAD = """
import json, sys, time, pathlib, traceback
import torch
from fiftyone_florence2.engine.runner import Florence2Runner
torch.set_num_threads(1)
checkpoint, ready, go = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
ready.touch()
while not go.exists():
    time.sleep(0.01)
try:
    runner = Florence2Runner(checkpoint, device="cpu", dtype="float32")
    print(json.dumps(["loaded", runner.checkpoint, runner.weights_sha256]))
except Exception:
    print(json.dumps(["failed", traceback.format_exc(), None]))
"""


def load_together(checkpoint: str, scratch: Path, processes: int = 2) -> list[list]:
    """Each process's ``["loaded", checkpoint loaded, weights fingerprint]`` or ``["failed", traceback, None]``;
    the processes start loading at the same moment, once every one has imported."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    go = scratch / "go"
    ready = [scratch / f"ready-{i}" for i in range(processes)]
    workers = [
        subprocess.Popen([sys.executable, "-c", _LOAD, checkpoint, str(r), str(go)], env=env, stdout=subprocess.PIPE)
        for r in ready
    ]
    deadline = time.monotonic() + 300
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()
    return [json.loads(worker.communicate(timeout=300)[0].decode().strip().splitlines()[-1]) for worker in workers]
