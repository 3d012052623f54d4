"""``calibrate``: how far a field's confidences can be trusted, measured on samples whose ground truth a
person has checked, and the thresholds that reach a target precision; recorded as a run on the dataset.

Boxes and polygons are matched with FiftyOne's own ``evaluate_detections`` (at the IoU given, a match
needing the same class); its evaluation is deleted again before ``calibrate`` returns, so it leaves
only its own run record. A classification is right when its text is the ground truth's.
"""

from __future__ import annotations

import secrets
from collections import Counter, defaultdict
from typing import Any

import fiftyone.core.labels as fol

from fiftyone_florence2.autolabel.plot import check_plot_path
from fiftyone_florence2.autolabel.report import Calibration, class_report, fall_back
from fiftyone_florence2.core.calibration import Scored, cross_fitted
from fiftyone_florence2.core.calibration_options import CALIBRATE, CALIBRATE_OPTIONS
from fiftyone_florence2.core.errors import OptionError, literal, named
from fiftyone_florence2.core.thresholds import ANY_CLASS
from fiftyone_florence2.core.version import __version__
from fiftyone_florence2.runs.records import CALIBRATE_METHOD, list_runs, new_run_key, now_iso, save_results

# The label types a calibration reads, and the list each keeps its instances in (None: one label).
_INSTANCES: dict[type, str | None] = {fol.Detections: "detections", fol.Polylines: "polylines",
                                      fol.Classification: None}  # fmt: skip


LABEL_TYPES = tuple(_INSTANCES)


def _refuse(template: str, *names: str) -> OptionError:
    return OptionError(template, *(CALIBRATE[name] for name in names))


def _label_type(samples: Any, name: str, value: str) -> type:
    """The label type of field ``value`` (option ``name``), refused unless calibrate reads it."""
    field = samples.get_field(value)
    if field is None:
        raise _refuse(f"{named(name)} {literal(repr(value))} is not a field of this dataset.", name)
    kind = getattr(field, "document_type", None)
    if kind not in _INSTANCES:
        what = kind.__name__ if isinstance(kind, type) else type(field).__name__
        raise _refuse(
            f"{named(name)} {literal(repr(value))} holds {literal(what)}; calibrate reads Detections, Polylines "
            "or Classification fields.",
            name,
        )
    return kind


def read_options(**given: Any) -> dict[str, Any]:
    """Every option checked, with its default where not given; unknown names raise ``TypeError``."""
    unknown = sorted(set(given) - set(CALIBRATE))
    if unknown:
        raise TypeError(f"calibrate() got unknown option(s) {', '.join(unknown)}.")
    values = {option.name: option.read(given.get(option.name)) for option in CALIBRATE_OPTIONS}
    for name in ("pred_field", "gt_field"):
        if values[name] is None:
            raise _refuse(f"{named(name)} is required.", name)
    return values


def check_calibration(samples: Any, values: dict[str, Any]) -> tuple[type, Any]:
    """Refuses what cannot be calibrated, writing nothing; returns the label type and the samples that have
    ground truth."""
    dataset = samples._root_dataset
    if samples.media_type != "image":
        raise ValueError(f"calibrate reads image samples; this collection holds {samples.media_type} samples.")
    if samples.count() == 0:
        raise ValueError("The view holds no samples: choose samples whose ground truth a person has checked.")
    pred_type, gt_type = (_label_type(samples, name, values[name]) for name in ("pred_field", "gt_field"))
    if pred_type is not gt_type:
        raise _refuse(
            f"{named('pred_field')} holds {pred_type.__name__} and {named('gt_field')} {gt_type.__name__}: "
            "calibrate compares labels of one type.",
            "pred_field",
            "gt_field",
        )
    reviewed = samples.exists(values["gt_field"])
    path = values["gt_field"] if _INSTANCES[gt_type] is None else f"{values['gt_field']}.{_INSTANCES[gt_type]}"
    if reviewed.count(path + (".label" if _INSTANCES[gt_type] is None else "")) == 0:
        raise _refuse(
            f"{named('gt_field')} {literal(repr(values['gt_field']))} holds no ground truth on these samples: "
            "calibrate on samples a person has checked.",
            "gt_field",
        )
    key = values["key"]
    if key is not None and key in dataset.list_runs():
        method = dataset.get_run_info(key).config.method
        if method != CALIBRATE_METHOD:
            raise _refuse(f"{named('key')} {literal(repr(key))} is the key of another run: choose another.", "key")
        if not values["overwrite"]:
            raise _refuse(
                f"A calibration {literal(repr(key))} exists already: choose another {named('key')}, or set "
                "{overwrite:True} to replace it.",
                "key",
                "overwrite",
            )
    if values["plot_path"] is not None:
        try:
            values["plot_path"] = check_plot_path(values["plot_path"], values["overwrite"])
        except ValueError as e:  # worded for Python: each route names its own controls
            template = literal(e).replace("plot_path", named("plot_path")).replace("overwrite=True", "{overwrite:True}")
            raise _refuse(template, "plot_path", "overwrite") from None
    return gt_type, reviewed


def _detections_scored(samples: Any, pred: str, gt: str, kind: type, iou: float):
    """Matches with FiftyOne's ``evaluate_detections`` under a temporary key, deleted again in any case."""
    dataset, items = samples._root_dataset, _INSTANCES[kind]
    eval_key = f"florence2_calibrate_tmp_{secrets.token_hex(4)}"
    try:
        samples.evaluate_detections(pred, gt_field=gt, eval_key=eval_key, iou=iou, classwise=True, progress=False)
        labels, confidences, outcomes, truths = samples.values(
            [f"{pred}.{items}.label", f"{pred}.{items}.confidence", f"{pred}.{items}.{eval_key}",
             f"{gt}.{items}.label"]
        )  # fmt: skip
    finally:
        if eval_key in dataset.list_evaluations():
            dataset.delete_evaluation(eval_key)
    flat = lambda rows: [x for row in rows or [] for x in (row or [])]  # noqa: E731
    predictions = zip(flat(labels), flat(confidences), flat(outcomes))
    return [(label, confidence, outcome == "tp") for label, confidence, outcome in predictions], flat(truths)


def _classifications_scored(samples: Any, pred: str, gt: str):
    labels, confidences, truths = samples.values([f"{pred}.label", f"{pred}.confidence", f"{gt}.label"])
    predictions = [
        (label, confidence, label == truth)
        for label, confidence, truth in zip(labels, confidences, truths)
        if label is not None
    ]
    return predictions, [truth for truth in truths if truth is not None]


def score(samples: Any, pred: str, gt: str, kind: type, iou: float):
    """``(label, confidence, right)`` for each prediction, and the ground-truth classes (one per object)."""
    if _INSTANCES[kind] is None:
        return _classifications_scored(samples, pred, gt)
    return _detections_scored(samples, pred, gt, kind, iou)


def build_calibration(key: str, settings: dict[str, Any], predictions, truths) -> Calibration:
    """The per-class and overall reports of scored predictions."""
    target, bins, fewest = settings["target_precision"], settings["bins"], settings["min_per_class"]
    min_accepted = settings.get("min_accepted", 1)  # calibrations recorded before it was an option
    scored: dict[str | None, list[Scored]] = defaultdict(list)
    unscored: Counter = Counter()
    for label, confidence, right in predictions:
        if confidence is None:
            unscored[label] += 1
        else:
            scored[label].append((float(confidence), bool(right)))
    counts = Counter(truths)
    everything = [item for items in scored.values() for item in items]
    names = [name for name, items in scored.items() for _ in items]
    overall = class_report(ANY_CLASS, everything, sum(unscored.values()), len(truths), target, bins, min_accepted)
    out_of_sample = cross_fitted(everything) or []
    classes = sorted({c for c in (*scored, *unscored, *counts) if c is not None and c != ANY_CLASS})
    per_class = {}
    for c in classes:
        own = [item for item, name in zip(out_of_sample, names) if name == c]
        report = class_report(c, scored[c], unscored[c], counts[c], target, bins, min_accepted)
        per_class[c] = fall_back(report, overall, fewest, own, bins)
    return Calibration(key, settings, overall, per_class)


def labelling_run(dataset: Any, field: str) -> str | None:
    """The key of the latest labelling run that wrote ``field``, if one is recorded."""
    for key in reversed(list_runs(dataset)):
        config = dataset.get_run_info(key).config
        tasks = getattr(config, "tasks", None) or []
        prefix = getattr(config, "label_field", None)
        fields = [prefix] if len(tasks) <= 1 else [f"{prefix}_{task}" for task in tasks]
        if field in fields:
            return key
    return None


def calibrate(samples: Any, pred_field: str, gt_field: str, **options: Any) -> Calibration:
    """Measures how far ``pred_field``'s confidences can be trusted on ``samples`` (a view whose
    ``gt_field`` a person has checked), picks thresholds and records the calibration on the dataset.

    Args:
        samples: the reviewed slice (a dataset or view); samples without ``gt_field`` are left out
        pred_field: a Detections, Polylines or Classification field of predictions with confidences
        gt_field: the ground truth, of the same type
        iou (0.5): the IoU at which a box or polygon matches
        target_precision (0.95): the precision the thresholds must reach
        bins (10): confidence bins of the reliability table
        min_per_class (50): a class with fewer predictions takes the overall threshold
        min_accepted (20): a threshold must accept at least this many slice labels to reach the target
        key (None): the run key (default ``florence2_calibrate_<time>_<pred_field>``)
        plot_path (None): save the diagram as a PNG here (an existing file is refused unless ``overwrite``)
        overwrite (False): replace a calibration recorded under ``key``, and the plot file

    Returns:
        a :class:`~fiftyone_florence2.autolabel.report.Calibration`; ``thresholds`` passes straight to
        ``confidence_thresh``. Bad inputs raise ``ValueError`` before anything is written.
    """
    values = read_options(pred_field=pred_field, gt_field=gt_field, **options)
    kind, reviewed = check_calibration(samples, values)
    dataset = samples._root_dataset
    predictions, truths = score(reviewed, values["pred_field"], values["gt_field"], kind, values["iou"])
    key = values["key"] or new_run_key(values["pred_field"].replace(".", "_"), CALIBRATE_METHOD)
    settings = {
        **{name: values[name] for name in ("pred_field", "gt_field", "iou", "target_precision", "bins",
                                           "min_per_class", "min_accepted")},
        "label_type": kind.__name__,
        "label_run": labelling_run(dataset, values["pred_field"]),
        "samples": reviewed.count(),
        "left_out": samples.count() - reviewed.count(),
    }  # fmt: skip
    calibration = build_calibration(key, settings, predictions, truths)
    if values["plot_path"] is not None:
        calibration.save_plot(values["plot_path"], overwrite=values["overwrite"])
    record(samples, calibration, values["overwrite"])
    return calibration


def record(samples: Any, calibration: Calibration, overwrite: bool) -> None:
    """Registers the calibration as a run on ``samples`` (its view kept), its thresholds in the config
    and the full report in the results."""
    dataset = samples._root_dataset
    if overwrite and calibration.key in dataset.list_runs():
        dataset.delete_run(calibration.key)
    config = samples.init_run(
        method=CALIBRATE_METHOD,
        plugin_version=__version__,
        status="completed",
        started_at=now_iso(),
        thresholds=calibration.thresholds,
        **calibration.settings,
    )
    samples.register_run(calibration.key, config, overwrite=False)
    report = {name: value for name, value in calibration.as_dict().items() if name != "key"}  # the run's own key
    save_results(samples, calibration.key, samples.init_run_results(calibration.key, **report))


def load_calibration(dataset: Any, key: str) -> Calibration:
    """The calibration recorded under ``key``; any other key raises ``ValueError`` naming those there are."""
    dataset.reload()
    keys = dataset.list_runs(method=CALIBRATE_METHOD)
    if key not in keys:
        raise ValueError(f"No calibration {key!r} on {dataset.name!r}; calibrations: {', '.join(keys) or 'none'}.")
    results = dataset.load_run_results(key, cache=False, load_view=False)
    return Calibration.from_dict({"key": key, **{name: getattr(results, name) for name in ("settings", "overall",
                                                                                           "per_class")}})  # fmt: skip
