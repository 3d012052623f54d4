"""Confidence thresholds: one for all classes, or one per class, from Python, the CLI and the form."""

from __future__ import annotations

import pytest

from fiftyone_florence2.core.thresholds import Thresholds, read_thresholds


@pytest.mark.parametrize(
    ("value", "default", "per_class"),
    [
        (0.5, 0.5, {}),
        (0, 0.0, {}),
        (1, 1.0, {}),
        ("0.3", 0.3, {}),
        ({"car": 0.7}, None, {"car": 0.7}),
        ({"car": 0.7, "*": 0.4}, 0.4, {"car": 0.7}),
        ("car=0.7,*=0.4", 0.4, {"car": 0.7}),
        ("0.4, car=0.7", 0.4, {"car": 0.7}),
        ("traffic light=0.6", None, {"traffic light": 0.6}),
        ("a=b=0.2", None, {"a=b": 0.2}),
        ({"car": "0.25"}, None, {"car": 0.25}),
    ],
)
def test_thresholds_are_read_from_every_form(value, default, per_class):
    thresholds = read_thresholds("confidence_thresh", value)
    assert thresholds == Thresholds(default, per_class)
    assert read_thresholds("confidence_thresh", thresholds.as_value()) == thresholds


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (1.5, "from 0 to 1"),
        (-0.1, "from 0 to 1"),
        (float("nan"), "number from 0 to 1"),
        (True, "number from 0 to 1"),
        ("high", "number from 0 to 1"),
        ("", "CLASS=NUMBER"),
        (",", "CLASS=NUMBER"),
        ("=0.5", "names no class"),
        ("car=0.5,car=0.6", "more than once"),
        ({}, "at least one class"),
        ({"": 0.5}, "non-empty texts"),
        ({3: 0.5}, "non-empty texts"),
        ({"car": 2}, "confidence_thresh['car']"),
        ([0.5], "number from 0 to 1"),
    ],
)
def test_bad_thresholds_are_refused_in_one_line(value, words):
    with pytest.raises(ValueError) as error:
        read_thresholds("confidence_thresh", value)
    assert words in str(error.value)
    assert "\n" not in str(error.value)


def test_none_is_no_threshold():
    assert read_thresholds("confidence_thresh", None) is None


@pytest.mark.parametrize(
    ("value", "label", "expected"),
    [
        ({"car": 0.7, "*": 0.4}, "car", 0.7),
        ({"car": 0.7, "*": 0.4}, "bus", 0.4),
        ({"car": 0.7, "*": 0.4}, None, 0.4),
        (0.2, "anything", 0.2),
    ],
)
def test_each_class_gets_its_own_threshold(value, label, expected):
    assert read_thresholds("t", value).for_class(label) == expected


def test_a_class_without_a_threshold_or_a_default_is_named():
    thresholds = read_thresholds("t", {"car": 0.7, "person": 0.5})
    with pytest.raises(ValueError, match=r"No threshold for class 'bus' \(thresholds are set for: car, person\)"):
        thresholds.for_class("bus")
    assert thresholds.unknown_classes(["car", "bus", "van", "bus"]) == ["bus", "van"]
    assert read_thresholds("t", {"car": 0.7, "*": 0.1}).unknown_classes(["bus"]) == []


@pytest.mark.parametrize(
    ("value", "line"),
    [
        (0.5, "all >= 0.5"),
        ({"car": 0.7, "*": 0.4}, "car >= 0.7, others >= 0.4"),
        ({"b": 0.2, "a": 0.3}, "a >= 0.3, b >= 0.2"),
    ],
)
def test_thresholds_describe_themselves(value, line):
    assert read_thresholds("t", value).describe() == line
