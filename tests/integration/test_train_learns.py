"""Fine-tuning really learns: ``train()`` memorises four images, then ``apply_model`` writes their boxes.

From random weights (the "seeing" shape, 700k parameters, no dropout), each image with its own
rectangle; constant lr 1e-3, every step a batch of all four. Measured with a plain loop: all four
exact after 150 steps (images of seeds 0 and 3); with BART's default dropout of 0.1 it took 275 or
more, and with the Trainer's default clipping (global norm 1.0) it stalls at a loss of 0.08 with two
of the images answered alike, hence ``max_grad_norm=0``. ``save_steps`` keeps ``train()`` from saving
a checkpoint at each one-step epoch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from support import synthetic  # noqa: E402

STEPS = 300
BIN = 1 / 1000


def corners(rel_xywh):
    x, y, w, h = rel_xywh
    return (x, y, x + w, y + h)


@pytest.mark.slow
def test_train_memorises_four_images_and_apply_model_writes_their_boxes(tmp_path):
    import fiftyone_florence2 as ff2
    from fiftyone_florence2.engine.random_checkpoint import build_random_checkpoint

    checkpoint = build_random_checkpoint(tmp_path / "seeing", "seeing")
    items = synthetic.generate("one", ["colour"] * 4, seed=3)
    dataset = synthetic.write_dataset(items, tmp_path / "images")
    result = ff2.train(dataset, task="detection", output_dir=str(tmp_path / "run"), model=str(checkpoint),
                       max_steps=STEPS, batch_size=4, learning_rate=1e-3, lr_schedule="constant", seed=0,
                       max_grad_norm=0, save_steps=STEPS, device="cpu")  # fmt: skip
    assert result.steps == STEPS

    model = ff2.load_model("detection", model=str(result.output_dir), num_beams=1)
    dataset.apply_model(model, label_field="predictions")
    for sample in dataset.sort_by("order"):
        item = items[sample.order]
        predictions = sample.predictions.detections
        assert [d.label for d in predictions] == [synthetic.ONE_OBJECT_LABEL], sample.order
        # One bin is 1/1000 of the side; a decoded bin stands for its centre, half a bin from its floor.
        assert corners(predictions[0].bounding_box) == pytest.approx(corners(item.objects[0][1]), abs=1.5 * BIN)


@pytest.mark.parametrize("given, read", [(None, 1.0), (0, 0.0), (0.5, 0.5), (-1, ValueError)])
def test_max_grad_norm_reaches_the_trainer(tmp_path, given, read):
    from fiftyone_florence2.training.options import read_train_options
    from fiftyone_florence2.training.trainer import training_args

    options = {"output_dir": str(tmp_path), **({"max_grad_norm": given} if given is not None else {})}
    if read is ValueError:
        with pytest.raises(ValueError, match="max_grad_norm must be at least 0"):
            read_train_options(options)
        return
    checked = read_train_options({**options, "device": "cpu"})
    assert training_args(checked, tmp_path, validating=False, steps_per_epoch=1).max_grad_norm == read
