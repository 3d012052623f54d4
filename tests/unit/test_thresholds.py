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


@pytest.mark.parametrize(
    ("tasks", "values", "thresh", "words"),
    [
        (["detection"], {}, None, None),
        (["detection"], {}, 0.5, None),
        (["detection"], {}, "car=0.5,*=0.2", None),
        (["detection"], {}, "car=0.5", "detection can write any class"),
        (["caption"], {}, {"a cat": 0.5}, "caption can write any class"),
        (["open_vocabulary_detection"], {"classes": ["car", "bus"]}, "car=0.5,bus=0.1", None),
        (["open_vocabulary_detection"], {"classes": ["car", "bus"]}, "car=0.5", "class(es) 'bus'"),
        (["open_vocabulary_detection"], {"prompt": "car"}, "car=0.5", None),
        (["open_vocabulary_detection"], {"prompt_field": "p"}, "car=0.5", "can write any class"),
        (["segmentation", "open_vocabulary_detection"], {"classes": ["a"]}, "a=0.5", None),
        (["segmentation", "phrase_grounding"], {"prompt": "a"}, "a=0.5", "segmentation, phrase_grounding"),
    ],
)
def test_thresholds_without_a_default_must_cover_every_class_a_run_can_write(tasks, values, thresh, words):
    from fiftyone_florence2.core.tasks import get_tasks
    from fiftyone_florence2.core.thresholds import uncovered_classes

    reason = uncovered_classes(read_thresholds("confidence_thresh", thresh), get_tasks(tasks), values)
    assert reason is None if words is None else words in reason


def _detections(*pairs):
    import fiftyone.core.labels as fol

    return fol.Detections(detections=[fol.Detection(label=label, confidence=c) for label, c in pairs])


@pytest.mark.parametrize(
    ("pairs", "thresh", "kept"),
    [
        ([], "car=0.5", []),
        ([("car", 0.6), ("dog", 0.6), ("car", 0.4)], None, [("car", 0.6), ("dog", 0.6), ("car", 0.4)]),
        ([("car", 0.6), ("dog", 0.6), ("car", 0.4)], "0.5", [("car", 0.6), ("dog", 0.6)]),
        ([("car", 0.6), ("dog", 0.6), ("car", 0.4)], {"dog": 0.7, "*": 0.3}, [("car", 0.6), ("car", 0.4)]),
        ([("car", 0.5), ("car", 0.49)], {"car": 0.5}, [("car", 0.5)]),
        ([("car", None)], 0, []),
        ([("car", 0.2)], {"dog": 0.1}, ValueError),
    ],
)
def test_a_label_keeps_the_instances_that_reach_their_class_threshold(pairs, thresh, kept):
    from fiftyone_florence2.labels.convert import threshold

    if kept is ValueError:
        with pytest.raises(ValueError, match="No threshold for class 'car'"):
            threshold(_detections(*pairs), thresh)
        return
    label = threshold(_detections(*pairs), thresh)
    assert [(d.label, d.confidence) for d in label.detections] == kept


@pytest.mark.parametrize(
    ("label", "confidence", "thresh", "kept"),
    [
        ("a cat", 0.6, "0.9,a cat=0.5", True),
        ("a cat", 0.6, "0.5,a cat=0.9", False),
        ("a dog", 0.6, "0.9,a cat=0.5", False),
        (None, None, {"a cat": 0.5}, False),
    ],
)
def test_a_classification_is_emptied_below_its_class_threshold(label, confidence, thresh, kept):
    import fiftyone.core.labels as fol

    from fiftyone_florence2.labels.convert import threshold

    result = threshold(fol.Classification(label=label, confidence=confidence), thresh)
    assert (result.label, result.confidence) == ((label, confidence) if kept else (None, None))
