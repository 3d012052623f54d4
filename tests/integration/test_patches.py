"""Patches views labelled crop by crop, their labels on the patches' own labels in the source dataset."""

from __future__ import annotations

import fiftyone as fo
import fiftyone.core.labels as fol
import pytest
from helpers import force, write_image

from fiftyone_florence2 import load_model
from fiftyone_florence2.core.crops import crop_pixels, crop_xywh
from fiftyone_florence2.runs.labelling import label_samples
from fiftyone_florence2.runs.patches import to_source_frame

BOXES = [[0.1, 0.2, 0.4, 0.5], [0.5, 0.5, 0.4, 0.4]]
LEFT_HALF = "car<loc_0><loc_0><loc_499><loc_999>"  # relative [0.0005, 0.0005, 0.4990, 0.9990] of the crop


def answer(task: str, question: str) -> str:
    return "A crop." if task == "caption" else LEFT_HALF


@pytest.fixture
def model_for(tiny_checkpoint, tokenizer):
    def make(task, reply=answer, **options):
        return load_model(task, model=str(tiny_checkpoint), generate_kwargs=force(tokenizer, reply), **options)

    return make


@pytest.fixture
def boxes(tmp_path):
    ds = fo.Dataset()
    detections = lambda: fol.Detections(detections=[fol.Detection(label=f"o{k}", bounding_box=b)  # noqa: E731
                                                    for k, b in enumerate(BOXES)])  # fmt: skip
    paths = [write_image(tmp_path / f"p{i}.png", (120, 80), seed=i) for i in range(3)]
    ds.add_samples([fo.Sample(filepath=p, gt=detections()) for p in paths])
    yield ds
    ds.delete()


def _source_labels(dataset, name):
    dataset.reload()
    return [d[name] if d.has_field(name) else None for s in dataset for d in s.gt.detections]


def _near(a, b):
    return all(abs(x - y) < 1e-3 for x, y in zip(a, b))


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ([[0.1, 0.2, 0.3, 0.4]], (0.1, 0.2, 0.3, 0.4)),
        ([[0.1, 0.1, 0.2, 0.2], [0.2, 0.0, 0.3, 0.1]], (0.1, 0.0, 0.4, 0.3)),  # union (evaluation patches)
        ([[-0.2, 0.5, 0.4, 0.9]], (0.0, 0.5, 0.2, 0.5)),  # clipped to the image
        ([], "no box"),
        ([[0.3, 0.3, 0.0, 0.2]], "covers no part"),
        ([[1.2, 0.5, 0.1, 0.1]], "covers no part"),
        ([[float("nan"), 0.5, 0.1, 0.1]], "finite"),
    ],
)
def test_crop_of_a_patch(labels, expected):
    dets = [fol.Detection(bounding_box=b) for b in labels]
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            crop_xywh(dets)
    else:
        assert _near(crop_xywh(dets), expected)


@pytest.mark.parametrize(
    ("crop", "wh", "pixels"),
    [((0.1, 0.2, 0.4, 0.5), (120, 80), (12, 16, 60, 56)), ((0.999, 0.0, 0.0005, 1.0), (100, 10), (99, 0, 100, 10))],
)
def test_crop_pixels_cover_at_least_one_pixel(crop, wh, pixels):
    assert crop_pixels(crop, wh) == pixels


def test_a_box_and_a_polygon_in_a_crop_move_to_the_source_frame():
    crop = (0.5, 0.25, 0.5, 0.5)
    dets = to_source_frame(fol.Detections(detections=[fol.Detection(bounding_box=[0.5, 0.5, 0.5, 0.5])]), crop)
    assert _near(dets.detections[0].bounding_box, [0.75, 0.5, 0.25, 0.25])
    lines = to_source_frame(fol.Polylines(polylines=[fol.Polyline(points=[[[0, 0], [1, 1]]])]), crop)
    assert [list(map(float, p)) for p in lines.polylines[0].points[0]] == [[0.5, 0.25], [1.0, 0.75]]
    text = fol.Classification(label="x")
    assert to_source_frame(text, crop) is text


def test_label_samples_on_a_patches_view_writes_each_box_its_labels_in_the_source(boxes, model_for):
    patches = boxes.to_patches("gt")
    summary = label_samples(patches, model_for(["caption", "detection"]), "f2")
    assert (summary.targeted, summary.labelled, summary.failures) == (6, 6, {})
    assert [c.label for c in _source_labels(boxes, "f2_caption")] == ["A crop."] * 6
    for box, found in zip(BOXES * 3, _source_labels(boxes, "f2_detection")):
        # the left half of the crop, in the source image's frame (FiftyOne's frame on patches views)
        assert _near(found.detections[0].bounding_box, [box[0], box[1], box[2] / 2, box[3]])
    schema = boxes.get_field_schema(flat=True)
    assert schema["gt.detections.f2_caption"].document_type is fol.Classification  # declared: the App filters it
    assert boxes.list_runs() == [summary.run_key]
    assert boxes.to_patches("gt").count("gt.f2_caption") == 6  # a new patches view has them too


def test_the_model_sees_the_crop_at_full_resolution(boxes, model_for, monkeypatch):
    import fiftyone_florence2.engine.items as items

    seen = []
    monkeypatch.setattr(items, "shrink_toward", lambda pil, wh: seen.append(pil.size) or pil)
    label_samples(boxes.to_patches("gt"), model_for("caption"), "cap", workers=1)
    assert sorted(set(seen)) == [(48, 32), (48, 40)]  # 0.4x0.4 and 0.4x0.5 of 120x80


def test_skip_existing_on_a_patches_view_fills_only_the_patches_that_lack_labels(boxes, model_for):
    first = boxes.to_patches("gt").limit(2)
    label_samples(first, model_for("caption"), "cap")
    with pytest.raises(ValueError, match=r"2 sample\(s\) already have labels in gt.detections.cap"):
        label_samples(boxes.to_patches("gt"), model_for("caption"), "cap")
    summary = label_samples(boxes.to_patches("gt"), model_for("caption", lambda t, q: "Later."), "cap",
                            skip_existing=True)  # fmt: skip
    assert (summary.skipped, summary.labelled) == (2, 4)
    assert [c.label for c in _source_labels(boxes, "cap")] == ["A crop."] * 2 + ["Later."] * 4


def test_apply_model_on_a_patches_view_labels_crops_into_the_patch_labels(boxes, model_for):
    """Regression: FiftyOne's asynchronous save of a patches view left 2 of 44 labels unsynced."""
    more = fol.Detections(detections=[fol.Detection(label="x", bounding_box=b) for b in BOXES])
    boxes.add_samples([fo.Sample(filepath=boxes.first().filepath, gt=more.copy()) for _ in range(19)])
    model = model_for("detection")
    boxes.to_patches("gt").apply_model(model, "gt.found", patches_field="gt", batch_size=3)
    found = _source_labels(boxes, "found")
    assert len(found) == 44 and None not in found
    assert _near(found[1].detections[0].bounding_box, [0.5, 0.5, 0.2, 0.4])


def test_apply_model_on_a_patches_view_without_patches_field_names_the_call(boxes, model_for):
    with pytest.raises(ValueError, match=r'label_field="gt.<name>", patches_field="gt"'):
        boxes.to_patches("gt").apply_model(model_for("caption"), "cap", skip_failures=False)
    assert "cap" not in boxes.get_field_schema()


def test_an_evaluation_patches_view_labels_every_label_of_each_patch(boxes, model_for):
    for sample in boxes.iter_samples(autosave=True):
        sample["pred"] = fol.Detections(detections=[
            fol.Detection(label="o0", bounding_box=[0.12, 0.2, 0.4, 0.5], confidence=0.9),
            fol.Detection(label="z", bounding_box=[0.0, 0.0, 0.05, 0.05], confidence=0.5),
        ])  # fmt: skip
    boxes.evaluate_detections("pred", "gt", eval_key="ev")
    patches = boxes.to_evaluation_patches("ev")
    summary = label_samples(patches, model_for("caption"), "cap")
    assert (summary.targeted, summary.labelled, summary.failures) == (9, 9, {})  # tp, fn, fp per image
    boxes.reload()
    assert boxes.count_values("gt.detections.cap.label") == {"A crop.": 6}
    assert boxes.count_values("pred.detections.cap.label") == {"A crop.": 6}


def test_a_degenerate_patch_fails_with_its_reason_and_the_rest_are_labelled(boxes, model_for):
    sample = boxes.first()
    sample.gt.detections[1].bounding_box = [0.3, 0.3, 0.0, 0.2]
    sample.save()
    summary = label_samples(boxes.to_patches("gt"), model_for("caption"), "cap")
    assert summary.labelled == 5 and list(summary.failures.values()) == [
        "the patch's box [0.3, 0.3, 0.0, 0.2] covers no part of the image"
    ]
    assert _source_labels(boxes, "cap")[1] is None


def test_an_empty_patches_view_labels_nothing(boxes, model_for):
    summary = label_samples(boxes.to_patches("gt").limit(0), model_for("caption"), "cap")
    assert (summary.targeted, summary.labelled) == (0, 0) and "gt.detections.cap" not in boxes.get_field_schema(
        flat=True
    )


@pytest.mark.parametrize(
    ("task", "options", "label_field", "message"),
    [
        ("region_to_description", {"regions_field": "gt"}, "d", "already its boxes"),
        ("caption", {}, "label", "Detection's own attributes"),
        ("caption", {"embeddings_field": "emb"}, "cap", "compute_patch_embeddings"),
        ("detection", {}, "cap", "holding Classification"),
    ],
)
def test_refusals_on_a_patches_view_come_before_any_model_work(boxes, model_for, task, options, label_field, message):
    embeddings = options.pop("embeddings_field", None)
    if task == "detection":
        label_samples(boxes.to_patches("gt"), model_for("caption"), "cap")
    before = boxes.list_runs()
    with pytest.raises(ValueError, match=message):
        label_samples(boxes.to_patches("gt"), model_for(task, **options), label_field, embeddings_field=embeddings)
    assert boxes.list_runs() == before
