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
    raw_calibration_error,
    recalibrated_error,
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
    ("pairs", "expected"),
    [
        ((), None),
        (((1.0, True),), 0.0),  # sure and right
        (((1.0, False),), 1.0),  # sure and wrong
        (((0.95, True), (0.95, True), (0.15, False), (0.15, False)), 0.1),  # 0.05 and 0.15 gaps, equal weights
    ],
)
def test_the_raw_calibration_error_is_the_products_over_ten_bins(pairs, expected):
    found = raw_calibration_error(_labels(*pairs))
    assert found == pytest.approx(expected) if expected is not None else found is None


@pytest.mark.parametrize(
    ("pairs", "knots", "expected"),
    [
        ((), [[0.0, 0.5], [1.0, 0.5]], None),  # no labels
        (((0.9, True),), None, None),  # no mapping
        (((0.9, True),), [], None),
        (((0.9, True), (0.9, False)), [[0.0, 0.5], [1.0, 0.5]], 0.0),  # mapped to 0.5, right half the time
        (((0.95, True), (0.95, True), (0.15, False), (0.15, False)), [[0.15, 0.0], [0.95, 1.0]], 0.0),  # mapped right
        (((0.2, True), (0.2, False)), [[0.0, 1.0], [1.0, 1.0]], 0.5),  # mapped to 1, right half the time
    ],
)
def test_the_recalibrated_error_passes_each_confidence_through_the_mapping(pairs, knots, expected):
    found = recalibrated_error(_labels(*pairs), knots)
    assert found == pytest.approx(expected) if expected is not None else found is None


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


@pytest.mark.parametrize(
    ("count", "fraction", "seed", "size"),
    [(1000, 0.1, 0, 100), (10, 0.1, 3, 1), (3, 0.1, 0, 1), (5, 1.0, 1, 5), (7, 0.5, 2, 4)],
)
def test_the_reviewed_slice_depends_on_the_seed_alone(count, fraction, seed, size):
    from benchmarks.autolabel import slice_positions

    drawn = slice_positions(count, fraction, seed)
    assert drawn == slice_positions(count, fraction, seed) and len(drawn) == len(set(drawn)) == size
    assert drawn == sorted(drawn) and all(0 <= i < count for i in drawn)


@pytest.mark.parametrize(("count", "fraction"), [(0, 0.1), (10, 0.0), (10, 1.5), (10, -0.1)])
def test_a_slice_of_nothing_is_refused(count, fraction):
    from benchmarks.autolabel import slice_positions

    with pytest.raises(ValueError, match="Need samples and a fraction"):
        slice_positions(count, fraction, 0)
