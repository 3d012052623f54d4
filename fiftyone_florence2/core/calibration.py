"""How far confidences can be trusted, from labels whose rightness is known. Standard library only.

A *scored* label is ``(confidence, right)``: a prediction and whether it matched the ground truth.
From a list of them (and the number of ground-truth objects, for recall) this module computes the
reliability table (equal-width confidence bins: count, mean confidence, accuracy), the expected
calibration error, the precision and recall of accepting every label at or above each threshold,
and the threshold that reaches a target precision with the most recall.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

Scored = tuple[float, bool]
# The z of a two-sided 90% interval: the precision interval reported beside a chosen threshold.
_Z90 = 1.645


@dataclass(frozen=True)
class Bin:
    """One confidence bin ``[lower, upper)`` (the last one includes 1): its labels, their mean
    confidence and the share of them that were right (both None when empty)."""

    lower: float
    upper: float
    count: int
    mean_confidence: float | None
    accuracy: float | None


@dataclass(frozen=True)
class CurvePoint:
    """Accepting every label with confidence >= ``threshold``: how many, how many right, precision, recall."""

    threshold: float
    accepted: int
    right: int
    precision: float
    recall: float | None


@dataclass(frozen=True)
class Choice:
    """The threshold picked for a target precision.

    ``reached``: whether some threshold's precision reaches the target; then ``threshold`` is the one of
    those with the most recall (ties: the highest). When not reached, ``threshold`` is 1 (accept nothing
    without review) and ``best`` is the point with the best precision seen (ties: the most recall).
    """

    target: float
    reached: bool
    threshold: float
    point: CurvePoint | None
    best: CurvePoint | None

    @property
    def precision(self) -> float | None:
        return self.point.precision if self.point else None

    @property
    def recall(self) -> float | None:
        return self.point.recall if self.point else None


def check_scored(scored: Sequence[Scored]) -> None:
    """Raises ``ValueError`` for a confidence outside [0, 1] (they are probabilities)."""
    for confidence, _ in scored:
        if not (isinstance(confidence, (int, float)) and 0 <= confidence <= 1):
            raise ValueError(f"Confidences must be numbers from 0 to 1, got {confidence!r}.")


def bin_index(confidence: float, bins: int) -> int:
    """The bin of ``confidence`` among ``bins`` equal bins of [0, 1] (1 falls in the last)."""
    return min(int(confidence * bins), bins - 1)


def reliability_bins(scored: Sequence[Scored], bins: int) -> list[Bin]:
    """The reliability table: ``bins`` equal-width bins of [0, 1], each with its count, mean confidence and
    accuracy."""
    if bins < 1:
        raise ValueError(f"bins must be a whole number of at least 1, got {bins!r}.")
    members: list[list[Scored]] = [[] for _ in range(bins)]
    for item in scored:
        members[bin_index(item[0], bins)].append(item)
    table = []
    for i, inside in enumerate(members):
        count = len(inside)
        mean = sum(c for c, _ in inside) / count if count else None
        accuracy = sum(1 for _, right in inside if right) / count if count else None
        table.append(Bin(i / bins, (i + 1) / bins, count, mean, accuracy))
    return table


def expected_calibration_error(table: Sequence[Bin]) -> float | None:
    """The count-weighted mean gap between each bin's accuracy and its mean confidence (None: no labels)."""
    total = sum(b.count for b in table)
    if not total:
        return None
    return sum(b.count / total * abs(b.accuracy - b.mean_confidence) for b in table if b.count)


def precision_recall_curve(scored: Sequence[Scored], ground_truth: int) -> list[CurvePoint]:
    """One point per distinct confidence, highest first: accepting every label at or above it.

    Recall is right labels over ``ground_truth`` (every true object, found or not); None without any.
    """
    ordered = sorted(scored, key=lambda item: -item[0])
    points, right = [], 0
    for i, (confidence, is_right) in enumerate(ordered):
        right += bool(is_right)
        if i + 1 < len(ordered) and ordered[i + 1][0] == confidence:
            continue  # a threshold accepts every label of the same confidence together
        recall = right / ground_truth if ground_truth else None
        points.append(CurvePoint(float(confidence), i + 1, right, right / (i + 1), recall))
    return points


def choose_threshold(curve: Sequence[CurvePoint], target: float, min_accepted: int = 1) -> Choice:
    """The threshold whose precision reaches ``target`` with the most recall, or "not reachable".

    A threshold counts only when it accepts at least ``min_accepted`` labels: a precision measured on one or
    two labels says next to nothing about the rest (1 of 1 right is a precision of 1).
    """
    if not 0 < target <= 1:
        raise ValueError(f"target_precision must be above 0 and at most 1, got {target!r}.")
    reaching = [p for p in curve if p.precision >= target and p.accepted >= min_accepted]
    supported = [p for p in curve if p.accepted >= min_accepted] or list(curve)
    best = max(supported, key=lambda p: (p.precision, p.right, p.threshold), default=None)
    if not reaching:
        return Choice(target, False, 1.0, None, best)
    point = max(reaching, key=lambda p: (p.right, p.threshold))
    return Choice(target, True, point.threshold, point, best)


def at_threshold(curve: Sequence[CurvePoint], threshold: float, ground_truth: int) -> CurvePoint:
    """What accepting labels at or above ``threshold`` gives (the curve's point, or nothing accepted)."""
    above = [p for p in curve if p.threshold >= threshold]
    if not above:
        return CurvePoint(threshold, 0, 0, 1.0, 0.0 if ground_truth else None)
    point = min(above, key=lambda p: p.threshold)
    return CurvePoint(threshold, point.accepted, point.right, point.precision, point.recall)


def precision_interval(right: int, accepted: int) -> tuple[float, float] | None:
    """A 90% (Wilson) interval of the precision behind ``right`` of ``accepted``: how far a precision
    measured on a slice may be from the precision on the rest."""
    if accepted <= 0:
        return None
    p, n, z2 = right / accepted, accepted, _Z90**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = _Z90 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


# A recalibration mapping: knots ``(raw confidence, calibrated confidence)``, both non-decreasing; between
# knots the calibrated value is interpolated linearly, outside them it is the nearest end's.
Knots = list[tuple[float, float]]


def _pooled_blocks(scored: Sequence[Scored]) -> list[list[float]]:
    """Pool-adjacent-violators: ``[lowest raw, highest raw, labels, right]`` blocks whose share right rises
    strictly. Equal confidences start in one block: a mapping cannot tell them apart."""
    blocks: list[list[float]] = []
    for confidence, right in sorted(scored, key=lambda item: item[0]):
        if blocks and blocks[-1][1] == confidence:
            blocks[-1][2] += 1
            blocks[-1][3] += bool(right)
        else:
            blocks.append([confidence, confidence, 1, float(bool(right))])
        # Merging equal shares too leaves the blocks' values strictly rising (fewer knots, same function).
        while len(blocks) > 1 and blocks[-2][3] / blocks[-2][2] >= blocks[-1][3] / blocks[-1][2]:
            low, _, count, right_count = blocks.pop(-2)
            blocks[-1] = [low, blocks[-1][1], blocks[-1][2] + count, blocks[-1][3] + right_count]
    return blocks


def fit_isotonic(scored: Sequence[Scored]) -> Knots | None:
    """The non-decreasing mapping from raw confidence to the share of labels right (isotonic regression by
    pool-adjacent-violators, each block flat over its confidences); None without labels."""
    check_scored(scored)
    knots: Knots = []
    for low, high, count, right in _pooled_blocks(scored):
        value = round(right / count, 6)
        knots.extend([(float(low), value)] if low == high else [(float(low), value), (float(high), value)])
    return knots or None


def apply_mapping(knots: Sequence[Sequence[float]], confidence: float | None) -> float | None:
    """``confidence`` through the mapping ``knots`` (None stays None: a label without a confidence)."""
    if confidence is None:
        return None
    if confidence <= knots[0][0]:
        return float(knots[0][1])
    for (x0, y0), (x1, y1) in itertools.pairwise(knots):
        if confidence <= x1:
            return float(y0 + (y1 - y0) * (confidence - x0) / (x1 - x0)) if x1 > x0 else float(y1)
    return float(knots[-1][1])


def recalibrated(scored: Sequence[Scored], knots: Sequence[Sequence[float]]) -> list[Scored]:
    """``scored`` with each confidence passed through ``knots``."""
    return [(apply_mapping(knots, confidence), right) for confidence, right in scored]


def cross_fitted(scored: Sequence[Scored], folds: int = 5) -> list[Scored] | None:
    """``scored`` recalibrated out of sample, in the same order: each of ``folds`` parts (a fixed shuffle)
    through a mapping fitted on the others. On its own slice a mapping is calibrated by construction (ECE 0),
    which says nothing; this is what the slice can say about unseen labels. None with fewer than two labels a
    part."""
    if len(scored) < 2 * folds:
        return None
    order = list(range(len(scored)))
    random.Random(0).shuffle(order)
    part = {index: position % folds for position, index in enumerate(order)}
    out: list[Scored] = list(scored)
    for fold in range(folds):
        knots = fit_isotonic([item for i, item in enumerate(scored) if part[i] != fold])
        for i in (i for i in range(len(scored)) if part[i] == fold):
            out[i] = (apply_mapping(knots, scored[i][0]), scored[i][1])
    return out
