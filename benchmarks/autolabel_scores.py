"""The auto-labelling benchmark's scores, from matched labels: no FiftyOne.

A matched label is one predicted label with its confidence and whether it matched a true object (IoU at least
the benchmark's, same class). From a list of them: the AUROC of confidence for right against wrong, the expected
calibration error of the raw confidences (the product's own, ``core/calibration.py``), and what a set of
accepted labels gives (precision, coverage).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Matched:
    """One predicted label: its class, its confidence (0 to 1) and whether it is right."""

    label: str
    confidence: float
    right: bool


def auroc(matched: Sequence[Matched]) -> float | None:
    """The chance that a right label's confidence beats a wrong one's (ties count half); None without both kinds.

    The rank-sum (Mann-Whitney) form: one sort, average ranks for ties.
    """
    right = sum(m.right for m in matched)
    wrong = len(matched) - right
    if not right or not wrong:
        return None
    ordered = sorted(matched, key=lambda m: m.confidence)
    rank_sum, i = 0.0, 0
    while i < len(ordered):
        j = i
        while j < len(ordered) and ordered[j].confidence == ordered[i].confidence:
            j += 1
        mean_rank = (i + 1 + j) / 2  # ranks i+1..j share their mean
        rank_sum += mean_rank * sum(m.right for m in ordered[i:j])
        i = j
    return (rank_sum - right * (right + 1) / 2) / (right * wrong)


def raw_calibration_error(matched: Sequence[Matched], bins: int = 10) -> float | None:
    """The product's expected calibration error of the raw confidences, over ``bins`` equal-width bins."""
    from fiftyone_florence2.core.calibration import expected_calibration_error, reliability_bins

    return expected_calibration_error(reliability_bins(scored(matched), bins))


def recalibrated_error(matched: Sequence[Matched], knots, bins: int = 10) -> float | None:
    """The expected calibration error of the confidences passed through a calibration's mapping ``knots``
    (``[raw, calibrated]`` pairs; None without a mapping)."""
    from fiftyone_florence2.core.calibration import expected_calibration_error, recalibrated, reliability_bins

    if not knots or not matched:
        return None
    return expected_calibration_error(reliability_bins(recalibrated(scored(matched), knots), bins))


def scored(matched: Sequence[Matched]) -> list[tuple[float, bool]]:
    """The ``(confidence, right)`` pairs of ``fiftyone_florence2.core.calibration``."""
    return [(m.confidence, m.right) for m in matched]


@dataclass(frozen=True)
class Acceptance:
    """What accepting some labels without review gives, on samples the calibration never saw."""

    accepted: int  # labels accepted without review
    accepted_right: int
    objects: int  # true objects on those samples
    labels: int  # every predicted label on those samples

    @property
    def precision(self) -> float | None:
        return self.accepted_right / self.accepted if self.accepted else None

    @property
    def coverage(self) -> float | None:
        """The share of true objects that an accepted label found."""
        return self.accepted_right / self.objects if self.objects else None


def acceptance(matched: Sequence[Matched], accepted: Sequence[bool], objects: int) -> Acceptance:
    """Scores the labels flagged ``accepted`` (one flag per matched label) against ``objects`` true objects."""
    if len(accepted) != len(matched):
        raise ValueError(f"Need one accepted flag per label, got {len(accepted)} for {len(matched)}.")
    taken = [m for m, ok in zip(matched, accepted) if ok]
    return Acceptance(len(taken), sum(m.right for m in taken), objects, len(matched))


def percent(value: float | None, places: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{places}%}"


def number(value: float | None, places: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{places}f}"
