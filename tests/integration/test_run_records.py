"""Run records stay readable and their commands read-only: a run whose view no longer builds, training
runs' keys, and keys of runs that are not this project's."""

from __future__ import annotations

import fiftyone as fo
import fiftyone.core.labels as fol
import pytest
from fiftyone import ViewField as F
from helpers import force

from fiftyone_florence2 import load_model
from fiftyone_florence2.cli import main
from fiftyone_florence2.runs.labelling import label_samples
from fiftyone_florence2.runs.records import (
    TRAIN_METHOD,
    delete_run,
    list_runs,
    new_run_key,
    register_running,
    run_failures,
)
from fiftyone_florence2.training.record import finish_training_run, list_training_runs


@pytest.fixture
def model(tiny_checkpoint, tokenizer):
    return load_model("caption", model=str(tiny_checkpoint), num_beams=1, generate_kwargs=force(tokenizer, "a car"))


@pytest.fixture
def with_gt(dataset, tmp_path):
    """The dataset with a Detections field ``gt``, a count ``n``, and one sample whose file is empty."""
    broken = tmp_path / "empty.jpg"
    broken.write_bytes(b"")
    dataset.add_sample(fo.Sample(filepath=str(broken)))
    box = fol.Detection(label="thing", bounding_box=[0.1, 0.2, 0.5, 0.4])
    dataset.set_values("gt", [fol.Detections(detections=[box.copy()]) for _ in range(len(dataset))])
    dataset.set_values("n", list(range(len(dataset))))
    return dataset


# Views whose stages name a field that is deleted once they were labelled.
BROKEN_VIEWS = [
    ("filter_labels on gt", lambda d: d.filter_labels("gt", F("label") == "thing", only_matches=False), "gt"),
    ("select_fields n", lambda d: d.select_fields("n"), "n"),
]


@pytest.mark.parametrize(("make_view", "deleted"), [v[1:] for v in BROKEN_VIEWS], ids=[v[0] for v in BROKEN_VIEWS])
def test_a_run_whose_view_no_longer_builds_is_listed_and_its_failures_read(with_gt, model, capsys, make_view, deleted):
    summary = label_samples(make_view(with_gt), model, "cap")
    (bad,) = summary.failures
    with_gt.delete_sample_field(deleted)
    with pytest.raises(ValueError):  # what FiftyOne says when the view is rebuilt
        with_gt.load_run_view(summary.run_key)
    assert list_runs(with_gt) == [summary.run_key]
    assert "empty file" in run_failures(with_gt, summary.run_key)[bad]
    assert main(["runs", "--dataset", with_gt.name]) == 0
    listed = capsys.readouterr().out
    assert listed.startswith(f"{summary.run_key}  ") and "  completed   caption -> cap" in listed
    assert main(["runs", "--dataset", with_gt.name, "--failures", summary.run_key]) == 0
    printed = capsys.readouterr().out
    assert f"{bad}  " in printed and "empty file" in printed and "1 failure(s)" in printed


def _training_run(dataset, skips: dict[str, str]) -> str:
    """Records a finished training run on ``dataset`` (as ``train`` does, without the training)."""
    key = register_running(dataset, new_run_key(method=TRAIN_METHOD), TRAIN_METHOD,
                           label_field={"caption": "gt"}, output_dir="/nowhere", model="x")  # fmt: skip
    finish_training_run(dataset, key, "completed", {"history": [], "skips": skips})
    return key


def _cli_runs(dataset, capsys, *args: str) -> tuple[int, str, str]:
    """``florence2 runs --dataset <dataset> *args``: its exit status, output and errors."""
    code = main(["runs", "--dataset", dataset.name, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# (number of samples the training run left out)
LEFT_OUT = [0, 1, 3]


@pytest.mark.parametrize("left_out", LEFT_OUT)
@pytest.mark.parametrize("route", ["python", "cli"])
def test_training_runs_keys_are_explained_and_deleted(dataset, capsys, route, left_out):
    ids = dataset.values("id")[:left_out]
    skips = {sample_id: f"not learnt: reason {i}" for i, sample_id in enumerate(ids)}
    key = _training_run(dataset, skips)
    assert main(["runs", "--dataset", dataset.name]) == 0 and key in capsys.readouterr().out
    if route == "python":
        assert run_failures(dataset, key) == skips
        delete_run(dataset, key)
    else:
        code, printed, _ = _cli_runs(dataset, capsys, "--failures", key)
        assert code == 0 and f"{left_out} failure(s) in run {key}" in printed
        assert all(f"{sample_id}  {path}  {skips[sample_id]}" in printed for sample_id, path in
                   zip(*dataset.select(ids).values(["id", "filepath"])))  # fmt: skip
        assert _cli_runs(dataset, capsys, "--delete", key)[0] == 0
    assert list_training_runs(dataset) == []


# Keys that name no run of this project: another method's run, a run that is not there, an empty key.
OTHER_KEYS = ["someone_elses_run", "florence2_20260101_000000_abcd", ""]


@pytest.mark.parametrize("key", OTHER_KEYS)
@pytest.mark.parametrize("route", ["python", "cli"])
def test_other_keys_are_refused_and_their_runs_kept(dataset, capsys, route, key):
    dataset.register_run("someone_elses_run", dataset.init_run(method="someone_else"))
    if route == "python":
        for read_or_delete in (run_failures, delete_run):
            with pytest.raises(ValueError, match=f"No Florence-2 run {key!r} on {dataset.name!r}; runs: none"):
                read_or_delete(dataset, key)
    else:
        for action in ("--failures", "--delete"):
            code, printed, error = _cli_runs(dataset, capsys, action, key)
            assert (code, printed) == (2, "")
            assert error == f"florence2: error: No Florence-2 run {key!r} on {dataset.name!r}; runs: none.\n"
    dataset.reload()
    assert dataset.list_runs() == ["someone_elses_run"]


# (a run record's weights fields, what listings show)
SHOWN_WEIGHTS = [
    ({"weights_sha256": "ab" * 32, "revision": "main"}, "weights " + "ab" * 6),
    ({"weights_sha256": None, "revision": "0123456789abcdef0123456789abcdef01234567"}, "revision 0123456789ab"),
    ({"weights_sha256": None, "revision": None}, "weights unrecorded"),
    ({}, "weights unrecorded"),  # a record from before fingerprints
    ({"weights_sha256": "", "revision": ""}, "weights unrecorded"),
]


@pytest.mark.parametrize(("fields", "shown"), SHOWN_WEIGHTS)
def test_listings_show_the_weights_short(fields, shown):
    from types import SimpleNamespace

    from fiftyone_florence2.runs.records import short_weights

    assert short_weights(SimpleNamespace(**fields)) == shown


class _Killed(BaseException):
    """Stands for the process dying at that point (nothing after it runs)."""


def _cut(monkeypatch, target, name):
    def die(*args, **kwargs):
        raise _Killed

    monkeypatch.setattr(target, name, die)


@pytest.mark.parametrize("cut", ["before the record points to the new results", "before the old ones are deleted"])
def test_results_stay_readable_when_a_save_is_cut_short(dataset, monkeypatch, cut):
    """A kill at any step of storing a run's progress leaves results that read back (the earlier or the
    new ones); FiftyOne's own save deleted the old results first, and a kill there left them unreadable."""
    import fiftyone.core.runs as fors

    from fiftyone_florence2.runs.records import load_results, save_results

    key = register_running(dataset, new_run_key("x"), "florence2")
    save_results(dataset, key, dataset.init_run_results(key, labelled=1))
    run_doc = fors.Run._get_run_doc(dataset, key)
    if cut.startswith("before the record"):
        _cut(monkeypatch, type(run_doc), "save")
    else:
        _cut(monkeypatch, type(run_doc.results.fs), "delete")
    with pytest.raises(_Killed):
        save_results(dataset, key, dataset.init_run_results(key, labelled=2))
    monkeypatch.undo()
    fresh = fo.load_dataset(dataset.name)
    fresh.reload()
    expected = 1 if cut.startswith("before the record") else 2
    assert load_results(fresh, key).labelled == expected
    assert list_runs(fresh) == [key]


def test_results_a_kill_cut_short_are_reported_not_raised(dataset, monkeypatch):
    """A record whose results were lost (FiftyOne's save killed between its delete and its write) lists,
    and reads as no results, instead of failing every listing."""
    import fiftyone.core.runs as fors

    from fiftyone_florence2.runs.records import load_results

    key = register_running(dataset, new_run_key("x"), "florence2")
    dataset.save_run_results(key, dataset.init_run_results(key, labelled=1))
    fors.Run._get_run_doc(dataset, key).results.fs.delete(fors.Run._get_run_doc(dataset, key).results.grid_id)
    fresh = fo.load_dataset(dataset.name)
    assert load_results(fresh, key) is None
    assert list_runs(fresh) == [key] and run_failures(fresh, key) == {}
