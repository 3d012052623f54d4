"""Every task end to end through ``dataset.apply_model``: tiny checkpoint, forced answers, real batches."""

from __future__ import annotations

from pathlib import Path

import fiftyone.core.labels as fol
import pytest
from helpers import force

import fiftyone_florence2 as f2
from fiftyone_florence2.core.tasks import TASKS, get_task

L = "<loc_{}>".format


def locs(*bins):
    return "".join(L(b) for b in bins)


SQUARE = locs(100, 100, 300, 100, 300, 300, 100, 300)
BOX = locs(100, 200, 500, 900)


def answer(task: str, question: str) -> str:
    """What the forced decoder says for each task; text tasks echo their prompt."""
    if task in ("caption", "detailed_caption", "more_detailed_caption", "ocr"):
        return "A red car."
    if task == "ocr_with_region":
        return "STOP" + locs(100, 100, 200, 100, 200, 150, 100, 150)
    if task in ("detection", "dense_region_caption"):
        return "car" + BOX + "wheel" + locs(10, 10, 50, 50)
    if task == "region_proposal":
        return BOX + locs(10, 10, 50, 50)
    if task == "phrase_grounding":
        return question.split(": ", 1)[1] + BOX
    if task == "open_vocabulary_detection":
        return question.removeprefix("Locate ").removesuffix(" in the image.") + BOX
    if task in ("segmentation", "region_to_segmentation"):
        return SQUARE
    return "thing" + locs(100, 200, 500, 900)  # region-to-text tasks echo a region


INPUTS = {
    "phrase_grounding": {"prompt_field": "caption"},
    "segmentation": {"prompt": "the red car"},
    "open_vocabulary_detection": {"classes": ["car", "bus"]},
    "region_to_segmentation": {"regions_field": "gt"},
    "region_to_category": {"regions_field": "gt"},
    "region_to_description": {"regions_field": "gt"},
    "region_to_ocr": {"regions_field": "gt"},
}


@pytest.fixture
def labelled(dataset):
    for i, sample in enumerate(dataset.iter_samples(autosave=True)):
        sample["caption"] = fol.Classification(label=f"a red car number {i}")
        sample["gt"] = fol.Detections(
            detections=[
                fol.Detection(label="vehicle", bounding_box=[0.1, 0.2, 0.4, 0.7]),
                fol.Detection(label="sign", bounding_box=[0.5, 0.5, 0.2, 0.1]),
            ]
            if i != 2
            else []
        )
    return dataset


def load(checkpoint, tokenizer, task, **options):
    return f2.load_model(task, model=str(checkpoint), generate_kwargs=force(tokenizer, answer), **options)


@pytest.mark.parametrize("task", [t.name for t in TASKS])
def test_every_task_writes_its_label_type(labelled, tiny_checkpoint, tokenizer, task):
    model = load(tiny_checkpoint, tokenizer, task, **INPUTS.get(task, {}))
    labelled.apply_model(model, label_field="out", batch_size=3)
    expected = {t.name: t.label_type for t in TASKS}[task]
    values = labelled.values("out")
    if get_task(task).input == "region":
        # The sample with no regions has nothing to read: it is skipped with a reason, not given an empty label.
        empty = labelled.values("id")[2]
        assert values[2] is None and model.skips == {empty: f"{task}: no regions in field 'gt'"}
        values = values[:2] + values[3:]
    assert all(type(v).__name__ == expected for v in values)
    assert model.failures == {}
    first = values[0]
    if expected == "Classification":
        assert first.label == "A red car." and 0 < first.confidence <= 1
    elif expected == "Polylines":
        assert len(first.polylines) == (2 if task == "region_to_segmentation" else 1)
        line = first.polylines[0]
        assert line.closed and line.filled and 0 < line.confidence <= 1
        assert line.label == ("vehicle" if task == "region_to_segmentation" else "the red car")
        assert [[round(c, 4) for c in p] for p in line.points[0]] == [
            [0.1005, 0.1005], [0.3005, 0.1005], [0.3005, 0.3005], [0.1005, 0.3005]
        ]  # fmt: skip
    else:
        detections = first.detections
        assert detections and all(0 < d.confidence <= 1 for d in detections)
        assert all(len(d.bounding_box) == 4 for d in detections)


def test_detection_geometry_and_labels(labelled, tiny_checkpoint, tokenizer):
    labelled.apply_model(load(tiny_checkpoint, tokenizer, "detection"), label_field="od", batch_size=2)
    for detections in labelled.values("od"):
        assert [(d.label, [round(v, 4) for v in d.bounding_box]) for d in detections.detections] == [
            ("car", [0.1005, 0.2005, 0.4, 0.7]),
            ("wheel", [0.0105, 0.0105, 0.04, 0.04]),
        ]


def test_prompt_field_is_read_per_sample(labelled, tiny_checkpoint, tokenizer):
    model = load(tiny_checkpoint, tokenizer, "phrase_grounding", prompt_field="caption")
    labelled.apply_model(model, label_field="grounded", batch_size=4)
    for caption, grounded in zip(labelled.values("caption.label"), labelled.values("grounded")):
        assert [d.label for d in grounded.detections] == [caption]


def test_open_vocabulary_boxes_are_labelled_by_class(labelled, tiny_checkpoint, tokenizer):
    model = load(tiny_checkpoint, tokenizer, "<OPEN_VOCABULARY_DETECTION>", classes=["car", "bus", "traffic light"])
    labelled.apply_model(model, label_field="ovd", batch_size=2)
    for detections in labelled.values("ovd"):
        assert [d.label for d in detections.detections] == ["car", "bus", "traffic light"]


def test_region_tasks_answer_each_input_box(labelled, tiny_checkpoint, tokenizer):
    model = load(tiny_checkpoint, tokenizer, "region_to_category", regions_field="gt", batch_size=3)
    labelled.apply_model(model, label_field="category", batch_size=5)
    for gt, out in zip(labelled.values("gt"), labelled.values("category")):
        if not gt.detections:
            assert out is None  # no input boxes: skipped with a reason, no empty label
            continue
        assert [d.bounding_box for d in out.detections] == [d.bounding_box for d in gt.detections]
        assert [d.region_id for d in out.detections] == [d.id for d in gt.detections]
        assert all(d.label == "thing" for d in out.detections)
    assert list(model.skips.values()) == ["region_to_category: no regions in field 'gt'"]


def test_masks_option_writes_instance_masks(labelled, tiny_checkpoint, tokenizer):
    model = load(tiny_checkpoint, tokenizer, "segmentation", prompt="the car", masks=True)
    labelled.apply_model(model, label_field="seg", batch_size=2)
    sample = labelled.first()
    detection = sample.seg.detections[0]
    assert isinstance(sample.seg, fol.Detections) and detection.label == "the car"
    # The first image is 80x60 pixels: the mask covers 20% of each side, fully.
    assert detection.mask.shape == (round(0.2 * 60), round(0.2 * 80)) and detection.mask.all()


def test_several_tasks_write_one_field_each_and_match_separate_runs(labelled, tiny_checkpoint, tokenizer):
    tasks = ["caption", "detection", "region_to_description"]
    model = load(tiny_checkpoint, tokenizer, tasks, regions_field="gt")
    labelled.apply_model(model, label_field="multi", batch_size=3)
    for task in tasks:
        single = load(
            tiny_checkpoint, tokenizer, task, **({"regions_field": "gt"} if task.startswith("region") else {})
        )
        labelled.apply_model(single, label_field=f"single_{task}", batch_size=3)
        for a, b in zip(labelled.values(f"multi_{task}"), labelled.values(f"single_{task}")):
            assert _strip_ids(a) == _strip_ids(b)


def _strip_ids(label):
    if label is None:
        return None
    d = label.to_dict()

    def clean(x):
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if k not in ("_id", "id")}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return round(x, 6) if isinstance(x, float) else x

    return clean(d)


def test_apply_model_keyword_fields_follow_fiftyone_convention(labelled, tiny_checkpoint, tokenizer):
    labelled.set_values("other_caption", [fol.Classification(label=f"blue bus {i}") for i in range(5)])
    model = load(tiny_checkpoint, tokenizer, "phrase_grounding", prompt_field="caption")
    labelled.apply_model(model, label_field="g", batch_size=2, prompt_field="other_caption")
    assert [d.detections[0].label for d in labelled.values("g")] == [f"blue bus {i}" for i in range(5)]


def test_confidence_thresh_is_honoured(labelled, tiny_checkpoint, tokenizer):
    model = load(tiny_checkpoint, tokenizer, "detection")
    labelled.apply_model(model, label_field="all", batch_size=5)
    confidences = sorted(d.confidence for d in labelled.values("all")[0].detections)
    cut = sum(confidences) / 2
    labelled.apply_model(model, label_field="some", batch_size=5, confidence_thresh=cut)
    kept = [d.confidence for d in labelled.values("some")[0].detections]
    assert kept == [c for c in confidences if c >= cut][::-1] or sorted(kept) == [c for c in confidences if c >= cut]
    assert model.config.confidence_thresh is None  # restored after the run


@pytest.mark.parametrize(
    ("task", "options", "thresh", "kept"),
    [
        ("detection", {}, {"wheel": 0, "*": 1}, ["wheel"]),
        ("detection", {}, "1,car=0", ["car"]),
        ("detection", {}, "0", ["car", "wheel"]),
        ("detection", {}, {"*": 1}, []),
        ("open_vocabulary_detection", {"classes": ["car", "bus"]}, "car=0,bus=1", ["car"]),
        ("open_vocabulary_detection", {"classes": ["car", "bus"]}, {"car": 1, "bus": 0}, ["bus"]),
        ("caption", {}, "1,A red car.=0", ["A red car."]),
        ("caption", {}, "0.5,A blue car.=0", [None]),
    ],
)
def test_a_per_class_threshold_is_applied_per_class(labelled, tiny_checkpoint, tokenizer, task, options, thresh, kept):
    model = load(tiny_checkpoint, tokenizer, task, confidence_thresh=thresh, **options)
    labelled.apply_model(model, label_field="out", batch_size=5)
    label = labelled.first()["out"]
    names = [x.label for x in label.detections] if task != "caption" else [label.label]
    assert sorted(names, key=str) == kept
    assert not model.failures


def test_a_class_with_no_threshold_fails_its_sample_with_the_reason(labelled, tiny_checkpoint, tokenizer):
    """apply_model(confidence_thresh=...) sets the threshold unchecked: a class it misses is never silently
    dropped or kept."""
    model = load(tiny_checkpoint, tokenizer, "detection")
    labelled.apply_model(model, label_field="out", batch_size=5, confidence_thresh={"car": 0.0})
    assert not labelled.has_field("out")
    assert set(model.failures.values()) == {
        "detection: No threshold for class 'wheel' (thresholds are set for: car); add one for it, or a default "
        "with '*'."
    }


def test_empty_prompt_field_value_fails_that_sample_only(labelled, tiny_checkpoint, tokenizer):
    first = labelled.first()
    first["caption"] = None
    first.save()
    model = load(tiny_checkpoint, tokenizer, "phrase_grounding", prompt_field="caption")
    labelled.apply_model(model, label_field="g", batch_size=5)
    values = labelled.values("g")
    assert values[0] is None and all(v is not None for v in values[1:])
    assert list(model.failures.values()) == ["phrase_grounding: no prompt in field 'caption'"]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"task": "phrase_grounding"}, "need text"),
        ({"task": "caption", "prompt": "hi"}, r"prompt was given, but none of the tasks \(caption\)"),
        ({"task": "phrase_grounding", "prompt": "a", "prompt_field": "b"}, "only one of"),
        ({"task": "phrase_grounding", "classes": ["a"]}, "none of the tasks|classes is not read"),
        ({"task": "region_to_ocr"}, "regions_field"),
        ({"task": "caption", "regions_field": "gt"}, "regions_field was given, but none"),
        ({"task": "caption", "masks": True}, "masks was given, but none"),
        ({"task": "caption", "confidence_thresh": float("nan")}, "confidence_thresh must be a number from 0 to 1"),
        ({"task": "caption", "confidence_thresh": -0.1}, "confidence_thresh must be from 0 to 1"),
        ({"task": "caption", "confidence_thresh": 5}, "confidence_thresh must be from 0 to 1"),
        ({"task": "caption", "confidence_thresh": "high"}, "confidence_thresh must be a number"),
        ({"task": "detection", "confidence_thresh": "car=0.5"}, "detection can write any class"),
        ({"task": "caption", "confidence_thresh": {"car": 0.5}}, "caption can write any class"),
        ({"task": "open_vocabulary_detection", "prompt_field": "p", "confidence_thresh": "car=0.5"}, "any class"),
        (
            {"task": "open_vocabulary_detection", "classes": ["car", "bus"], "confidence_thresh": "car=0.5"},
            "no threshold for class\\(es\\) 'bus'",
        ),
        ({"task": ["segmentation", "detection"], "prompt": "car", "confidence_thresh": "car=0.5"}, "any class"),
        ({"task": "caption", "device": "gpu"}, "device must be one of"),
        ({"task": "caption", "dtype": "int8"}, "dtype must be one of"),
        ({"task": "caption", "batch_size": True}, "batch_size must be a whole number"),
        ({"task": "caption", "batch_size": 2.5}, "batch_size must be a whole number"),
        ({"task": "caption", "batch_size": 0}, "batch_size"),
        ({"task": "caption", "num_beams": -1}, "num_beams"),
        ({"task": "caption", "max_new_tokens": 0}, "max_new_tokens"),
        ({"task": "caption", "prompt_field": "a b"}, "need text|field name"),
        ({"task": "nope"}, "Unknown Florence-2 task"),
        ({"task": "caption", "colour": "red"}, "Unknown option"),
        ({"task": "caption", "model": "/no/such/checkpoint"}, "not a directory"),
        ({"task": "open_vocabulary_detection", "classes": []}, "non-empty list"),
        ({"task": "open_vocabulary_detection", "classes": ["ok", "<OD>"]}, "Florence-2 tokens"),
    ],
)
def test_bad_options_are_refused_before_loading(options, error):
    with pytest.raises(ValueError, match=error):
        f2.Florence2ModelConfig(options)


def test_apply_model_uses_the_data_loader_and_keeps_a_batch_with_a_broken_file(labelled, tiny_checkpoint, tokenizer):
    """load_model's one model class is fed through FiftyOne's data loader: a broken file fails alone."""
    import fiftyone as fo
    import fiftyone.core.models as fom

    broken = Path(labelled.first().filepath).with_name("broken.jpg")
    broken.write_text("not a jpeg")
    bad = labelled.add_sample(fo.Sample(filepath=str(broken)))
    model = load(tiny_checkpoint, tokenizer, "detection")
    assert type(model) is f2.Florence2Model and isinstance(model, fom.SupportsGetItem)
    labelled.apply_model(model, label_field="loader", batch_size=6)
    assert labelled.count("loader") == 5 and list(model.failures) == [bad]
    assert "not an image file" in model.failures[bad]


def test_an_item_for_another_sample_is_reread_for_the_sample_it_is_labelled_for(labelled, tiny_checkpoint, tokenizer):
    """FiftyOne's loader snapshots ids while its cursor may be re-queried: labels follow the cursor's sample."""
    from fiftyone_florence2.engine.items import Item

    model = load(tiny_checkpoint, tokenizer, "phrase_grounding", prompt_field="caption")
    first, second = labelled.head(2)
    stale = Item(first.id, pixel_values=None, image_wh=(1, 1), prompt="a red car number 0")
    (label,) = model.predict_all([stale], samples=[second])
    assert [d.label for d in label.detections] == ["a red car number 1"]  # the second sample's own prompt
    assert model.failures == {}
