"""``florence2 app``: the FiftyOne App on a dataset, with this repository's operators loaded.

The plugin (``fiftyone.yml`` and ``operators/``) lives at the root of a clone,
beside the ``fiftyone_florence2`` package. An editable install (``pip install -e``)
imports the package from the clone, so the plugin is found next to it. A wheel
holds only the package: the App then opens with the plugins of FiftyOne's own
plugins directory, where ``fiftyone plugins download`` puts this one.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import webbrowser
from pathlib import Path

from fiftyone_florence2.core.errors import Florence2Error

DEFAULT_PORT = 5151
SERVER_START_S = 120.0


class AppError(Florence2Error, ValueError):
    """The App cannot be started as asked; one line a user can act on."""


def plugin_dir() -> Path | None:
    """The folder holding this repository's ``fiftyone.yml`` (the clone), or None for a wheel install."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "fiftyone.yml").is_file() and (root / "operators").is_dir() else None


def florence2_executable() -> list[str]:
    """The command that runs ``florence2`` without an activated venv: its absolute path, or ``python -m``."""
    name = "florence2.exe" if os.name == "nt" else "florence2"
    # sys.executable keeps the venv's own bin/ (it is not resolved through the symlink).
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return [str(beside)]
    found = shutil.which(name)
    return [os.path.abspath(found)] if found else [sys.executable, "-m", "fiftyone_florence2.cli"]


def app_command(dataset_name: str | None = None, port: int = DEFAULT_PORT) -> str:
    """The exact command line that opens the App on ``dataset_name`` with the plugin, ready to paste."""
    argv = [*florence2_executable(), "app"]
    if dataset_name:
        argv.append(dataset_name)
    if port != DEFAULT_PORT:
        argv += ["--port", str(port)]
    return shlex.join(argv)


def app_url(dataset_name: str | None, port: int = DEFAULT_PORT) -> str:
    """The App's address on this machine, on ``dataset_name``'s grid when one is given."""
    url = f"http://localhost:{port}"
    return f"{url}/datasets/{urllib.parse.quote(dataset_name, safe='')}" if dataset_name else url


def server_env(plugins: Path | None) -> dict[str, str]:
    """The server's environment: this repository as FiftyOne's plugins directory, when it is a clone."""
    return {**os.environ, "FIFTYONE_PLUGINS_DIR": str(plugins)} if plugins is not None else dict(os.environ)


def check_port_free(port: int) -> None:
    """Refuses a port that something else already listens on (another App, say)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise AppError(f"Port {port} is already in use (another App?): pass --port with a free one.") from None


def can_open_browser() -> bool:
    """Whether a graphical browser can open here; on a headless machine the URL is printed instead."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def wait_for_server(server: subprocess.Popen, url: str, timeout: float = SERVER_START_S) -> None:
    """Returns once ``url`` answers; raises :class:`AppError` if the server stops or stays silent."""
    deadline = time.monotonic() + timeout
    while server.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AppError(f"The App server did not answer at {url} within {timeout:.0f} s.") from None
            time.sleep(0.5)
    raise AppError(f"The App server stopped (exit status {server.returncode}) before it answered; see its output.")


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """Ctrl-C and SIGTERM stop the App and its server: Ctrl-C even where a script's ``&`` started this process
    with SIGINT ignored, and SIGTERM (``kill``, a process manager) without leaving the server on its port."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop)


def run_app(dataset_name: str | None, port: int = DEFAULT_PORT) -> int:
    """Serves the App until Ctrl-C, on ``dataset_name`` (which must exist), with the plugin loaded."""
    import fiftyone as fo

    if dataset_name is not None and not fo.dataset_exists(dataset_name):
        names = ", ".join(fo.list_datasets()[:10]) or "none"
        raise AppError(f"No FiftyOne dataset named {dataset_name!r}; datasets: {names}.")
    check_port_free(port)
    plugins = plugin_dir()
    if plugins is None:
        print(
            "This install holds no plugin (only a clone does): the Florence-2 operators show only if "
            f"{fo.config.plugins_dir or 'your plugins directory'} holds them (docs/APP.md, 'Install the plugin')."
        )
    stop_on_signals()
    server = subprocess.Popen(
        [sys.executable, "-m", "fiftyone_florence2.app", "--port", str(port)], env=server_env(plugins)
    )
    try:
        wait_for_server(server, app_url(None, port))
        url = app_url(dataset_name, port)
        print(f"The App, with the Florence-2 operators: {url}  (Ctrl-C stops it)", flush=True)
        if can_open_browser():
            webbrowser.open(url, new=2)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


def serve(port: int) -> None:
    """The App server itself, in a process of its own that reads the plugins directory from its environment.

    Importing this package first keeps the server quiet about MongoDB 6.0 (see :mod:`.quiet`).
    """
    from fiftyone.server.main import start_server

    start_server(port=port, address="localhost")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="The FiftyOne App server (florence2 app starts it).")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve(parser.parse_args().port)
