"""The held-out check of conversion: tiny original-format checkpoints saved by Florence-2's original (remote)
code, and the token ids that code generated from them (tests/data/original_golden, made by
scripts/original_golden.py). Converted, they must generate the same ids, token for token, from the recorded
images, through transformers' own ``generate`` (with ``backend="pil"``) and through the product's runner and
image loading, and no file of the checkpoint may be imported. Both make the original processor's pixel values
exactly (they are recorded too).

The original generated in float32 from each file's own values (half-precision files included): in half
precision the two implementations round differently and drift apart after a few tokens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import ROOT
from PIL import Image
from safetensors.torch import load_file
from transformers import Florence2ForConditionalGeneration, Florence2Processor

from fiftyone_florence2.core.prompts import build_question
from fiftyone_florence2.core.tasks import TASKS
from fiftyone_florence2.engine.convert import convert_checkpoint
from fiftyone_florence2.engine.items import Item, load_item
from fiftyone_florence2.engine.runner import Florence2Runner

DATA = ROOT / "tests" / "data" / "original_golden"
CASES = sorted(path.name for path in DATA.iterdir() if (path / "golden.json").is_file())
MARKER = "IMPORTED"  # what the checkpoint's marker code files leave if anything imports them
PIXELS = "original_pixel_values.safetensors"
# The inputs the generator gave the tasks that take one, as the product's own arguments.
TASK_INPUTS = {"text": {"text": "a red square"}, "region": {"rel_xywh": [0.1005, 0.2005, 0.4, 0.5]}}
_BY_TOKEN = {task.token: task for task in TASKS if task.token}
_FREE = next(task for task in TASKS if task.free)


def _golden(case: str) -> dict:
    return json.loads((DATA / case / "golden.json").read_text())


def _converted(case: str, tmp_path: Path) -> Path:
    """The case converted from a copy of it (a marker left behind would land in the copy, not the repository)."""
    source = tmp_path / case
    shutil.copytree(DATA / case, source)
    converted = convert_checkpoint(source, tmp_path / "native")
    assert not (source / MARKER).exists()  # no file of the checkpoint was ever imported
    return converted


def _settings(golden: dict, setting: str) -> dict:
    """The generation settings a golden was made with: the original's own defaults, then the overrides."""
    defaults = golden["original_generation_defaults"]
    settings = {
        "num_beams": defaults.get("num_beams", 1),
        "no_repeat_ngram_size": defaults.get("no_repeat_ngram_size", 0),
    }
    return {**settings, **golden["settings"][setting]}


def _task(record: dict):
    return _BY_TOKEN.get(record["task"], _FREE)


@pytest.mark.parametrize("case", CASES)
def test_transformers_generate_on_the_converted_checkpoint_reproduces_the_original(case, tmp_path):
    golden = _golden(case)
    converted = _converted(case, tmp_path)
    model = Florence2ForConditionalGeneration.from_pretrained(converted).eval()
    processor = Florence2Processor.from_pretrained(converted, backend="pil")  # as docs/REFERENCE.md says
    assert str(model.dtype) == f"torch.{golden['case']['dtype']}"  # the file's own dtype, no cast
    model.float()
    # What the original generated with by default, read from the converted generation_config.json.
    defaults = {key: getattr(model.generation_config, key) for key in golden["original_generation_defaults"]}
    assert defaults == {**golden["original_generation_defaults"], "_from_model_config": defaults["_from_model_config"]}
    pixels = load_file(str(converted.parent / case / PIXELS))
    differing = []
    for record in golden["generations"]:
        image = Image.open(DATA / record["image"]).convert("RGB")
        encoded = processor(text=[record["question"]], images=[image], return_tensors="pt")
        assert torch.equal(encoded["pixel_values"][0], pixels[record["image"]]), record["image"]
        image_tokens = processor.num_image_tokens
        assert encoded["input_ids"][0, image_tokens:].tolist() == record["input_ids"], record["prompt"]
        overrides = golden["settings"][record["setting"]]  # the rest: the converted generation_config.json
        with torch.no_grad():
            ids = model.generate(
                input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                pixel_values=encoded["pixel_values"], max_new_tokens=golden["max_new_tokens"], **overrides,
            )  # fmt: skip
        if ids[0].tolist() != record["sequence"]:
            differing.append((record["image"], record["prompt"], record["setting"]))
    assert differing == []


def _loaded_pixels(runner: Florence2Runner, image: str) -> torch.Tensor:
    """The pixel values the product makes from one of the recorded images (read and preprocessed as a
    labelling run reads and preprocesses a sample's file)."""
    item = load_item(Item(sample_id=None), str(DATA / image), runner.preprocess, runner.image_size)
    assert item.error is None, item.error
    return item.pixel_values


@pytest.mark.parametrize("case", CASES)
def test_the_runner_on_the_converted_checkpoint_reproduces_the_original_from_the_images(case, tmp_path):
    golden = _golden(case)
    runner = Florence2Runner(str(_converted(case, tmp_path)), device="cpu", dtype="float32")
    recorded = load_file(str(tmp_path / case / PIXELS))
    pixels = {image: _loaded_pixels(runner, image) for image in recorded}
    assert runner.image_backend == "pil"
    assert [image for image in recorded if not torch.equal(pixels[image], recorded[image])] == []
    generated: list[list[int]] = []

    def recording(*args, real=runner.model.generate, **kwargs):
        output = real(*args, **kwargs)
        generated.append(output.sequences[0].tolist())
        return output

    runner.model.generate = recording
    differing = []
    for record in golden["generations"]:
        features = runner.image_features(pixels[record["image"]][None])
        settings = _settings(golden, record["setting"])
        [answer] = runner.generate(
            _task(record), features, [record["question"]], [0], num_beams=settings.pop("num_beams"),
            max_new_tokens=golden["max_new_tokens"], generate_kwargs=settings, scores=False,
        )  # fmt: skip
        if generated[-1] != record["sequence"] or answer.text != runner._decode(record["sequence"], None).text:
            differing.append((record["image"], record["prompt"], record["setting"]))
    assert differing == []


@pytest.mark.parametrize("case", CASES[:1])
def test_loading_the_original_checkpoint_converts_it_and_answers_as_the_original(case, tmp_path, monkeypatch):
    import fiftyone_florence2 as f2

    monkeypatch.setenv("FLORENCE2_CACHE", str(tmp_path / "cache"))
    source = tmp_path / case
    shutil.copytree(DATA / case, source)
    golden = _golden(case)
    record = next(r for r in golden["generations"] if r["task"] == "<CAPTION>" and r["setting"] == "greedy")
    model = f2.load_model(task="caption", model=str(source), dtype="float32", device="cpu", num_beams=1)
    runner = model.runner
    assert runner.converted_from is not None and not (source / MARKER).exists()
    assert runner.converted_from["image_backend"] == runner.image_backend == "pil"
    features = runner.image_features(_loaded_pixels(runner, record["image"])[None])
    [answer] = runner.generate(
        _task(record), features, [record["question"]], [0], num_beams=1, max_new_tokens=golden["max_new_tokens"],
        generate_kwargs={"no_repeat_ngram_size": 0}, scores=False,
    )  # fmt: skip
    assert answer.text == runner._decode(record["sequence"], None).text


@pytest.mark.parametrize("case", CASES)
def test_the_products_questions_are_the_original_processors(case):
    """Each task's question, built by the product from the task and its input, is the one the original
    processor built from its own task table."""
    asked = {r["task"]: r["question"] for r in _golden(case)["generations"] if r["task"] in _BY_TOKEN}
    assert len(asked) == 15
    for token, question in asked.items():
        task = _BY_TOKEN[token]
        assert build_question(task, **TASK_INPUTS.get(task.input, {})) == question, token
