"""Load: 2,000 samples through ``apply_model`` with steady memory, and 200 with 10% broken files.

Run with ``-s`` to see the measured peak RSS, memory growth and throughput.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import cv2
import fiftyone as fo
import numpy as np
import psutil
import pytest
from helpers import force
from helpers.threads import one_torch_thread  # noqa: F401

from fiftyone_florence2 import load_model
from fiftyone_florence2.runs.labelling import label_samples
from fiftyone_florence2.runs.records import run_failures

ANSWER = "car<loc_100><loc_200><loc_500><loc_900>"
BOX = [0.1005, 0.2005, 0.4, 0.7]
BATCH = 32
MB = 1024 * 1024


def write_pngs(folder: Path, n: int, start: int = 0) -> list[str]:
    """Small distinct PNGs, written with OpenCV (a few hundred microseconds each)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    paths = []
    for i in range(start, start + n):
        path = str(folder / f"img_{i:05d}.png")
        cv2.imwrite(path, rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        paths.append(path)
    return paths


@pytest.fixture
def model(tiny_checkpoint, tokenizer):
    return load_model(
        "detection",
        model=str(tiny_checkpoint),
        num_beams=1,
        batch_size=BATCH,
        generate_kwargs=force(tokenizer, ANSWER),
    )


def test_two_thousand_samples_with_steady_memory(model, tmp_path):
    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(filepath=p) for p in write_pngs(tmp_path / "load", 2000)])
    process = psutil.Process()
    rss: list[int] = []  # this process
    total: list[int] = []  # with the data loader's worker processes, if any
    predict_all = model.predict_all

    def measured(*args, **kwargs):
        out = predict_all(*args, **kwargs)
        rss.append(process.memory_info().rss)
        workers = 0
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                workers += child.memory_info().rss
        total.append(rss[-1] + workers)
        return out

    model.predict_all = measured
    start = time.perf_counter()
    dataset.apply_model(model, label_field="det", batch_size=BATCH)
    seconds = time.perf_counter() - start

    assert dataset.count("det") == 2000 and model.failures == {}
    assert dataset.count("det.detections") == 2000
    per_sample = dataset.values("det.detections.bounding_box")
    boxes = {tuple(round(v, 6) for v in box) for sample_boxes in per_sample for box in sample_boxes}
    assert boxes == {tuple(BOX)}
    batches = len(rss)
    assert batches == -(-2000 // BATCH)
    quarter, half = rss[batches // 4], rss[batches // 2]
    growth = (rss[-1] - quarter) / MB
    print(
        f"\n[load] 2000 samples via apply_model, batch {BATCH}: {seconds:.1f} s ({2000 / seconds:.1f} images/s); "
        f"RSS at 25% {quarter / MB:.0f} MB, 50% {half / MB:.0f} MB, 100% {rss[-1] / MB:.0f} MB; "
        f"peak sampled RSS {max(rss) / MB:.0f} MB (with workers {max(total) / MB:.0f} MB); "
        f"growth 25%->100% {growth:+.1f} MB (with workers {(total[-1] - total[batches // 4]) / MB:+.1f} MB)"
    )
    assert growth < 150, f"memory grew by {growth:.0f} MB between 25% and 100% of the run"
    assert (rss[-1] - half) / MB < 100
    assert (total[-1] - total[batches // 4]) / MB < 300
    dataset.delete()


BROKEN = {
    "missing": "file not found",
    "empty": "empty file",
    "truncated": "truncated",
    "text": "not an image file",
}


def _break(path: Path, kind: str) -> str:
    if kind == "missing":
        return str(path.with_name(f"missing_{path.name}"))
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        _, data = cv2.imencode(".jpg", np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
        path.write_bytes(data.tobytes()[: len(data) // 2])
    else:
        path.write_text("not an image\n")
    return str(path)


def test_two_hundred_samples_with_ten_percent_broken(model, tmp_path):
    folder = tmp_path / "mixed"
    good = write_pngs(folder, 180)
    kinds = [kind for kind in BROKEN for _ in range(5)]
    broken = [_break(folder / f"broken_{i:03d}.jpg", kind) for i, kind in enumerate(kinds)]
    # Spread the broken files through the batches.
    paths = list(good)
    for i, path in enumerate(broken):
        paths.insert(i * 10 + 3, path)
    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(filepath=p) for p in paths])
    kind_of = dict(zip(broken, kinds))

    summary = label_samples(dataset, model, "det", batch_size=16)

    assert (summary.targeted, summary.labelled, len(summary.failures)) == (200, 180, 20)
    path_of = dict(zip(dataset.values("id"), dataset.values("filepath")))
    assert {path_of[i] for i in summary.failures} == set(broken)
    for sample_id, reason in summary.failures.items():
        assert BROKEN[kind_of[path_of[sample_id]]] in reason
    assert run_failures(dataset, summary.run_key) == summary.failures
    labelled = dict(zip(dataset.values("filepath"), dataset.values("det")))
    assert all(labelled[p] is not None and len(labelled[p].detections) == 1 for p in good)
    assert all(labelled[p] is None for p in broken)
    dataset.delete()
