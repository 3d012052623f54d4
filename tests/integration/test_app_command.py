"""``florence2 app``: one pasteable command opens the App on a dataset with the Florence-2 operators."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from fiftyone_florence2.app import DEFAULT_PORT, app_command, app_url, check_port_free, plugin_dir
from fiftyone_florence2.cli import main

ROOT = Path(__file__).resolve().parents[2]
OPERATORS = yaml.safe_load((ROOT / "fiftyone.yml").read_text())["operators"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("name", "port", "tail"),
    [
        (None, DEFAULT_PORT, ["app"]),
        ("florence2-demo", DEFAULT_PORT, ["app", "florence2-demo"]),
        ("my images", 5252, ["app", "my images", "--port", "5252"]),
        ("it's; rm -rf ~", DEFAULT_PORT, ["app", "it's; rm -rf ~"]),
        ("", DEFAULT_PORT, ["app"]),
    ],
)
def test_app_command_pastes_as_an_absolute_florence2_call(name, port, tail):
    argv = shlex.split(app_command(name, port))
    assert argv[-len(tail) :] == tail
    assert os.path.isabs(argv[0]) and os.access(argv[0], os.X_OK)  # works without activating the venv


@pytest.mark.parametrize(
    ("name", "port", "url"),
    [
        (None, 5151, "http://localhost:5151"),
        ("florence2-demo", 5151, "http://localhost:5151/datasets/florence2-demo"),
        ("a b/c", 6000, "http://localhost:6000/datasets/a%20b%2Fc"),
    ],
)
def test_app_url(name, port, url):
    assert app_url(name, port) == url


def test_a_clone_is_the_plugin_directory():
    assert plugin_dir() == ROOT


@pytest.mark.parametrize("case", ["missing dataset", "port in use"])
def test_refusals_are_one_line_and_start_nothing(case, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        if case == "missing dataset":
            argv, expected = ["app", f"no-such-{uuid.uuid4().hex}", "--port", str(_free_port())], "No FiftyOne dataset"
        else:
            argv, expected = ["app", "--port", str(busy.getsockname()[1])], "pass --port with a free one"
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a script's `florence2 app &` starts it


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stop", "started"),
    [(signal.SIGINT, None), (signal.SIGINT, _ignore_sigint), (signal.SIGTERM, None)],
    ids=["ctrl-c", "ctrl-c, started with SIGINT ignored", "sigterm"],
)
def test_florence2_app_serves_the_dataset_with_the_plugins_operators(image_dir, tmp_path, stop, started):
    import fiftyone as fo

    name = f"app-command-{uuid.uuid4().hex[:8]}"
    dataset = fo.Dataset(name, persistent=True)
    dataset.add_samples([fo.Sample(filepath=str(p)) for p in sorted(image_dir.iterdir())])
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.pop("FIFTYONE_PLUGINS_DIR", None)  # the command itself must point FiftyOne at the plugin
    env["PYTHONPATH"] = str(ROOT)
    log = tmp_path / "app.log"
    command = [sys.executable, "-m", "fiftyone_florence2.cli", "app", name, "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                               preexec_fn=started, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while f"/datasets/{name}" not in log.read_text():
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "florence2 app printed no URL:\n" + log.read_text()[-3000:]
            time.sleep(0.5)
        with urllib.request.urlopen(app_url(name, port), timeout=30) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        request = urllib.request.Request(
            f"http://localhost:{port}/operators",
            data=json.dumps({"dataset_name": name}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            listed = {operator["uri"] for operator in json.load(response)["operators"]}
        assert {f"@fiftyone-florence2/florence2/{operator}" for operator in OPERATORS} <= listed
        process.send_signal(stop)  # to florence2 alone, not its server: the command must stop the server itself
        assert process.wait(timeout=30) == 0, log.read_text()[-3000:]
        assert f"http://localhost:{port}/datasets/{name}" in log.read_text()
        check_port_free(port)  # the server is gone with it: its port is free
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the command and its server, whatever happened
        process.wait()
        dataset.delete()
