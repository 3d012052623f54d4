"""Fine-tuning's options as one frozen, typed object; the label classes each task learns from, in one table;
and the two places the run meets transformers' ``Trainer``: the data order and the images that fail mid-run."""

from __future__ import annotations

import dataclasses
import json

import fiftyone as fo
import fiftyone.core.labels as fol
import pytest
import torch
from helpers import write_image
from transformers import Trainer, TrainingArguments

from fiftyone_florence2 import train
from fiftyone_florence2.core.errors import OptionError
from fiftyone_florence2.core.tasks import TASKS, get_task
from fiftyone_florence2.training import data
from fiftyone_florence2.training.data import make_split
from fiftyone_florence2.training.loop import ExampleImages, FlorenceTrainer
from fiftyone_florence2.training.options import LORA_ONLY, TRAIN, TRAIN_OPTIONS, TrainOptions, read_train_options
from fiftyone_florence2.training.record import training_settings
from fiftyone_florence2.training.targets import answer_data, learns_from

DETECTION = get_task("detection").name


@pytest.mark.parametrize("option", TRAIN_OPTIONS, ids=lambda option: option.name)
def test_each_declared_option_is_one_attribute_with_its_declared_default(tmp_path, option):
    declared = {field.name: field for field in dataclasses.fields(TrainOptions)}
    assert declared[option.name].default == option.default
    read = read_train_options({"output_dir": str(tmp_path)})
    expected = {DETECTION: TRAIN["label_field"].default} if option.name == "label_field" else option.read(None)
    if option.name == "output_dir":
        expected = str(tmp_path)
    assert getattr(read, option.name) == expected


@pytest.mark.parametrize(
    ("given", "name", "read"),
    [
        ({}, "batch_size", 8),
        ({"label_field": "gt"}, "label_field", {DETECTION: "gt"}),
        ({"label_field": f"{DETECTION}=gt"}, "label_field", {DETECTION: "gt"}),
        ({"lora": "true", "lora_rank": 4}, "lora_rank", 4),
        ({"warmup": 0}, "warmup", 0.0),
        ({"dtype": "bf16"}, "dtype", "bfloat16"),
        ({"device": "auto"}, "device", None),
        ({"batch_size": "8"}, "batch_size", OptionError),
        ({"lora_rank": 4}, "lora_rank", OptionError),
        ({"epochs": 0}, "epochs", OptionError),
        ({"batch_sizes": 8}, "batch_sizes", ValueError),
    ],
    ids=["default", "one-field", "task-pairs", "lora-word", "int-as-float", "dtype-alias", "auto-device",
         "text-number", "lora-off", "zero-epochs", "unknown"],
)  # fmt: skip
def test_read_train_options_gives_checked_attributes(tmp_path, given, name, read):
    values = {"output_dir": str(tmp_path), **given}
    if isinstance(read, type):
        with pytest.raises(read, match=name):
            read_train_options(values)
        return
    options = read_train_options(values)
    assert isinstance(options, TrainOptions)
    assert getattr(options, name) == read and type(getattr(options, name)) is type(read)


def test_the_options_are_frozen_and_not_a_dict(tmp_path):
    options = read_train_options({"output_dir": str(tmp_path)})
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.batch_size = 1
    with pytest.raises(TypeError):
        options["batch_size"]  # no string-keyed lookups left to fall back on
    assert dataclasses.replace(options, batch_size=2).batch_size == 2 and options.batch_size == 8
    assert list(options.as_dict()) == list(TRAIN)


@pytest.mark.parametrize("val_view", [False, True], ids=["no-view", "val-view"])
def test_the_record_holds_every_setting_as_json(dataset, tmp_path, val_view):
    view = dataset.limit(1) if val_view else None
    options = read_train_options({"output_dir": str(tmp_path), "label_field": "gt", "val_view": view})
    settings = json.loads(json.dumps(training_settings(options)))
    assert settings["batch_size"] == 8 and settings["label_field"] == {DETECTION: "gt"}
    assert (settings["val_view"] is not None) is val_view
    assert "overwrite" not in settings and "resume" not in settings


@pytest.mark.parametrize("name", LORA_ONLY)
def test_the_lora_only_options_are_the_declared_ones_and_need_lora(tmp_path, name):
    assert TRAIN[name].requires({"lora": False}) and TRAIN[name].requires({"lora": True}) is None
    given = {"output_dir": str(tmp_path), name: TRAIN[name].default * 2}
    with pytest.raises(OptionError, match=f"{name} is read only with lora=True"):
        read_train_options(given)
    assert getattr(read_train_options({**given, "lora": True}), name) == TRAIN[name].default * 2


def test_only_the_lora_settings_are_lora_only():
    assert set(LORA_ONLY) == {"lora_rank", "lora_alpha"}
    assert all(TRAIN[name].requires is None for name in set(TRAIN) - set(LORA_ONLY))


LABELS = {fol.Classification: fol.Classification(label="a car"), fol.Detections: fol.Detections(),
          fol.Polylines: fol.Polylines()}  # fmt: skip


@pytest.mark.parametrize("kind", list(LABELS), ids=lambda kind: kind.__name__)
@pytest.mark.parametrize("task", TASKS, ids=lambda task: task.name)
def test_answer_data_takes_exactly_the_labels_the_task_learns_from(task, kind):
    if kind in learns_from(task):
        answer_data(task, LABELS[kind])
        return
    with pytest.raises(ValueError, match=f"trains from .*not {kind.__name__}"):
        answer_data(task, LABELS[kind])


@pytest.fixture
def ordered(tmp_path):
    """Eight samples with one box each, whose ``order`` runs against the order they were added."""
    ds = fo.Dataset()
    box = fo.Detections(detections=[fo.Detection(label="car", bounding_box=[0.1, 0.2, 0.3, 0.4])])
    ds.add_samples(
        [
            fo.Sample(filepath=write_image(tmp_path / f"o{i}.png", size=(32, 32), seed=i), gt=box, order=7 - i)
            for i in range(8)
        ]
    )
    yield ds
    ds.delete()


class _Echo(torch.nn.Module):
    """A model that takes only ``labels``: a batch that still carries anything else fails its forward."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))

    def forward(self, labels):
        return {"loss": self.weight.sum() * labels.float().mean()}


def _trainer(tmp_path, examples, shuffle: bool, collate) -> FlorenceTrainer:
    args = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=3, use_cpu=True,
                             report_to="none", seed=0, remove_unused_columns=False)  # fmt: skip
    return FlorenceTrainer(model=_Echo(), args=args, train_dataset=ExampleImages(examples), data_collator=collate,
                           shuffle=shuffle)  # fmt: skip


def test_the_sampler_hook_we_override_is_transformers_own():
    assert "_get_train_sampler" in vars(Trainer)  # renamed upstream: our override would silently do nothing
    assert "_get_train_sampler" in vars(FlorenceTrainer)


@pytest.mark.parametrize("shuffle", [False, True], ids=["in-order", "shuffled"])
def test_the_trainer_reads_the_examples_in_the_views_order_unless_shuffling(ordered, tmp_path, shuffle, monkeypatch):
    view = ordered.sort_by("order")
    split = make_split(view, read_train_options({"output_dir": str(tmp_path), "label_field": "gt"}))
    calls = []
    real = FlorenceTrainer._get_train_sampler

    def spy(self, *args, **kwargs):
        calls.append(shuffle)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(FlorenceTrainer, "_get_train_sampler", spy)
    trainer = _trainer(tmp_path, split.train, shuffle, lambda items: [item["example"].sample_id for item in items])
    seen = [sample_id for batch in trainer.get_train_dataloader() for sample_id in batch]
    assert calls, "the Trainer no longer asks for its sampler through _get_train_sampler"
    assert sorted(seen) == sorted(view.values("id"))
    assert (seen == view.values("id")) is not shuffle


@pytest.mark.parametrize("failed", [[], [("s1", "not an image")], [("s1", "gone"), ("s2", "truncated")]],
                         ids=["none", "one", "two"])  # fmt: skip
def test_compute_loss_keeps_the_reasons_of_failed_images_and_hides_them_from_the_model(tmp_path, failed):
    trainer = _trainer(tmp_path, [], False, None)
    loss = trainer.compute_loss(trainer.model, {"labels": torch.ones(2, 3), "failed": list(failed)})
    assert float(loss.detach()) == 1.0
    assert trainer.skips == dict(failed)


def test_an_image_that_stops_reading_during_training_is_skipped_with_its_reason(
    ordered, tiny_checkpoint, tmp_path, monkeypatch
):
    first = ordered.sort_by("order").first()
    monkeypatch.setattr(data, "readable", lambda examples, skips, draft_wh: examples)  # the check passed
    with open(first.filepath, "wb") as broken:  # then the file broke
        broken.write(b"not an image any more")
    result = train(ordered.sort_by("order"), progress=False, label_field="gt", output_dir=str(tmp_path / "run"),
                   model=str(tiny_checkpoint), max_steps=1, batch_size=2, shuffle=False, device="cpu")  # fmt: skip
    assert list(result.skips) == [first.id]
    assert result.skips[first.id]
