"""The image processor backend a loaded checkpoint runs on: PIL for a conversion of an original-format
checkpoint, so that its pixels are the original processor's exactly; transformers' default (torchvision)
for a native checkpoint, as before."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import ROOT

from fiftyone_florence2.engine.convert import SOURCE_RECORD, convert_checkpoint
from fiftyone_florence2.engine.runner import Florence2Runner

GOLDEN = ROOT / "tests" / "data" / "original_golden" / "fp32_tokens_not_on_disk"


def _converted(tmp_path, record_edit):
    shutil.copytree(GOLDEN, tmp_path / "original")
    converted = convert_checkpoint(tmp_path / "original", tmp_path / "converted")
    record = json.loads((converted / SOURCE_RECORD).read_text())
    (converted / SOURCE_RECORD).write_text(json.dumps(record_edit(record)))
    return converted


def _without_backend(record: dict) -> dict:
    return {key: value for key, value in record.items() if key != "image_backend"}


@pytest.mark.parametrize(
    ("checkpoint", "backend", "processor_class"),
    [
        ("native", "torchvision", "CLIPImageProcessor"),
        ("converted", "pil", "CLIPImageProcessorPil"),
        ("converted before records named the backend", "pil", "CLIPImageProcessorPil"),
        ("converted, record naming torchvision", "torchvision", "CLIPImageProcessor"),
    ],
)
def test_the_runner_loads_the_image_backend_of_its_checkpoint(
    tiny_checkpoint, tmp_path, checkpoint, backend, processor_class
):
    edits = {
        "converted": lambda record: record,
        "converted before records named the backend": _without_backend,
        "converted, record naming torchvision": lambda record: {**record, "image_backend": "torchvision"},
    }
    path = tiny_checkpoint if checkpoint == "native" else _converted(tmp_path, edits[checkpoint])
    runner = Florence2Runner(str(path), device="cpu", dtype="float32")
    assert runner.image_backend == backend
    assert type(runner.processor.image_processor).__name__ == processor_class
    assert runner.preprocess.image_processor is runner.processor.image_processor  # what labelling runs use


def test_a_record_naming_an_unknown_backend_is_refused_in_one_line(tmp_path):
    from fiftyone_florence2.core.errors import CheckpointError

    converted = _converted(tmp_path, lambda record: {**record, "image_backend": "cv2"})
    with pytest.raises(CheckpointError, match=r"names the image backend 'cv2'.*convert the checkpoint again") as e:
        Florence2Runner(str(converted), device="cpu", dtype="float32")
    assert "\n" not in str(e.value)
