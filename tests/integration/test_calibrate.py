"""calibrate on reviewed slices built with known confidences and known right and wrong labels (no model):
bins, calibration error, thresholds and recall against hand-computed values; refusals that write nothing;
thresholds from a 10% slice that hold on the other 90%; the CLI and the App operator (its output shows the diagram)."""

from __future__ import annotations

import base64
import json

import fiftyone as fo
import fiftyone.core.labels as fol
import fiftyone.operators as foo
import pytest
from helpers.calibration_data import detections_dataset, noisy_rows
from helpers.operators import PLUGIN

import fiftyone_florence2 as f2
from benchmarks.autolabel import slice_positions
from fiftyone_florence2.cli import main

# Seven predictions of one class, four right, and one object nothing found: 5 true objects.
EIGHT = [[("car", 0.95, True)], [("car", 0.9, True)], [("car", 0.85, False)], [("car", 0.6, True)],
         [("car", 0.55, False)], [("car", 0.3, False)], [("car", 0.1, True)], [("car", None, None)]]  # fmt: skip


@pytest.fixture
def eight():
    dataset = detections_dataset(EIGHT)
    yield dataset
    dataset.delete()


def _state(dataset) -> str:
    dataset.reload()
    return json.dumps(
        {"runs": dataset.list_runs(), "evaluations": dataset.list_evaluations(),
         "schema": sorted(dataset.get_field_schema(flat=True)), "views": dataset.list_saved_views()}
    )  # fmt: skip


def test_boxes_against_hand_computed_values_leaving_only_the_run_record(eight, tmp_path):
    before = json.loads(_state(eight))
    result = f2.calibrate(eight, "pred", "gt", bins=4, target_precision=0.95, min_per_class=1, min_accepted=1,
                          plot_path=str(tmp_path / "d.png"))  # fmt: skip
    overall = result.overall
    assert [(b.count, b.mean_confidence, b.accuracy) for b in overall.bins] == [
        (1, pytest.approx(0.1), 1.0), (1, pytest.approx(0.3), 0.0), (2, pytest.approx(0.575), 0.5),
        (3, pytest.approx(0.9), pytest.approx(2 / 3)),
    ]  # fmt: skip
    assert overall.ece == pytest.approx(2.05 / 7)
    assert (overall.predictions, overall.right, overall.ground_truth) == (7, 4, 5)
    assert (overall.threshold, overall.reached, overall.precision) == (0.9, True, 1.0)
    assert overall.recall == pytest.approx(2 / 5)  # the object never found counts
    assert [p.recall for p in overall.curve][-1] == pytest.approx(4 / 5)
    assert result.thresholds == {"car": 0.9, "*": 0.9}
    after = json.loads(_state(eight))
    assert after["runs"] == [result.key] and after["evaluations"] == [] and after["schema"] == before["schema"]
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = f2.load_calibration(eight, result.key)
    assert (loaded.thresholds, loaded.overall, loaded.settings) == (result.thresholds, overall, result.settings)
    config = eight.get_run_info(result.key).config
    assert (config.pred_field, config.gt_field, config.iou, config.thresholds) == ("pred", "gt", 0.5, result.thresholds)


def test_a_target_no_threshold_reaches_accepts_nothing_and_says_the_best_seen(eight):
    rows = [[("car", 0.8, False)], [("car", 0.7, True)], [("car", 0.6, False)]]
    dataset = detections_dataset(rows)
    result = f2.calibrate(dataset, "pred", "gt", target_precision=0.9, min_per_class=1, min_accepted=1)
    assert (result.overall.reached, result.overall.threshold) == (False, 1.0)
    assert (result.overall.best.threshold, result.overall.best.precision) == (0.7, 0.5)
    assert "target not reachable (best precision seen 0.500 at 0.700)" in result.describe()
    dataset.delete()


def test_classifications_match_by_their_text_and_samples_without_ground_truth_are_left_out():
    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(filepath=f"/c/{i}.png") for i in range(5)])
    dataset.set_values(
        "pred",
        [
            fol.Classification(label=t, confidence=c)
            for t, c in [("cat", 0.9), ("cat", 0.8), ("dog", 0.7), ("dog", 0.4), ("cat", 0.99)]
        ],
    )
    dataset.set_values("gt", [fol.Classification(label=t) for t in ["cat", "dog", "dog", "cat"]] + [None])
    result = f2.calibrate(dataset, "pred", "gt", target_precision=1.0, min_per_class=2, min_accepted=1)
    assert (result.settings["samples"], result.settings["left_out"]) == (4, 1)
    assert (result.per_class["cat"].predictions, result.per_class["cat"].right) == (2, 1)
    assert (result.per_class["dog"].threshold, result.per_class["dog"].recall) == (0.7, 0.5)
    assert (result.per_class["cat"].threshold, result.per_class["cat"].recall) == (0.9, 0.5)
    assert result.thresholds == {"cat": 0.9, "dog": 0.7, "*": 0.9}
    dataset.delete()


def test_a_class_with_too_few_labels_takes_the_overall_threshold_and_says_so():
    rows = [[("car", 0.9 - i / 100, i % 4 != 3)] for i in range(40)] + [[("bus", 0.5, True)], [("bus", 0.4, False)]]
    dataset = detections_dataset(rows)
    result = f2.calibrate(dataset, "pred", "gt", target_precision=0.9, min_per_class=10, min_accepted=1)
    bus = result.per_class["bus"]
    assert bus.fallback == "2 labels on the slice, fewer than 10" and bus.threshold == result.overall.threshold
    assert "bus" not in result.thresholds and "car" in result.thresholds
    assert "bus: 2 labels, 1 right, 1 true" in result.describe() and "takes the overall threshold" in result.describe()
    config = f2.Florence2ModelConfig({"task": "detection", "confidence_thresh": result.thresholds})
    assert config.settings()["generation"]["confidence_thresh"] == result.thresholds  # passes straight on
    dataset.delete()


def _bad_inputs_dataset():
    dataset = detections_dataset(EIGHT)
    dataset.set_values("empty_gt", [fol.Detections()] * len(dataset))
    dataset.set_values("cls", [fol.Classification(label="car", confidence=0.5)] * len(dataset))
    dataset.set_values("text", ["car"] * len(dataset))
    dataset.set_values("lines", [fol.Polylines()] * len(dataset))
    return dataset


BAD = [
    ({"gt_field": "nope"}, "gt_field 'nope' is not a field of this dataset."),
    ({"gt_field": "empty_gt"}, "gt_field 'empty_gt' holds no ground truth on these samples"),
    ({"pred_field": "text"}, "pred_field 'text' holds StringField; calibrate reads Detections, Polylines"),
    ({"gt_field": "text"}, "gt_field 'text' holds StringField"),
    ({"gt_field": "cls"}, "pred_field holds Detections and gt_field Classification"),
    ({"gt_field": "lines"}, "pred_field holds Detections and gt_field Polylines"),
    ({"target_precision": 0}, "target_precision must be above 0 and at most 1, got 0."),
    ({"target_precision": 1.2}, "target_precision must be above 0 and at most 1"),
    ({"bins": 0}, "bins must be a whole number of at least 1, got 0."),
    ({"iou": 0}, "iou must be above 0 and at most 1, got 0."),
    ({"iou": 1.5}, "iou must be above 0 and at most 1"),
    ({"key": "a b"}, "key must be a field name"),
    ({"plot_path": "{tmp}/taken.png"}, "exists already: choose another plot_path, or pass overwrite=True"),
    ({"plot_path": "{tmp}/d.jpg"}, "plot_path must end in .png"),
    ({"plot_path": "/no/such/folder/d.png"}, "The folder of plot_path"),
    ({"view": "empty"}, "The view holds no samples"),
    ({"colour": "red"}, "unknown option(s) colour"),
]


@pytest.mark.parametrize(("change", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_bad_inputs_are_refused_in_one_line_and_write_nothing(tmp_path, change, message):
    dataset = _bad_inputs_dataset()
    (tmp_path / "taken.png").write_bytes(b"mine")
    args = {"pred_field": "pred", "gt_field": "gt", **change}
    samples = dataset.limit(0) if args.pop("view", None) else dataset
    if "plot_path" in args:
        args["plot_path"] = args["plot_path"].replace("{tmp}", str(tmp_path))
    before = _state(dataset)
    try:
        with pytest.raises((ValueError, TypeError)) as error:
            f2.calibrate(samples, args.pop("pred_field"), args.pop("gt_field"), **args)
        assert message in str(error.value) and "\n" not in str(error.value)
        assert _state(dataset) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.png"]
        assert (tmp_path / "taken.png").read_bytes() == b"mine"
    finally:
        dataset.delete()


def test_a_key_taken_is_refused_unless_overwrite_which_replaces_only_that_calibration(eight):
    first = f2.calibrate(eight, "pred", "gt", key="cal", min_per_class=1, min_accepted=1, target_precision=0.5)
    with pytest.raises(ValueError, match="A calibration 'cal' exists already: choose another key, or set overwrite"):
        f2.calibrate(eight, "pred", "gt", key="cal")
    again = f2.calibrate(
        eight, "pred", "gt", key="cal", overwrite=True, min_per_class=1, min_accepted=1, target_precision=0.95
    )
    assert eight.list_runs() == ["cal"] and first.thresholds != again.thresholds
    assert f2.load_calibration(eight, "cal").thresholds == again.thresholds


@pytest.fixture(scope="module")
def noisy():
    rows = noisy_rows(5000, seed=0)
    dataset = detections_dataset(rows)
    yield dataset, rows
    dataset.delete()


@pytest.mark.parametrize("target", [0.9, 0.95])
def test_thresholds_from_a_tenth_hold_on_the_other_nine_tenths(noisy, target):
    """The issue's check: accepted labels' precision on the 90% the calibration never saw is within 0.03 of
    the target (one prediction a sample; two classes, miscalibrated differently)."""
    dataset, rows = noisy
    ids = dataset.values("id")
    # From the seed alone: FiftyOne's take(seed=) also depends on each sample's random _rand, a new slice each run.
    slice_ = dataset.select([ids[i] for i in slice_positions(len(ids), 0.1, seed=1)])
    result = f2.calibrate(slice_, "pred", "gt", target_precision=target, key=f"cal_{int(target * 100)}")
    assert {"car", "dog", "*"} == set(result.thresholds)
    assert result.thresholds["car"] < result.thresholds["dog"]  # per class: car's confidences run low
    seen = set(slice_.values("id"))
    held_out = [row for sample_id, row in zip(dataset.values("id"), rows) if sample_id not in seen]
    thresholds = result.thresholds
    accepted = [right for row in held_out for label, c, right in row if c >= thresholds.get(label, thresholds["*"])]
    assert abs(sum(accepted) / len(accepted) - target) <= 0.03
    assert len(accepted) > 1000


def test_the_cli_prints_the_report_and_thresholds_and_keeps_a_users_file(eight, tmp_path, capsys):
    plot = tmp_path / "diagram.png"
    plot.write_bytes(b"mine")
    args = ["calibrate", "--dataset", eight.name, "--pred-field", "pred", "--gt-field", "gt", "--bins", "4",
            "--min-per-class", "1", "--min-accepted", "1", "--plot", str(plot)]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "exists already: choose another --plot, or pass --overwrite to replace it." in err
    assert plot.read_bytes() == b"mine" and eight.list_runs() == []
    assert main([*args, "--overwrite", "--key", "first"]) == 0
    out = capsys.readouterr().out
    assert "overall: 7 labels, 4 right, 5 true, ECE 0.293; threshold 0.900" in out
    assert "Label with these thresholds:  --confidence-thresh 'car=0.9,*=0.9'" in out
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert main(["runs", "--dataset", eight.name]) == 0
    assert "calibrates pred against gt on 8 sample(s) -> car=0.9,*=0.9" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-precision", "0"], "--target-precision must be above 0 and at most 1"),
        (["--gt-field", "nope"], "--gt-field 'nope' is not a field of this dataset."),
        (["--view", "nope"], "has no saved view 'nope'"),
    ],
)
def test_the_cli_refuses_bad_inputs_naming_its_flags(eight, capsys, args, message):
    base = {"--pred-field": "pred", "--gt-field": "gt"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    argv = ["calibrate", "--dataset", eight.name, *[x for pair in base.items() for x in pair]]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert eight.list_runs() == []


CALIBRATE_URI = f"{PLUGIN}/florence2_calibrate"


def test_the_operator_calibrates_the_view_and_its_output_holds_the_diagram(operator, eight):
    ctx = {"dataset": eight, "view": eight.limit(7), "params": {"pred_field": "pred", "gt_field": "gt", "bins": 4,
                                                                "min_per_class": 1, "min_accepted": 1}}  # fmt: skip
    result = foo.execute_operator(CALIBRATE_URI, ctx=ctx).result
    assert result["thresholds"] == {"car": 0.9, "*": 0.9}
    header, data = result["diagram"].split(",", 1)
    assert header == "data:image/png;base64" and base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert f2.load_calibration(eight, result["key"]).settings["samples"] == 7

    from fiftyone.operators.executor import ExecutionContext

    calibrator = foo.get_operator(CALIBRATE_URI)
    output = calibrator.resolve_output(ExecutionContext(request_params={"dataset_name": eight.name}))
    assert output is None  # no results yet: nothing to show
    ctx = ExecutionContext(request_params={"dataset_name": eight.name, "params": {}, "results": result})
    diagram = calibrator.resolve_output(ctx).type.properties["diagram"]
    assert type(diagram.view).__name__ == "ImageView"


def test_the_operator_form_shows_a_problem_in_the_apps_words(operator, eight):
    from fiftyone.operators.executor import ExecutionContext

    params = {"pred_field": "pred", "gt_field": "gt", "target_precision": 2}
    ctx = ExecutionContext(request_params={"dataset_name": eight.name, "params": params})
    problem = foo.get_operator(CALIBRATE_URI).resolve_input(ctx).type.properties["problem"]
    assert problem.invalid and problem.error_message.startswith('"Target precision" must be above 0 and at most 1')
