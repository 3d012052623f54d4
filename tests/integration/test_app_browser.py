"""The operators in the real FiftyOne App, driven in Debian's Chromium as a user would: labelling, fine-tuning,
a dry run, calibration (its diagram, its report uncut) and the review queue (the grid shows its view).

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

ROOT = Path(__file__).resolve().parents[2]
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
    # Legacy orchestrators: the App offers Schedule for delegated operations that `fiftyone delegated launch` runs.
    env = {**os.environ, "FIFTYONE_PLUGINS_DIR": str(ROOT), "FIFTYONE_DATABASE_VALIDATION": "false",
           "FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS": "true"}  # fmt: skip
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


def _choose_task(page, name: str) -> None:
    """Adds a task to the form's multi-select of tasks (the first combobox)."""
    page.get_by_role("combobox").first.click()
    page.get_by_role("option", name=f"{name}: ").first.click()
    page.get_by_text("Checkpoint", exact=True).click()  # closes the list; Escape would close the form


def _fill_tiny_run(page, checkpoint) -> None:
    _input_after(page, "Checkpoint").fill(str(checkpoint))
    _input_after(page, "Beams").fill("1")
    _input_after(page, "Max new tokens").fill("2")


def _open_operator(page, label: str, ready: str = "What Florence-2 does for each image") -> None:
    """The operator browser opens on the backtick key; search it for Florence-2 and open the form."""
    page.keyboard.press("`")
    page.keyboard.type("florence")
    page.get_by_text(label).first.click()
    page.get_by_text(ready).wait_for()


def _wait_for_operations(dataset, operator: str, timeout: float = 30.0) -> list:
    """The queued operations of ``operator`` on ``dataset``, once there are some."""
    from fiftyone.operators.delegated import DelegatedOperationService

    deadline = time.monotonic() + timeout
    while True:
        found = DelegatedOperationService().list_operations(dataset_name=dataset.name, run_state="queued")
        found = [operation for operation in found if operation.operator.endswith("/" + operator)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.25)


def _add_reviewed_boxes(dataset) -> None:
    """Ground truth ``gt`` and predictions ``pred`` with known confidences, three right and two wrong."""
    from helpers.calibration_data import detections_sample

    objects = [[("car", 0.9, True)], [("car", 0.8, True)], [("car", 0.7, False)], [("car", 0.6, True)],
               [("car", 0.3, False)]]  # fmt: skip
    pairs = [detections_sample(row) for row in objects]
    dataset.set_values("gt", [gt for gt, _ in pairs])
    dataset.set_values("pred", [pred for _, pred in pairs])


# The elements, from one up to its dialog, whose content is wider than they are (cut off on the right).
_CLIPPED = """e => { const clipped = [];
  for (let n = e; n && n !== document.body; n = n.parentElement) {
    if (n.scrollWidth > n.clientWidth + 1) clipped.push(n.tagName);
    if (n.getAttribute('role') === 'dialog') break;
  }
  return clipped; }"""


def _show_on_thumbnails(page, field: str) -> None:
    """Ticks ``field`` in the App's sidebar, so that each thumbnail of the grid shows its value."""
    row = f"xpath=//*[normalize-space(text())={field!r}]/ancestor::*[.//input[@type='checkbox']][1]"
    page.locator(row).first.locator("input[type=checkbox]").first.click()


def _queue_from_the_app(page) -> list[str]:
    """Runs the review queue operator on ``pred`` with threshold 0.95 from the operator browser; returns the
    uncertainty each thumbnail of the grid then shows, in the grid's order."""
    _open_operator(page, "Florence-2: review queue", ready="Open band")
    page.get_by_role("combobox").first.click()
    page.get_by_role("option", name="pred", exact=True).click()
    page.get_by_text("Entire dataset").first.click()  # a sample is still selected from the dry run
    _input_after(page, "Thresholds").fill("0.95")
    page.get_by_role("button", name="Queue").click()
    page.get_by_text("Opened (least certain first)").wait_for(timeout=60_000)
    page.get_by_text("pred-review", exact=True).wait_for()
    page.get_by_role("button", name="Close").click()
    page.get_by_text("4 samples").wait_for(timeout=30_000)
    _show_on_thumbnails(page, "pred_uncertainty")
    lookers = page.locator("[data-cy=looker]")
    page.wait_for_function("() => [...document.querySelectorAll('[data-cy=looker]')].every(e => e.innerText)")
    return [lookers.nth(i).inner_text().strip() for i in range(lookers.count())]


@pytest.mark.browser
@pytest.mark.slow
def test_user_runs_florence2_from_the_operator_browser(app, tiny_checkpoint, tmp_path, monkeypatch):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Python playwright is required: pip install -e '.[test]' (scripts/test.sh does)")
    from helpers.operators import _snapshot

    url, dataset = app
    n = len(dataset)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        # The App's "Explore Enterprise" popover covers the grid when it shows: dismiss it whenever it does.
        dismiss = page.get_by_text("Dismiss", exact=True)
        page.add_locator_handler(dismiss, lambda: dismiss.click())
        try:
            page.goto(f"{url}/datasets/{dataset.name}")
            page.wait_for_function("() => !document.body.innerText.includes('Pixelating')", timeout=90_000)
            page.get_by_text(f"{n} samples").wait_for(timeout=60_000)

            # Two tasks in one run: the first is preselected, add the second; the form lists both fields.
            _open_operator(page, "Florence-2: label samples")
            _choose_task(page, "detection")
            _fill_tiny_run(page, tiny_checkpoint)
            page.get_by_text("The prefix of the output fields, one per task").wait_for()
            fields = "florence2_caption (Classification), florence2_detection (Detections)"
            page.get_by_text(f"{n} sample(s) → {fields}").wait_for()
            page.get_by_role("button", name="Execute").click()

            # Progress, then the App reloads and the new fields are in the sidebar.
            page.get_by_text(f"Florence-2 labelled {n} of {n} sample(s) into {fields}").wait_for(timeout=120_000)
            page.get_by_text(f"{n}/{n} images").wait_for()
            for name in ("florence2_caption", "florence2_detection"):
                page.locator(f"xpath=//*[normalize-space(text())={name!r}]").first.wait_for(timeout=30_000)
            page.get_by_role("button", name="Done").click()
            page.screenshot(path=str(ARTIFACTS / "app_florence2_operator.png"))

            # The fine-tuning form: the Detections field just written is the one detection can learn from,
            # and the required output directory blocks it until given; then it is scheduled, not run.
            _open_operator(page, "Florence-2: fine-tune", ready="What Florence-2 learns")
            page.get_by_text('"Output directory" is required').first.wait_for()
            page.get_by_text("A Detections field of corrected labels for detection to learn from").wait_for()
            _input_after(page, "Output directory").fill(str(tmp_path / "fine-tuned"))
            _input_after(page, "Checkpoint").fill(str(tiny_checkpoint))
            _input_after(page, "Max steps").fill("2")
            _input_after(page, "Batch size").fill("2")
            page.get_by_text(f"Fine-tunes on {n} sample(s)").wait_for()
            page.screenshot(path=str(ARTIFACTS / "app_florence2_fine_tune.png"))
            page.get_by_role("button", name="Schedule").click()
            [queued] = _wait_for_operations(dataset, "florence2_train")
            assert queued.context.params["label_field"] == "florence2_detection"
            assert not (tmp_path / "fine-tuned").exists()
            page.keyboard.press("Escape")

            # A dry run on one selected sample shows each task's labels and writes nothing.
            before = _snapshot(dataset)
            looker = page.locator("[data-cy=looker]").first
            looker.hover()
            looker.locator("label[data-cy^=looker-checkbox]").click()
            _open_operator(page, "Florence-2: dry run (preview labels)")
            _choose_task(page, "ocr_with_region")
            _fill_tiny_run(page, tiny_checkpoint)
            page.get_by_text("Previews 1 sample(s) with caption (Classification), ocr_with_region").wait_for()
            page.get_by_role("button", name="Preview").click()
            page.get_by_text("Previewed 1 sample(s); nothing was written").wait_for(timeout=60_000)
            table = page.locator("table").first.inner_text()
            page.screenshot(path=str(ARTIFACTS / "app_florence2_dry_run.png"))
            page.get_by_role("button", name="Close").click()
            after_dry_run = _snapshot(dataset)

            # Calibration on reviewed boxes: the diagram shows in the operator's output.
            _add_reviewed_boxes(dataset)
            page.reload()
            page.get_by_text(f"{n} samples").wait_for(timeout=60_000)
            _open_operator(page, "Florence-2: calibrate confidences", ready="Target precision")
            for i, field in enumerate(("pred", "gt")):
                page.get_by_role("combobox").nth(i).click()
                page.get_by_role("option", name=field, exact=True).click()
            _input_after(page, "Fewest labels a threshold accepts").fill("1")  # five labels in all
            page.get_by_text("Entire dataset").first.click()  # a sample is still selected from the dry run
            page.get_by_role("button", name="Execute").click()
            diagram = page.locator("img[alt='reliability diagram']")
            diagram.wait_for(timeout=60_000)
            assert diagram.evaluate("img => img.complete && img.naturalWidth") > 1000  # decoded, not a broken icon
            page.screenshot(path=str(ARTIFACTS / "app_florence2_calibration.png"))
            report = page.get_by_text("Thresholds:").last
            assert report.evaluate(_CLIPPED) == []  # the report under the diagram wraps, nothing cut off
            page.get_by_role("button", name="Close").click()

            # The review queue from the operator browser: labels tagged, and the grid shows the review band's
            # view, least certain first (each thumbnail showing its sample's uncertainty).
            queue_grid = _queue_from_the_app(page)
            page.screenshot(path=str(ARTIFACTS / "app_florence2_review_queue.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "app_florence2_operator_failure.png"))
            raise
        finally:
            browser.close()
    rows = [line.split("\t") for line in table.splitlines()[1:]]
    assert [row[:2] for row in rows] == [["img_0.jpg", "caption (Classification)"],
                                         ["img_0.jpg", "ocr_with_region (Detections)"]]  # fmt: skip
    assert after_dry_run == before
    dataset.reload()
    [calibration] = dataset.list_runs(method="florence2_calibrate")
    assert dataset.get_run_info(calibration).config.thresholds == {"*": 0.8}  # car: too few labels for its own
    # pred's confidences 0.9, 0.8, 0.7, 0.6, 0.3: at 0.95 the review band runs from 0.5 up to 0.95.
    assert dataset.values("pred.detections.tags") == [[["review"]]] * 4 + [[["skim"]]]
    assert queue_grid == ["0.4", "0.3", "0.2", "0.1"]  # the review band, least certain (lowest confidence) first
    schema = dataset.get_field_schema()
    assert schema["florence2_caption"].document_type.__name__ == "Classification"
    assert schema["florence2_detection"].document_type.__name__ == "Detections"
    assert dataset.count("florence2_caption") == dataset.count("florence2_detection") == n

    # What the App sent trains, as a worker would run it, and writes the checkpoint.
    import fiftyone as fo
    from fiftyone.operators.delegated import DelegatedOperationService

    monkeypatch.setattr(fo.config, "plugins_dir", str(ROOT))  # this process runs the operation, as a worker
    [trained] = DelegatedOperationService().execute_queued_operations(dataset_name=dataset.name)
    assert trained.error is None, trained.error
    assert trained.result["steps"] == 2 and (tmp_path / "fine-tuned" / "config.json").is_file()
