"""Fine-tuning really learns: ``train()`` memorises four images, then ``apply_model`` writes their boxes.

From random weights (the "seeing" shape, 585k-700k parameters), each image with its own rectangle;
constant lr 1e-3, every step a batch of all four. Measured by hand: exact after 100-275 steps, about
20 s on one CPU thread.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import synthetic  # noqa: E402

STEPS = 300
BIN = 1 / 1000


def corners(rel_xywh):
    x, y, w, h = rel_xywh
    return (x, y, x + w, y + h)


def test_train_memorises_four_images_and_apply_model_writes_their_boxes(tmp_path):
    import fiftyone_florence2 as ff2
    from fiftyone_florence2.random_checkpoint import build_random_checkpoint

    checkpoint = build_random_checkpoint(tmp_path / "seeing", "seeing")
    items = synthetic.generate("one", ["colour"] * 4, seed=3)
    dataset = synthetic.write_dataset(items, tmp_path / "images")
    result = ff2.train(dataset, task="detection", output_dir=str(tmp_path / "run"), model=str(checkpoint),
                       max_steps=STEPS, batch_size=4, learning_rate=1e-3, lr_schedule="constant", seed=0,
                       device="cpu")  # fmt: skip
    assert result.steps == STEPS

    model = ff2.load_model("detection", model=str(result.output_dir), num_beams=1)
    dataset.apply_model(model, label_field="predictions")
    for sample in dataset.sort_by("order"):
        item = items[sample.order]
        predictions = sample.predictions.detections
        assert [d.label for d in predictions] == [synthetic.ONE_OBJECT_LABEL], sample.order
        # One bin is 1/1000 of the side; a decoded bin stands for its centre, half a bin from its floor.
        assert corners(predictions[0].bounding_box) == pytest.approx(corners(item.objects[0][1]), abs=1.5 * BIN)
