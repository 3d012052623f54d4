"""Review bands: reading them, refusing bad ones, and which band a confidence falls in per class."""

from __future__ import annotations

import pytest

from fiftyone_florence2.core.review import (
    DEFAULT_BANDS,
    Band,
    band_of,
    bands_as_value,
    calibrated_band,
    label_band,
    read_bands,
    uncertainty,
)
from fiftyone_florence2.core.thresholds import read_thresholds

TWO = (Band("keep", 0.5, 1.0), Band("drop", 0.0, 0.5))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, DEFAULT_BANDS),
        ("accepted=0.7-1,review=0.5-0.7,skim=0.3-0.5,rejected=0-0.3", DEFAULT_BANDS),
        ("drop=0-0.5, keep=0.5-1", TWO),
        ({"keep": (0.5, 1), "drop": ["0", "0.5"]}, TWO),
        (list(reversed(TWO)), TWO),
        (bands_as_value(DEFAULT_BANDS), DEFAULT_BANDS),
    ],
)
def test_bands_are_read_from_every_form_highest_first(value, expected):
    assert read_bands("bands", value) == expected


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("keep=0.5-1,drop=0-0.6", "overlap"),
        ("keep=0.6-1,drop=0-0.5", "gap"),
        ("keep=0.5-0.9,drop=0-0.5", "from 0 to 1"),
        ("keep=0.5-1,drop=0.1-0.5", "from 0 to 1"),
        ("keep=0-1", "at least two"),
        ("", "at least two"),
        ("keep=0.5-1,drop=0.5-0.5,x=0-0.5", "empty"),
        ("keep=0.5-1.5,drop=0-0.5", "from 0 to 1"),
        ("keep=high-1,drop=0-0.5", "numbers from 0 to 1"),
        ("keep 0.5-1", "NAME=LOW-HIGH"),
        ("keep=0.5", "NAME=LOW-HIGH"),
        ("keep=0.5-1,keep=0-0.5", "more than once"),
        ({"keep": (0.5, 1), "drop": 0.5}, "(low, high)"),
        ({"keep": "0.5-1", "drop": (0, 0.5)}, "(low, high)"),
        ({"": (0.5, 1), "drop": (0, 0.5)}, "non-empty"),
        ({"keep": (0.5, True), "drop": (0, 0.5)}, "numbers from 0 to 1"),
        ({"keep": (0.5, float("nan")), "drop": (0, 0.5)}, "numbers from 0 to 1"),
        (0.7, "map band names"),
    ],
)
def test_bad_bands_are_refused_with_one_line(value, words):
    with pytest.raises(ValueError, match="bands") as error:
        read_bands("bands", value)
    assert words in str(error.value) and "\n" not in str(error.value)


# Hand-computed: with threshold t, lower bounds are t, 0.5t/0.7, 0.3t/0.7, 0.
@pytest.mark.parametrize(
    ("confidence", "threshold", "band"),
    [
        (1.0, 0.7, "accepted"),
        (0.7, 0.7, "accepted"),
        (0.6999, 0.7, "review"),
        (0.5, 0.7, "review"),
        (0.4999, 0.7, "skim"),
        (0.3, 0.7, "skim"),
        (0.2999, 0.7, "rejected"),
        (0.0, 0.7, "rejected"),
        (None, 0.7, "review"),  # written by a person or another tool: reviewed, never rejected unseen
        (None, 0.0, "review"),
        (0.35, 0.35, "accepted"),  # a low threshold: its bands shrink with it
        (0.25, 0.35, "review"),
        (0.15, 0.35, "skim"),
        (0.149, 0.35, "rejected"),
        (0.95, 0.95, "accepted"),
        (0.94, 0.95, "review"),  # a high threshold widens the review band up to it ...
        (0.5, 0.95, "review"),
        (0.49, 0.95, "skim"),  # ... and moves no lower band up
        (0.3, 0.95, "skim"),
        (0.29, 0.95, "rejected"),
        (0.99, 1.0, "review"),  # a target no threshold reached: nothing accepted, no more rejected
        (0.3, 1.0, "skim"),
        (0.0, 0.0, "accepted"),
    ],
)
def test_a_confidence_falls_in_the_band_its_class_threshold_scales(confidence, threshold, band):
    assert band_of(confidence, threshold, DEFAULT_BANDS) == band


@pytest.mark.parametrize(
    ("confidence", "label", "band"),
    [(0.6, "car", "review"), (0.6, "dog", "accepted"), (0.6, None, "accepted"), (0.3, "dog", "review")],
)
def test_per_class_thresholds_band_each_class_by_its_own(confidence, label, band):
    thresholds = read_thresholds("thresholds", "car=0.7,*=0.4")
    assert label_band(confidence, label, thresholds, DEFAULT_BANDS) == band


def test_a_class_without_a_threshold_is_refused_by_name():
    with pytest.raises(ValueError, match="'dog'"):
        label_band(0.9, "dog", read_thresholds("thresholds", {"car": 0.7}), DEFAULT_BANDS)


@pytest.mark.parametrize(
    ("confidences", "expected"),
    [([], None), ([0.9], 0.1), ([0.9, 0.2, 0.5], 0.8), ([0.9, None], 1.0), ([1.0], 0.0)],
)
def test_uncertainty_is_one_minus_the_lowest_confidence(confidences, expected):
    assert uncertainty(confidences) == expected


@pytest.mark.parametrize(
    ("bands", "expected"),
    [(DEFAULT_BANDS, "review"), (TWO, "drop"), ("a=0.9-1,b=0.5-0.9,c=0-0.5", "b")],
)
def test_a_label_without_confidence_goes_to_the_band_below_the_top_whatever_the_bands(bands, expected):
    assert band_of(None, 0.7, read_bands("bands", bands) if isinstance(bands, str) else bands) == expected


# Raw threshold 0.5 maps to 0.95 (calibrated); lower bounds then 0.95, 0.5, 0.3, 0 (a threshold above 0.7
# widens the review band and moves no lower band up).
@pytest.mark.parametrize(
    ("raw", "calibrated", "band"),
    [
        (0.5, 0.95, "accepted"),
        (0.9, 1.0, "accepted"),
        (0.49, 0.95, "review"),  # a flat stretch of the mapping: the raw threshold still decides acceptance
        (0.49, 0.99, "review"),
        (0.45, 0.70, "review"),
        (0.40, 0.60, "review"),
        (0.35, 0.45, "skim"),
        (0.30, 0.29, "rejected"),
        (0.0, 0.0, "rejected"),
        (None, None, "review"),
    ],
)
def test_calibrated_bands_scale_to_the_mapped_threshold_and_accept_only_what_clears_the_raw_one(raw, calibrated, band):
    assert calibrated_band(raw, calibrated, 0.5, 0.95, DEFAULT_BANDS) == band
