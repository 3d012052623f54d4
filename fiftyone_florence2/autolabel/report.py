"""A calibration's result: per class and overall, what the slice says about the confidences, and the
thresholds picked; stored as JSON in the run's results and read back by ``load_calibration``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fiftyone_florence2.core.calibration import (
    Bin,
    CurvePoint,
    Knots,
    Scored,
    choose_threshold,
    cross_fitted,
    expected_calibration_error,
    fit_isotonic,
    precision_interval,
    precision_recall_curve,
    reliability_bins,
)
from fiftyone_florence2.core.thresholds import ANY_CLASS


@dataclass(frozen=True)
class ClassReport:
    """One class (or ``"*"``, every class together) on the slice.

    Attributes:
        name: the class, or ``"*"`` for the overall report
        predictions: labels with a confidence; ``unscored``: labels without one (never accepted)
        right: predictions that matched the ground truth
        ground_truth: ground-truth objects (or samples, for classifications), found or not
        bins, ece: the reliability table and the expected calibration error
        curve: precision and recall of accepting every label at or above each confidence
        threshold: the threshold this class gets (its own, the overall one when ``fallback``, or 1 when the
            target is not reachable); ``reached``: whether its own curve reaches the target
        precision, recall, interval: at ``threshold``, on the slice (interval: 90%, for the precision)
        best: where the target is not reached, the best precision seen (its threshold, precision, recall)
        fallback: why this class takes the overall threshold (and the overall mapping), or None
        mapping: the recalibration mapping this class gets (isotonic, knots ``[raw, calibrated]``; its own, or the
            overall one when ``fallback``), None without labels or in a calibration recorded before mappings
        ece_recalibrated: the ECE of recalibrated confidences, cross-fitted on the slice (each fifth of its labels
            through a mapping fitted on the other four fifths; for a class that falls back, the overall mapping's
            fifths); None with fewer than 10 labels
    """

    name: str
    predictions: int
    unscored: int
    right: int
    ground_truth: int
    bins: list[Bin]
    ece: float | None
    curve: list[CurvePoint]
    threshold: float
    reached: bool
    precision: float | None
    recall: float | None
    interval: tuple[float, float] | None
    best: CurvePoint | None
    fallback: str | None = None
    mapping: Knots | None = None
    ece_recalibrated: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassReport:
        d = dict(d)
        d["bins"] = [Bin(**b) for b in d["bins"]]
        d["curve"] = [CurvePoint(**p) for p in d["curve"]]
        d["best"] = CurvePoint(**d["best"]) if d["best"] else None
        d["interval"] = tuple(d["interval"]) if d["interval"] else None
        d["mapping"] = [tuple(knot) for knot in d["mapping"]] if d.get("mapping") else None
        return cls(**d)

    def describe(self) -> str:
        """One line: the class's threshold and what it gives on the slice."""
        name = "overall" if self.name == ANY_CLASS else self.name
        ece = "-" if self.ece is None else f"{self.ece:.3f}"
        if self.ece_recalibrated is not None:
            ece += f" (recalibrated {self.ece_recalibrated:.3f})"
        head = f"{name}: {self.predictions} labels, {self.right} right, {self.ground_truth} true, ECE {ece}"
        if self.fallback:
            return f"{head}; takes the overall threshold ({self.fallback})"
        if not self.reached:
            best = self.best
            seen = f"best precision seen {best.precision:.3f} at {best.threshold:.3f}" if best else "no labels"
            return f"{head}; target not reachable ({seen}): threshold 1, nothing accepted without review"
        recall = "-" if self.recall is None else f"{self.recall:.3f}"
        low, high = self.interval or (0, 0)
        return (
            f"{head}; threshold {self.threshold:.3f}: precision {self.precision:.3f} "
            f"(90%: {low:.2f}-{high:.2f}), recall {recall}"
        )


def class_report(name: str, scored: Sequence[Scored], unscored: int, ground_truth: int, target: float,
                 bins: int, min_accepted: int = 1) -> ClassReport:  # fmt: skip
    """The report of one class from its scored labels (``(confidence, right)``); a threshold counts only when
    it accepts at least ``min_accepted`` of them."""
    table = reliability_bins(scored, bins)
    curve = precision_recall_curve(scored, ground_truth)
    choice = choose_threshold(curve, target, min_accepted)
    point = choice.point
    return ClassReport(
        name=name,
        predictions=len(scored),
        unscored=unscored,
        right=sum(1 for _, right in scored if right),
        ground_truth=ground_truth,
        bins=table,
        ece=expected_calibration_error(table),
        curve=curve,
        threshold=choice.threshold,
        reached=choice.reached,
        precision=choice.precision,
        recall=choice.recall,
        interval=precision_interval(point.right, point.accepted) if point else None,
        best=None if choice.reached else choice.best,
        **_recalibration(scored, bins),
    )


def _recalibration(scored: Sequence[Scored], bins: int) -> dict[str, Any]:
    """The mapping fitted on ``scored``, and the ECE of ``scored`` recalibrated out of sample (cross-fitted)."""
    return {"mapping": fit_isotonic(scored), "ece_recalibrated": _ece_of(cross_fitted(scored), bins)}


def _ece_of(scored: Sequence[Scored] | None, bins: int) -> float | None:
    return expected_calibration_error(reliability_bins(scored, bins)) if scored else None


def fall_back(report: ClassReport, overall: ClassReport, min_per_class: int, out_of_sample: Sequence[Scored] | None,
              bins: int) -> ClassReport:  # fmt: skip
    """``report`` taking the overall threshold and mapping, when its class has fewer than ``min_per_class``
    labels. ``out_of_sample``: its labels recalibrated by overall mappings fitted without them (cross-fitted
    over every class), for its recalibrated ECE."""
    if report.predictions >= min_per_class:
        return report
    reason = f"{report.predictions} labels on the slice, fewer than {min_per_class}"
    return dataclasses.replace(report, threshold=overall.threshold, fallback=reason, mapping=overall.mapping,
                               ece_recalibrated=_ece_of(out_of_sample, bins))  # fmt: skip


@dataclass
class Calibration:
    """The result of :func:`~fiftyone_florence2.autolabel.calibrate.calibrate`.

    ``thresholds`` passes straight to ``confidence_thresh`` (and to the review queue): each class with
    enough labels on the slice at its own threshold, ``"*"`` (every other class) at the overall one.
    """

    key: str
    settings: dict[str, Any]
    overall: ClassReport
    per_class: dict[str, ClassReport] = field(default_factory=dict)

    @property
    def thresholds(self) -> dict[str, float]:
        own = {name: r.threshold for name, r in sorted(self.per_class.items()) if r.fallback is None}
        return {**own, ANY_CLASS: self.overall.threshold}

    @property
    def mappings(self) -> dict[str, Knots] | None:
        """The recalibration mappings, keyed as ``thresholds`` (the same classes fall back to ``"*"``); None
        for a calibration recorded before mappings were fitted, or without labels."""
        if self.overall.mapping is None:
            return None
        own = {name: r.mapping for name, r in sorted(self.per_class.items()) if r.fallback is None and r.mapping}
        return {**own, ANY_CLASS: self.overall.mapping}

    def describe(self) -> str:
        """Lines for a person: the slice, each class, and the thresholds."""
        s = self.settings
        lines = [
            f"Calibration {self.key}: {s['pred_field']} against {s['gt_field']} on {s['samples']} sample(s) "
            f"(IoU {s['iou']}, target precision {s['target_precision']})",
            self.overall.describe(),
            *(report.describe() for _, report in sorted(self.per_class.items())),
            "Thresholds: " + ", ".join(f"{name}={value:.4g}" for name, value in self.thresholds.items()),
        ]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "settings": self.settings,
            "overall": self.overall.as_dict(),
            "per_class": {name: report.as_dict() for name, report in self.per_class.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        per_class = {name: ClassReport.from_dict(r) for name, r in d["per_class"].items()}
        return cls(d["key"], dict(d["settings"]), ClassReport.from_dict(d["overall"]), per_class)

    def save_plot(self, path: str, overwrite: bool = False) -> str:
        """Saves the reliability diagram and the precision/recall panel as a PNG at ``path``; an existing
        file is refused unless ``overwrite``."""
        from fiftyone_florence2.autolabel.plot import save_png

        return save_png(self, path, overwrite)

    def png_data_uri(self) -> str:
        """The same diagram as a ``data:image/png;base64,...`` URI (the App's operator output shows it)."""
        from fiftyone_florence2.autolabel.plot import png_data_uri

        return png_data_uri(self)
