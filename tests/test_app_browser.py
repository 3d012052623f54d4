"""The operator in the real FiftyOne App, driven in Debian's Chromium as a user would.

Needs the ``chromium`` Debian package and the ``playwright`` Python package
(``scripts/test.sh`` installs both). Missing either is a failure, never a skip.
The screenshot is kept in ``test-artifacts/``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    # These three keep Chromium from calling out to a closed network.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("Debian's Chromium is required: apt-get install chromium (scripts/test.sh does)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app(image_dir, tmp_path):
    """A persistent dataset of 5 images, and the App server on localhost with this repository as its plugins."""
    import fiftyone as fo

    name = f"browser-{os.getpid()}-{time.monotonic_ns()}"
    dataset = fo.Dataset(name, persistent=True)
    dataset.add_samples([fo.Sample(filepath=str(p)) for p in sorted(image_dir.iterdir())])
    port = _free_port()
    env = {**os.environ, "FIFTYONE_PLUGINS_DIR": str(ROOT), "FIFTYONE_DATABASE_VALIDATION": "false"}
    log = tmp_path / "app.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "fiftyone.server.main", "--port", str(port), "--address", "127.0.0.1"],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "The App server did not answer:\n" + log.read_text()[-3000:]
                time.sleep(0.5)
        yield url, dataset
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        dataset.delete()


def _input_after(page, label: str):
    """The text input that follows a form label (the App's inputs carry no names)."""
    return page.locator(f"xpath=//*[normalize-space(text())={label!r}]/following::input[1]")


@pytest.mark.browser
@pytest.mark.slow
def test_user_runs_florence2_from_the_operator_browser(app, tiny_checkpoint):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Python playwright is required: pip install -e '.[test]' (scripts/test.sh does)")
    url, dataset = app
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{url}/datasets/{dataset.name}")
            page.wait_for_function("() => !document.body.innerText.includes('Pixelating')", timeout=90_000)
            page.get_by_text(f"{len(dataset)} samples").wait_for(timeout=60_000)

            # The operator browser opens on the backtick key; search it for Florence-2 and open the form.
            page.keyboard.press("`")
            page.keyboard.type("florence")
            page.get_by_text("Florence-2: label samples").first.click()
            page.get_by_text("What Florence-2 does for each image").wait_for()

            # Choose a task in the dropdown; its label type shows in the form.
            page.get_by_role("combobox").first.click()
            page.get_by_role("option", name="detection: object detection").click()
            page.get_by_text("detection writes Detections").wait_for()

            _input_after(page, "Checkpoint").fill(str(tiny_checkpoint))
            _input_after(page, "Output field").fill("florence2_boxes")
            _input_after(page, "Beams").fill("1")
            _input_after(page, "Max new tokens").fill("2")
            page.get_by_text(f"{len(dataset)} sample(s) → florence2_boxes (Detections)").wait_for()
            page.get_by_role("button", name="Execute").click()

            # Progress, then the App reloads and the new field is in the sidebar.
            page.get_by_text(f"Florence-2 labelled {len(dataset)} of {len(dataset)} sample(s)").wait_for(
                timeout=120_000
            )
            page.get_by_text(f"{len(dataset)}/{len(dataset)} images").wait_for()
            sidebar_field = page.locator("xpath=//*[normalize-space(text())='florence2_boxes']")
            sidebar_field.first.wait_for(timeout=30_000)
            page.get_by_role("button", name="Done").click()
            page.screenshot(path=str(ARTIFACTS / "app_florence2_operator.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "app_florence2_operator_failure.png"))
            raise
        finally:
            browser.close()
    dataset.reload()
    assert dataset.get_field_schema()["florence2_boxes"].document_type.__name__ == "Detections"
    assert dataset.count("florence2_boxes") == len(dataset)
