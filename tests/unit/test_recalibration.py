"""The recalibration maths: isotonic regression by pool-adjacent-violators against hand-computed fits, the
mapping applied between and beyond its knots, the cross-fitted ECE, and held-out ECE raw against recalibrated
on synthetic data (the figures docs/CALIBRATION.md quotes)."""

from __future__ import annotations

import random

import pytest
from helpers.calibration_data import noisy_rows

from fiftyone_florence2.autolabel.report import class_report, fall_back
from fiftyone_florence2.core.calibration import (
    apply_mapping,
    cross_fitted,
    expected_calibration_error,
    fit_isotonic,
    recalibrated,
    reliability_bins,
)


@pytest.mark.parametrize(
    ("scored", "knots"),
    [
        ([], None),
        ([(0.5, True)], [(0.5, 1.0)]),
        ([(0.5, True), (0.5, False), (0.5, True)], [(0.5, 0.666667)]),  # ties are one block
        ([(0.2, False), (0.4, True), (0.6, True)], [(0.2, 0.0), (0.4, 1.0), (0.6, 1.0)]),
        ([(0.2, True), (0.4, False)], [(0.2, 0.5), (0.4, 0.5)]),  # a violation pooled
        # Seven labels: 0.1 right, 0.3 and 0.55 wrong pool to 1/3; 0.6 right, 0.85 wrong pool to 1/2.
        ([(0.1, True), (0.3, False), (0.55, False), (0.6, True), (0.85, False), (0.9, True), (0.95, True)],
         [(0.1, 0.333333), (0.55, 0.333333), (0.6, 0.5), (0.85, 0.5), (0.9, 1.0), (0.95, 1.0)]),
        ([(0.9, False), (0.1, True)], [(0.1, 0.5), (0.9, 0.5)]),  # order of the input does not matter
    ],
)  # fmt: skip
def test_pool_adjacent_violators_against_hand_computed_fits(scored, knots):
    assert fit_isotonic(scored) == knots


def test_a_confidence_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="from 0 to 1"):
        fit_isotonic([(1.5, True)])


KNOTS = [(0.2, 0.0), (0.4, 1.0), (0.6, 1.0)]


@pytest.mark.parametrize(
    ("confidence", "expected"),
    [(None, None), (0.0, 0.0), (0.2, 0.0), (0.3, 0.5), (0.4, 1.0), (0.5, 1.0), (0.6, 1.0), (1.0, 1.0)],
)
def test_the_mapping_interpolates_between_knots_and_holds_its_ends(confidence, expected):
    assert apply_mapping(KNOTS, confidence) == pytest.approx(expected)


def test_the_mapping_is_monotone_so_a_threshold_maps_to_the_same_cut():
    rows = noisy_rows(600, seed=3)
    knots = fit_isotonic([(c, r) for row in rows for _, c, r in row])
    grid = [i / 200 for i in range(201)]
    values = [apply_mapping(knots, x) for x in grid]
    assert values == sorted(values)


@pytest.mark.parametrize(("n", "none"), [(0, True), (9, True), (10, False), (200, False)])
def test_cross_fitting_keeps_every_label_and_needs_two_a_part(n, none):
    scored = [(i / max(n, 1), i % 3 == 0) for i in range(n)]
    out = cross_fitted(scored)
    assert (out is None) is none
    if out is not None:  # the same labels, in the same order, each recalibrated
        assert [right for _, right in out] == [right for _, right in scored]


def _ece(scored) -> float:
    return expected_calibration_error(reliability_bins(scored, 10))


def _held_out_ece(seed: int) -> tuple[float, float]:
    """Raw and recalibrated ECE on the 90% a 10% slice (mappings per class, as calibrate fits them) never saw."""
    rows = [obj for row in noisy_rows(5000, seed=seed) for obj in row]
    random.Random(seed).shuffle(rows)
    slice_, rest = rows[:500], rows[500:]
    overall = class_report("*", [(c, r) for _, c, r in slice_], 0, len(slice_), 0.95, 10)
    mappings = {}
    for name in ("car", "dog"):
        own = [(c, r) for label, c, r in slice_ if label == name]
        mappings[name] = fall_back(class_report(name, own, 0, len(own), 0.95, 10), overall, 50, None, 10).mapping
    raw = [(c, r) for _, c, r in rest]
    calibrated = [s for name in mappings for s in recalibrated([(c, r) for label, c, r in rest if label == name],
                                                               mappings[name])]  # fmt: skip
    return _ece(raw), _ece(calibrated)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recalibrated_confidences_are_far_better_calibrated_on_labels_the_slice_never_saw(seed):
    raw, calibrated = _held_out_ece(seed)
    print(f"seed {seed}: held-out ECE raw {raw:.3f}, recalibrated {calibrated:.3f}")
    assert raw > 0.1 and calibrated < 0.05
