"""The calibration maths against hand-computed values: reliability bins, calibration error, the
precision/recall curve and the threshold for a target precision."""

from __future__ import annotations

import pytest

from fiftyone_florence2.core.calibration import (
    CurvePoint,
    at_threshold,
    bin_index,
    choose_threshold,
    expected_calibration_error,
    precision_interval,
    precision_recall_curve,
    reliability_bins,
)

# Seven labels, four right; six true objects (two never found).
SEVEN = [(0.95, True), (0.9, True), (0.85, False), (0.6, True), (0.55, False), (0.3, False), (0.1, True)]


@pytest.mark.parametrize(
    ("confidence", "bins", "index"),
    [(0.0, 10, 0), (0.0999, 10, 0), (0.1, 10, 1), (0.95, 10, 9), (1.0, 10, 9), (1.0, 1, 0), (0.5, 2, 1)],
)
def test_bin_index_puts_one_in_the_last_bin(confidence, bins, index):
    assert bin_index(confidence, bins) == index


def test_reliability_bins_of_seven_labels():
    table = reliability_bins(SEVEN, 4)
    rows = [x for b in table for x in (b.lower, b.upper, b.count, b.mean_confidence, b.accuracy)]
    assert rows == pytest.approx(
        [0, 0.25, 1, 0.1, 1.0, 0.25, 0.5, 1, 0.3, 0.0, 0.5, 0.75, 2, 0.575, 0.5, 0.75, 1, 3, 0.9, 2 / 3]
    )
    # (1 * 0.9 + 1 * 0.3 + 2 * 0.075 + 3 * 0.2333) / 7
    assert expected_calibration_error(table) == pytest.approx(2.05 / 7)


@pytest.mark.parametrize(
    ("scored", "bins", "counts", "ece"),
    [
        ([], 10, [0] * 10, None),
        ([(0.5, True)], 1, [1], 0.5),
        ([(0.8, True), (0.8, True), (0.8, False), (0.8, True), (0.8, True)], 5, [0, 0, 0, 0, 5], 0.0),
        ([(1.0, False), (0.0, True)], 2, [1, 1], 1.0),
    ],
)
def test_reliability_of_empty_and_degenerate_slices(scored, bins, counts, ece):
    table = reliability_bins(scored, bins)
    assert [b.count for b in table] == counts
    assert all((b.accuracy is None) == (b.count == 0) for b in table)
    assert expected_calibration_error(table) == (None if ece is None else pytest.approx(ece))


@pytest.mark.parametrize("bins", [0, -3])
def test_bins_below_one_are_refused(bins):
    with pytest.raises(ValueError, match="bins must be a whole number of at least 1"):
        reliability_bins(SEVEN, bins)


def test_precision_recall_curve_counts_the_objects_never_found():
    curve = precision_recall_curve(SEVEN, ground_truth=6)
    assert [(p.threshold, p.accepted, p.right) for p in curve] == [
        (0.95, 1, 1), (0.9, 2, 2), (0.85, 3, 2), (0.6, 4, 3), (0.55, 5, 3), (0.3, 6, 3), (0.1, 7, 4)
    ]  # fmt: skip
    assert [p.precision for p in curve] == pytest.approx([1, 1, 2 / 3, 3 / 4, 3 / 5, 1 / 2, 4 / 7])
    assert [p.recall for p in curve] == pytest.approx([1 / 6, 2 / 6, 2 / 6, 3 / 6, 3 / 6, 3 / 6, 4 / 6])


def test_labels_of_one_confidence_are_accepted_together():
    curve = precision_recall_curve([(0.7, True), (0.7, False), (0.2, True)], ground_truth=0)
    assert curve == [CurvePoint(0.7, 2, 1, 0.5, None), CurvePoint(0.2, 3, 2, 2 / 3, None)]


@pytest.mark.parametrize(
    ("target", "reached", "threshold", "precision", "recall"),
    [
        (0.95, True, 0.9, 1.0, 2 / 6),
        (1.0, True, 0.9, 1.0, 2 / 6),
        (0.75, True, 0.6, 0.75, 3 / 6),
        (0.7, True, 0.6, 0.75, 3 / 6),
        (0.55, True, 0.1, 4 / 7, 4 / 6),
        (0.01, True, 0.1, 4 / 7, 4 / 6),
    ],
)
def test_the_threshold_reaching_a_target_with_the_most_recall(target, reached, threshold, precision, recall):
    choice = choose_threshold(precision_recall_curve(SEVEN, 6), target)
    assert (choice.reached, choice.threshold) == (reached, threshold)
    assert (choice.precision, choice.recall) == pytest.approx((precision, recall))


@pytest.mark.parametrize(
    ("scored", "best"),
    [
        ([(0.8, False), (0.5, False)], (0.8, 0.0)),
        ([(0.9, False), (0.6, True), (0.4, False)], (0.6, 0.5)),
        ([], None),
    ],
)
def test_an_unreachable_target_accepts_nothing_and_shows_the_best_precision_seen(scored, best):
    choice = choose_threshold(precision_recall_curve(scored, 3), 0.9)
    assert (choice.reached, choice.threshold, choice.precision) == (False, 1.0, None)
    assert (None if choice.best is None else (choice.best.threshold, choice.best.precision)) == best


@pytest.mark.parametrize("target", [0, -0.5, 1.01, float("nan")])
def test_a_target_outside_zero_to_one_is_refused(target):
    with pytest.raises(ValueError, match=r"target_precision must be above 0 and at most 1"):
        choose_threshold([], target)


@pytest.mark.parametrize(
    ("threshold", "accepted", "right", "precision"),
    [(0.95, 1, 1, 1.0), (0.7, 3, 2, 2 / 3), (0.0, 7, 4, 4 / 7), (0.99, 0, 0, 1.0)],
)
def test_what_a_threshold_accepts(threshold, accepted, right, precision):
    point = at_threshold(precision_recall_curve(SEVEN, 6), threshold, 6)
    assert (point.threshold, point.accepted, point.right) == (threshold, accepted, right)
    assert point.precision == pytest.approx(precision)


@pytest.mark.parametrize(
    ("right", "accepted", "low", "high"), [(0, 0, None, None), (50, 50, 0.949, 1.0), (45, 50, 0.81, 0.95)]
)
def test_precision_interval_widens_on_small_slices(right, accepted, low, high):
    interval = precision_interval(right, accepted)
    if low is None:
        assert interval is None
    else:
        assert interval[0] == pytest.approx(low, abs=0.01) and interval[1] == pytest.approx(high, abs=0.01)


# Twenty labels from 0.99 down: the top two right, then alternately wrong and right.
FEW_ON_TOP = [(0.99, True), (0.98, True)] + [(0.9 - i / 100, i % 2 == 1) for i in range(18)]


@pytest.mark.parametrize(
    ("min_accepted", "reached", "threshold", "best"),
    [
        (1, True, 0.98, None),  # two labels, both right: "reached" on two labels
        (2, True, 0.98, None),
        (3, False, 1.0, (0.89, 0.75)),  # the best precision among thresholds that accept 3 or more
        (21, False, 1.0, (0.98, 1.0)),  # no threshold accepts 21: the best seen anywhere
    ],
)
def test_a_threshold_must_accept_enough_labels_to_reach_a_target(min_accepted, reached, threshold, best):
    choice = choose_threshold(precision_recall_curve(FEW_ON_TOP, 20), 0.95, min_accepted)
    assert (choice.reached, choice.threshold) == (reached, threshold)
    if best is not None:
        assert (choice.best.threshold, choice.best.precision) == pytest.approx(best)
