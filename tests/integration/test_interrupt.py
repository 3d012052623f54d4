"""Interrupted and concurrent runs: a SIGKILLed run resumes to exactly the labels of an uninterrupted one.

The killed run is a real process (tests/helpers/label_driver.py) sharing
this session's isolated database. Each sample's answer is forced from its
own name, so a label written twice, to the wrong sample or differently after
the resume shows up. Also here: sample ids carried through a run whose view
shrinks or whose samples change under it, and field safety against views.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import fiftyone as fo
import fiftyone.core.labels as fol
import pytest
from helpers import force, write_image
from helpers.label_driver import FIELD, answer_for, build_model, name_for
from helpers.label_driver import run as driver_run
from helpers.threads import one_torch_thread  # noqa: F401

from fiftyone_florence2 import load_model, to_label
from fiftyone_florence2.runs.labelling import label_samples
from fiftyone_florence2.runs.locks import FieldLockedError, list_locks
from fiftyone_florence2.runs.records import list_runs

DRIVER = Path(__file__).parents[1] / "helpers" / "label_driver.py"
N = 48
BATCH = 4


def make_dataset(folder: Path, n: int = N) -> fo.Dataset:
    folder.mkdir(exist_ok=True)
    paths = [write_image(folder / f"img_{i}.png", size=(40, 32), seed=i) for i in range(n)]
    dataset = fo.Dataset(f"interrupt-{uuid.uuid4().hex[:8]}", persistent=True)
    dataset.add_samples([fo.Sample(filepath=p, name=name_for(p)) for p in paths])
    return dataset


def written(dataset: fo.Dataset) -> int:
    """Samples that hold the field, straight from the database (no schema or cache involved)."""
    return dataset._sample_collection.count_documents({FIELD: {"$type": "object"}})


def content(label: fol.Detections) -> list[tuple]:
    return [(d.label, d.bounding_box) for d in label.detections]


def by_path(dataset: fo.Dataset) -> dict[str, fol.Detections | None]:
    dataset.reload()
    return dict(zip(dataset.values("filepath"), dataset.values(FIELD)))


@pytest.fixture
def datasets(tmp_path):
    """Makes persistent datasets (the driver process loads them by name) and deletes them afterwards."""
    names = []

    def make(n: int = N) -> fo.Dataset:
        dataset = make_dataset(tmp_path / f"images{len(names)}", n)
        names.append(dataset.name)
        return dataset

    make.names = names
    yield make
    for name in names:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def test_sigkill_then_skip_existing_gives_the_uninterrupted_labels(datasets, tiny_checkpoint):
    checkpoint = str(tiny_checkpoint)
    dataset = datasets()
    reference = dataset.clone(f"{dataset.name}-reference", persistent=True)
    datasets.names.append(reference.name)
    shared = os.environ.get("FIFTYONE_PRIVATE_DATABASE_PORT") or fo.config.database_uri
    assert shared, "the driver must reach this session's database"
    env = {**os.environ, "FIFTYONE_DATABASE_DIR": fo.config.database_dir, "OMP_NUM_THREADS": "1"}
    rival = build_model(checkpoint)  # loaded before the driver starts, so the live window is not spent here

    driver = subprocess.Popen(
        [sys.executable, str(DRIVER), dataset.name, checkpoint, "--batch-size", str(BATCH), "--delay", "0.3"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while written(dataset) < 2 * BATCH:
            assert driver.poll() is None, f"the driver stopped early: {driver.communicate()}"
            assert time.monotonic() < deadline, "the driver wrote nothing in time"
            time.sleep(0.05)

        # Mid-run: the field is locked by the driver, and a second run into it is refused.
        (lock,) = list_locks(dataset)
        assert [h["pid"] for h in lock["holders"].values()] == [driver.pid]
        before_rival = by_path(dataset)
        with pytest.raises(FieldLockedError, match=f"pid {driver.pid}"):
            label_samples(dataset, rival, FIELD, skip_existing=True)
        assert driver.poll() is None, "the driver finished before it could be killed; raise --delay"
        driver.send_signal(signal.SIGKILL)
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.wait(timeout=60)
    assert driver.returncode == -signal.SIGKILL

    after_kill = by_path(dataset)
    done = {path: label for path, label in after_kill.items() if label is not None}
    assert 2 * BATCH <= len(done) < N, "the kill must land in the middle of the run"
    assert all(before_rival[p] is None or content(before_rival[p]) == content(after_kill[p]) for p in before_rival)
    (killed_key,) = list_runs(dataset)
    assert dataset.get_run_info(killed_key).config.status == "running"  # it never got to say otherwise
    assert len(list_locks(dataset)) == 1  # the dead run's lock is still there ...
    # Regression: a killed run kept no counts. Each batch stores them, so they lag the labels by a batch at most.
    killed = dataset.load_run_results(killed_key, cache=False)
    assert killed.status == "running" and len(done) - BATCH <= killed.labelled <= len(done)
    assert killed.targeted == N and killed.failed == 0

    resumed = driver_run(dataset.name, checkpoint, BATCH, skip_existing=True, delay=0.0)  # ... and is taken over
    uninterrupted = driver_run(reference.name, checkpoint, BATCH, skip_existing=False, delay=0.0)

    assert (resumed.skipped, resumed.labelled, resumed.failures) == (len(done), N - len(done), {})
    assert (uninterrupted.labelled, uninterrupted.failures) == (N, {})
    assert list_locks(dataset) == [] and list_locks(reference) == []
    final, expected = by_path(dataset), by_path(reference)
    assert len(final) == len(expected) == N
    for path, label in final.items():
        # Exactly once: the labels written before the kill were kept, not written again.
        if path in done:
            assert [d.id for d in label.detections] == [d.id for d in done[path].detections]
        # Identical to the uninterrupted run, and each sample's own answer.
        assert content(label) == content(expected[path])
        assert len(label.detections) == 2
        assert content(label) == content(to_label("phrase_grounding", answer_for(name_for(path))))
        got = [d.confidence for d in label.detections]
        assert got == pytest.approx([d.confidence for d in expected[path].detections], rel=1e-4)
    runs = list_runs(dataset)
    assert runs[0] == killed_key and len(runs) == 2
    taken_over = dataset.load_run_results(killed_key, cache=False)
    assert taken_over.status == "interrupted" and taken_over.labelled == killed.labelled
    assert dataset.get_run_info(runs[1]).config.status == "completed"


def test_labelling_the_resume_view_labels_each_remaining_sample_once(datasets, tiny_checkpoint):
    """The view of unlabelled samples shrinks as the run writes; the id snapshot keeps every batch aligned."""
    dataset = datasets(20)
    model = build_model(str(tiny_checkpoint))
    label_samples(dataset.limit(6), model, FIELD, batch_size=BATCH)
    first_ids = {path: [d.id for d in label.detections] for path, label in by_path(dataset).items() if label}

    summary = label_samples(dataset.exists(FIELD, False), model, FIELD, batch_size=3)

    assert (summary.targeted, summary.labelled, summary.failures) == (14, 14, {})
    for path, label in by_path(dataset).items():
        assert content(label) == content(to_label("phrase_grounding", answer_for(name_for(path))))
        if path in first_ids:
            assert [d.id for d in label.detections] == first_ids[path]


def test_a_sample_deleted_during_the_run_does_not_shift_labels(datasets, tiny_checkpoint):
    # Regression (found by this test, fixed in 4d280a7): outputs were written to the
    # batch's snapshot ids while the items came from the rows still there, so a
    # sample deleted mid-run (e.g. in the App during a long delegated run) gave
    # every later sample of its batch its neighbour's label, and the last none.
    dataset = datasets(8)
    victim = dataset.skip(1).first()

    def delete_during_run(done, total):
        if done == 0:
            dataset.delete_samples([victim.id])

    model = build_model(str(tiny_checkpoint))
    summary = label_samples(dataset, model, FIELD, batch_size=BATCH, progress=delete_during_run)
    unlabelled = []
    for path, label in by_path(dataset).items():
        if label is None:
            unlabelled.append(path)
        else:
            assert content(label) == content(to_label("phrase_grounding", answer_for(name_for(path)))), path
    assert unlabelled == [] and summary.labelled == 7


# ---------------------------------------------------------------- field safety against views

ANSWER = "car<loc_100><loc_200><loc_500><loc_900>"


@pytest.fixture
def counted_model(tiny_checkpoint, tokenizer):
    model = load_model("detection", model=str(tiny_checkpoint), num_beams=1, generate_kwargs=force(tokenizer, ANSWER))
    model.calls = 0
    features = model.runner.image_features

    def counting(*args, **kwargs):
        model.calls += 1
        return features(*args, **kwargs)

    model.runner.image_features = counting
    return model


def test_existing_field_of_another_type_is_refused_before_model_work_through_a_view(dataset, counted_model):
    # Regression (found by this test, fixed in 4d280a7): the type check read the
    # view's schema, so a view that hides the field passed it and the model ran.
    dataset.set_values("det", [fol.Classification(label="mine")] * len(dataset))
    with pytest.raises(ValueError, match="already holds Classification"):
        label_samples(dataset.exclude_fields("det"), counted_model, "det")
    assert counted_model.calls == 0
    assert dataset.values("det.label") == ["mine"] * len(dataset)


@pytest.mark.parametrize("options", [{}, {"skip_existing": True}])
def test_existing_labels_are_never_overwritten_through_a_view_that_hides_them(dataset, counted_model, options):
    # Regression (found by this test, fixed in 4d280a7): "already have labels" and
    # skip_existing read the view's schema, so a view hiding the field let the run
    # silently overwrite every existing label, with skip_existing asked for too.
    mine = fol.Detections(detections=[fol.Detection(label="mine", bounding_box=[0.1, 0.1, 0.2, 0.2])])
    dataset.set_values("det", [mine] * 3 + [None] * (len(dataset) - 3))
    view = dataset.select_fields()
    if options:
        summary = label_samples(view, counted_model, "det", **options)
        assert (summary.skipped, summary.labelled) == (3, len(dataset) - 3)
    else:
        with pytest.raises(ValueError, match="already have labels"):
            label_samples(view, counted_model, "det")
    assert [d.detections[0].label for d in dataset.values("det")[:3]] == ["mine"] * 3


def test_refused_type_clash_writes_nothing_and_records_nothing(dataset, counted_model):
    dataset.set_values("det", ["a string"] * len(dataset))
    before = [s.to_dict() for s in dataset]
    with pytest.raises(ValueError, match="already holds StringField"):
        label_samples(dataset, counted_model, "det")
    assert counted_model.calls == 0
    assert [s.to_dict() for s in dataset] == before
    assert list_runs(dataset) == [] and list_locks(dataset) == []
