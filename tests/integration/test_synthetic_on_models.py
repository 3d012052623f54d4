"""The synthetic detection data on FiftyOne and on the model: the dataset replays the order, the seeing
shape's grid."""

from __future__ import annotations

from pathlib import Path

from support import synthetic


def test_the_dataset_replays_the_order(tmp_path):
    items = synthetic.generate("multi", ["bw", "colour", "colour"], seed=1)
    dataset = synthetic.write_dataset(items, tmp_path)
    view = dataset.sort_by("order")
    assert view.values("style") == ["bw", "colour", "colour"]
    boxes = [[tuple(d.bounding_box) for d in dets.detections] for dets in view.values("ground_truth")]
    assert boxes == [[box for _, box in item.objects] for item in items]
    assert all(Path(p).is_file() for p in view.values("filepath"))


def test_the_seeing_shape_sees_an_8x8_grid(tmp_path):
    import torch
    from PIL import Image
    from transformers import Florence2ForConditionalGeneration, Florence2Processor

    from fiftyone_florence2.engine.random_checkpoint import build_random_checkpoint, image_tokens

    assert (image_tokens("tiny"), image_tokens("seeing"), image_tokens("base")) == (5, 65, 577)
    path = build_random_checkpoint(tmp_path, "seeing")
    model = Florence2ForConditionalGeneration.from_pretrained(path)
    processor = Florence2Processor.from_pretrained(path)
    inputs = processor(images=[Image.new("RGB", (64, 64))], text=["<OD>"], return_tensors="pt")
    assert model.get_image_features(inputs["pixel_values"]).pooler_output.shape[1] == 65
    labels = processor.tokenizer(["rectangle<loc_1><loc_2><loc_3><loc_4>"], return_tensors="pt").input_ids
    loss = model(**inputs, labels=labels).loss
    assert torch.isfinite(loss) and loss > 0
