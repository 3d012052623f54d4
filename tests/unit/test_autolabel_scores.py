"""The auto-labelling benchmark's scores: AUROC, calibration error, and what accepted labels give."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.autolabel_scores import (  # noqa: E402
    Matched,
    acceptance,
    auroc,
    bin_of,
    expected_calibration_error,
    reliability,
)


def _labels(*pairs: tuple[float, bool]) -> list[Matched]:
    return [Matched("red circle", confidence, right) for confidence, right in pairs]


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ((), None),
        (((0.9, True), (0.8, True)), None),  # no wrong label: undefined
        (((0.2, False),), None),
        (((0.9, True), (0.1, False)), 1.0),
        (((0.1, True), (0.9, False)), 0.0),
        (((0.5, True), (0.5, False)), 0.5),  # a tie counts half
        (((0.9, True), (0.5, False), (0.5, True), (0.1, False)), 0.875),  # 3.5 of 4 pairs
    ],
)
def test_auroc_is_the_share_of_right_wrong_pairs_ranked_right(pairs, expected):
    assert auroc(_labels(*pairs)) == expected


@pytest.mark.parametrize(
    ("confidence", "bins", "expected"), [(0.0, 10, 0), (0.099, 10, 0), (0.1, 10, 1), (0.95, 10, 9), (1.0, 10, 9)]
)
def test_confidences_fall_in_equal_width_bins_with_one_in_the_last(confidence, bins, expected):
    assert bin_of(confidence, bins) == expected


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ((), None),
        (((1.0, True),), 0.0),  # sure and right
        (((1.0, False),), 1.0),  # sure and wrong
        (((0.25, True), (0.25, False)), 0.25),  # one bin: right half the time at 0.25
        (((0.95, True), (0.95, True), (0.15, False), (0.15, False)), 0.1),  # 0.05 and 0.15 gaps, equal weights
    ],
)
def test_expected_calibration_error_weighs_each_bins_gap_by_its_count(pairs, expected):
    found = expected_calibration_error(_labels(*pairs))
    assert found == pytest.approx(expected) if expected is not None else found is None


def test_reliability_lists_only_bins_that_hold_labels_in_order():
    rows = reliability(_labels((0.95, True), (0.05, False), (0.91, False)))
    assert rows == [(0.0, 1, 0.05, 0.0), (0.9, 2, pytest.approx(0.93), 0.5)]


@pytest.mark.parametrize(
    ("pairs", "flags", "objects", "precision", "coverage"),
    [
        ((), (), 0, None, None),
        ((), (), 3, None, 0.0),
        (((0.9, True), (0.8, False), (0.3, True)), (True, True, False), 4, 0.5, 0.25),
        (((0.9, True), (0.8, True)), (False, False), 2, None, 0.0),  # nothing accepted: no precision
    ],
)
def test_acceptance_scores_only_the_accepted_labels(pairs, flags, objects, precision, coverage):
    found = acceptance(_labels(*pairs), flags, objects)
    assert (found.precision, found.coverage, found.labels) == (precision, coverage, len(pairs))


def test_acceptance_refuses_flags_that_do_not_match_the_labels():
    with pytest.raises(ValueError, match="one accepted flag per label, got 1 for 2"):
        acceptance(_labels((0.9, True), (0.1, False)), [True], 2)
