"""The labelling engine behind the CLI and the App: checks first, ids carried, failures recorded."""

from __future__ import annotations

import fiftyone as fo
import fiftyone.core.labels as fol
import pytest
from fiftyone import ViewField as F
from helpers import force, write_image

from fiftyone_florence2 import load_model
from fiftyone_florence2.runs.labelling import check_label_field, check_run, label_samples, shard_ids
from fiftyone_florence2.runs.model import Florence2ModelConfig

ANSWER = "car<loc_100><loc_200><loc_500><loc_900>"


@pytest.fixture
def model(tiny_checkpoint, tokenizer):
    return load_model("detection", model=str(tiny_checkpoint), generate_kwargs=force(tokenizer, ANSWER))


def test_labels_every_sample_in_bulk(dataset, model):
    summary = label_samples(dataset, model, "det", batch_size=2)
    assert (summary.targeted, summary.labelled, summary.failures) == (5, 5, {})
    assert all(len(d.detections) == 1 for d in dataset.values("det"))


def test_bad_file_in_a_batch_leaves_the_others_labelled(dataset, model, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_text("this is not a jpeg")
    sample = fo.Sample(filepath=str(broken), note="keep me")
    dataset.add_sample(sample)
    summary = label_samples(dataset, model, "det", batch_size=6)
    assert summary.labelled == 5
    assert list(summary.failures) == [sample.id]
    assert "not an image file" in summary.failures[sample.id]
    sample.reload()
    assert sample.det is None and sample.note == "keep me"


@pytest.mark.parametrize(
    ("existing", "options", "error"),
    [
        (fol.Classification(label="x"), {}, "already holds Classification"),
        ("a string", {}, "already holds StringField"),
        (fol.Detections(detections=[]), {}, "already have labels"),
    ],
)
def test_refuses_before_any_model_work(dataset, existing, options, error):
    first = dataset.first()
    first["det"] = existing
    first.save()
    config = Florence2ModelConfig({"task": "detection", "model": "org/any-model"})
    before = dataset.values("det")
    with pytest.raises(ValueError, match=error):
        check_run(dataset, config, "det", **options)
    assert dataset.values("det") == before


def test_skip_existing_and_overwrite(dataset, model):
    first = dataset.first()
    first["det"] = fol.Detections(detections=[fol.Detection(label="mine", bounding_box=[0, 0, 0.5, 0.5])])
    first.save()
    summary = label_samples(dataset, model, "det", skip_existing=True)
    assert (summary.skipped, summary.labelled) == (1, 4)
    assert dataset.first().det.detections[0].label == "mine"
    summary = label_samples(dataset, model, "det", overwrite=True)
    assert summary.labelled == 5 and dataset.first().det.detections[0].label == "car"


@pytest.mark.parametrize("name", ["", "1abc", "a.b", "a b", "$x", "_private", "filepath", "id", None, 5])
def test_invalid_label_fields(name):
    with pytest.raises(ValueError):
        check_label_field(name)


def test_prompt_and_regions_fields_are_checked(dataset):
    with pytest.raises(ValueError, match="does not exist"):
        check_run(
            dataset, Florence2ModelConfig({"task": "phrase_grounding", "prompt_field": "nope", "model": "o/m"}), "g"
        )
    dataset.set_values("cls", [fol.Classification(label="a")] * 5)
    with pytest.raises(ValueError, match="must be a Detections field, not Classification"):
        check_run(dataset, Florence2ModelConfig({"task": "region_to_ocr", "regions_field": "cls", "model": "o/m"}), "r")


def test_shards_are_disjoint_and_cover_everything():
    ids = [f"{i:024x}" for i in range(1000, 1300)]
    parts = [shard_ids(ids, (i, 4)) for i in range(4)]
    assert sorted(i for part in parts for i in part) == sorted(ids)
    assert all(60 <= len(p) <= 90 for p in parts)
    with pytest.raises(ValueError):
        shard_ids(ids, (4, 4))


def test_progress_callback_sees_every_sample(dataset, model):
    seen = []
    label_samples(dataset, model, "det", batch_size=2, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 5), (2, 5), (4, 5), (5, 5)]


def test_view_labels_only_its_samples(dataset, model, tmp_path):
    view = dataset.limit(2)
    label_samples(view, model, "det")
    assert [v is not None for v in dataset.values("det")] == [True, True, False, False, False]


def test_unusual_images_are_labelled(dataset, model, tmp_path):
    for mode in ("L", "RGBA", "P", "CMYK"):
        ext = "jpg" if mode in ("L", "CMYK") else "png"
        dataset.add_sample(fo.Sample(filepath=write_image(tmp_path / f"m_{mode}.{ext}", mode=mode)))
    summary = label_samples(dataset, model, "det", batch_size=4)
    assert summary.failures == {} and summary.labelled == 9


def test_a_views_label_filters_apply_to_input_regions(dataset, tiny_checkpoint, tokenizer):
    boxes = [
        fol.Detection(label="car", bounding_box=[0.1, 0.1, 0.3, 0.3]),
        fol.Detection(label="tree", bounding_box=[0.5, 0.5, 0.2, 0.2]),
    ]
    dataset.set_values("gt", [fol.Detections(detections=[d.copy() for d in boxes]) for _ in range(len(dataset))])
    model = load_model(
        "region_to_category",
        model=str(tiny_checkpoint),
        regions_field="gt",
        generate_kwargs=force(tokenizer, "vehicle<loc_100><loc_100><loc_400><loc_400>"),
    )
    label_samples(dataset.filter_labels("gt", F("label") == "car"), model, "category")
    for gt, out in zip(dataset.values("gt"), dataset.values("category")):
        assert [d.region_id for d in out.detections] == [gt.detections[0].id]
