"""The repository as FiftyOne downloads it: a zip of the files git tracks (or would), served over HTTP.

Also the environment of a process that sees the library only where FiftyOne
put the downloaded copy.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Hides the pip-installed (editable) library, so that only a downloaded directory can provide it.
HIDE_INSTALLED = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "fiftyone_florence2" not in getattr(f, "__module__", "")]
sys.path_hooks[:] = [h for h in sys.path_hooks if "fiftyone_florence2" not in getattr(h, "__module__", "")]
sys.path_importer_cache.clear()
import importlib.util
assert importlib.util.find_spec("fiftyone_florence2") is None, "the installed library is still visible"
"""


def repository_archive(folder: Path) -> Path:
    """A zip of the repository's files, in one top folder as GitHub's archives have them."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    tree = folder / "tree" / "fiftyone-florence2-main"
    for name in files:
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    return Path(shutil.make_archive(str(folder / "repo"), "zip", tree.parent, tree.name))


@contextlib.contextmanager
def served_repository(folder: Path) -> Iterator[str]:
    """The URL of :func:`repository_archive` on a local HTTP server, while the block runs."""
    archive = repository_archive(folder)
    handler = functools.partial(_QuietHandler, directory=str(archive.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/{archive.name}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # one line per request on stderr otherwise
        pass


def env_without_the_library(**extra: str) -> dict[str, str]:
    """This environment less PYTHONPATH entries that hold the library (with HIDE_INSTALLED, none is left)."""
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    kept = [p for p in paths if p and not (Path(p) / "fiftyone_florence2").is_dir()]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(kept), **extra}
