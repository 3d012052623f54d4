"""Which image processor backend a checkpoint's record names: PIL for a conversion of an original-format
checkpoint (whose processor made its pixels with PIL), none (transformers' default) for anything else."""

from __future__ import annotations

import json

import pytest

from fiftyone_florence2.core.errors import CheckpointError
from fiftyone_florence2.engine.convert import SOURCE_RECORD, image_backend_of

CONVERSION = {"source": "microsoft/Florence-2-base", "revision": None, "source_sha256": "ab"}
MERGE = {
    "source": "/adapters/a",
    "adapter_sha256": "cd",
    "base": "florence-community/Florence-2-base",
    "base_sha256": "ef",
}


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (None, None),  # no record: a native checkpoint
        ("", None),  # an empty file
        ("{not json", None),
        ([], None),  # not an object
        ({}, None),
        ({**CONVERSION, "image_backend": "pil"}, "pil"),
        (CONVERSION, "pil"),  # a conversion recorded before records named the backend
        (MERGE, None),  # an adapter merged into a native base
        ({**MERGE, "image_backend": "pil"}, "pil"),  # merged into an original-format base
        ({**CONVERSION, "image_backend": "torchvision"}, "torchvision"),
        ({**CONVERSION, "image_backend": "cv2"}, CheckpointError),
        ({**CONVERSION, "image_backend": 3}, CheckpointError),
        ({**CONVERSION, "image_backend": ""}, CheckpointError),
    ],
)
def test_the_record_names_the_backend(tmp_path, record, expected):
    if record is not None:
        text = record if isinstance(record, str) else json.dumps(record)
        (tmp_path / SOURCE_RECORD).write_text(text)
    if expected is CheckpointError:
        with pytest.raises(CheckpointError, match=f"{SOURCE_RECORD} names the image backend .* 'pil' or 'torchvision'"):
            image_backend_of(tmp_path)
    else:
        assert image_backend_of(tmp_path) == expected


@pytest.mark.parametrize("checkpoint", ["florence-community/Florence-2-base", "", "/no/such/directory"])
def test_a_hub_id_or_a_missing_directory_names_no_backend(checkpoint):
    assert image_backend_of(checkpoint) is None
