"""Several tasks in one App run, and the dry run: the operators executed from Python on the tiny model."""

from __future__ import annotations

import fiftyone.core.collections as focol
import fiftyone.core.labels as fol
import fiftyone.operators as foo
import numpy as np
import pytest
from fiftyone.operators.executor import ExecutionContext
from helpers import force
from helpers.operators import COMMON, FAST, PLUGIN, _snapshot, assert_refused, form, inputs_of, run

from fiftyone_florence2.core.tasks import get_task
from fiftyone_florence2.engine.runner import Florence2Runner
from fiftyone_florence2.labels.convert import summarize

DRY_RUN = f"{PLUGIN}/florence2_dry_run"
ANSWERS = {
    "caption": "a cat on a mat",
    "detection": "car<loc_100><loc_200><loc_500><loc_900>dog<loc_10><loc_20><loc_30><loc_40>",
}


@pytest.fixture
def dry_run_operator(operator):
    return foo.get_operator(DRY_RUN)


def dry_run(dataset, selected=(), current_sample=None, **params):
    ctx = {"dataset": dataset, "selected": list(selected), "current_sample": current_sample, "params": params}
    return foo.execute_operator(DRY_RUN, ctx=ctx)


def dry_run_form(operator, dataset, selected=(), current_sample=None, **params):
    request = {"dataset_name": dataset.name, "selected": list(selected), "current_sample": current_sample}
    ctx = ExecutionContext(request_params={**request, "params": params})
    return operator.resolve_type(ctx, "inputs").type.properties


# Each row: the chosen tasks, the inputs the form adds to COMMON, and the text inputs it offers.
TASK_CHOICES = [
    (["caption", "detection"], set(), []),
    (["caption", "phrase_grounding"], {"text_input", "prompt"}, ["prompt", "prompt_field"]),
    (["segmentation", "open_vocabulary_detection"], {"text_input", "prompt", "masks"},
     ["prompt", "prompt_field", "classes"]),
    (["segmentation", "phrase_grounding"], {"text_input", "prompt", "masks"}, ["prompt", "prompt_field"]),
    (["caption", "region_to_category"], {"regions_field"}, []),
    (["ocr", "region_to_segmentation"], {"regions_field", "masks"}, []),
    (["segmentation"], {"text_input", "prompt", "masks"}, ["prompt", "prompt_field", "classes"]),
]  # fmt: skip


@pytest.mark.parametrize(("tasks", "added", "texts"), TASK_CHOICES, ids=["+".join(row[0]) for row in TASK_CHOICES])
def test_form_shows_the_inputs_every_chosen_task_needs_and_lists_each_field(operator, boxes, tasks, added, texts):
    properties = form(operator, boxes, tasks=tasks)
    tiled = {"tiles", "nms_iou"} if any(get_task(task).finds_instances for task in tasks) else set()
    assert inputs_of(properties) == COMMON | added | tiled
    assert properties["tasks"].default == tasks
    if texts:
        assert properties["text_input"].type.values == texts
    summary = properties["summary"].view.label
    assert all(f"florence2_{task} (" in summary for task in tasks)
    if len(tasks) > 1:
        assert "prefix" in properties["label_field"].view.description


# Each row: the tasks as a Python caller gives them, and the fields a run with label_field "out" writes.
COMPATIBLE = [
    ({"task": "caption"}, {"caption": "out"}),
    ({"task": ["caption"]}, {"caption": "out"}),
    ({"tasks": ["caption"]}, {"caption": "out"}),
    ({"task": "caption", "tasks": ["caption"]}, {"caption": "out"}),
    ({"task": ["caption", "detection"]}, {"caption": "out_caption", "detection": "out_detection"}),
    ({"tasks": ["caption", "detection"]}, {"caption": "out_caption", "detection": "out_detection"}),
]


@pytest.mark.parametrize(("given", "fields"), COMPATIBLE, ids=[str(row[0]) for row in COMPATIBLE])
def test_task_may_be_a_name_or_a_list_and_tasks_a_list(operator, dataset, tiny_checkpoint, given, fields):
    result = run(dataset, model=str(tiny_checkpoint), label_field="out", **FAST, **given).result
    assert result["label_fields"] == fields
    schema = dataset.get_field_schema()
    assert all(dataset.count(name) == len(dataset) for name in fields.values())
    assert {name for name in schema if name.startswith("out")} == set(fields.values())


BAD_TASKS = [
    ({"tasks": []}, "At least one task is required"),
    ({"tasks": ["caption", "nope"]}, "Unknown Florence-2 task 'nope'"),
    ({"tasks": ["caption", "caption"]}, "given more than once: caption"),
    ({"task": 7}, "Unknown Florence-2 task 7"),
    ({"task": "caption", "tasks": ["detection"]}, "Pass task or tasks, not both"),
    ({"tasks": ["caption", "phrase_grounding"]}, "need text"),
    ({"tasks": ["segmentation", "phrase_grounding"], "classes": ["car"]}, '"Classes" is not read by phrase_grounding'),
    ({"tasks": ["caption", "region_to_ocr"]}, 'need "Regions field"'),
    ({"tasks": ["caption", "detection"], "label_field": "x y"}, "Invalid label field 'x y'"),
    ({"tasks": ["caption", "detection"]}, "'out_detection' already holds Classification, but task 'detection'"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_TASKS, ids=[m for _, m in BAD_TASKS])
def test_bad_task_choices_are_refused_in_the_form_and_the_run(operator, boxes, tiny_checkpoint, bad, message):
    boxes.set_values("out_detection", [fol.Classification(label="x")] * len(boxes))
    params = {"model": str(tiny_checkpoint), "label_field": "out", **FAST, **bad}
    assert_refused(run, lambda dataset, **p: form(operator, dataset, **p), boxes, params, message)


def test_the_existing_label_check_covers_every_field_in_one_aggregation(operator, boxes, monkeypatch):
    boxes.set_values("florence2_detection", [None, fol.Detections(), None, None, None])
    problem = form(operator, boxes, tasks=["caption", "detection"])["problem"].error_message
    assert "1 sample(s) already have labels in florence2_detection" in problem
    assert "overwrite" in form(operator, boxes, tasks=["caption", "detection"])
    # The form reads no ids, and counts as often for three tasks as for one.
    counts, reads = [], []
    real_count, real_values = focol.SampleCollection.count, focol.SampleCollection.values
    monkeypatch.setattr(
        focol.SampleCollection, "count", lambda self, *a, **k: counts.append(1) or real_count(self, *a, **k)
    )
    monkeypatch.setattr(
        focol.SampleCollection, "values", lambda self, *a, **k: reads.append(a) or real_values(self, *a, **k)
    )
    for tasks in (["detection"], ["caption", "detection", "ocr"]):
        counts.clear()
        form(operator, boxes, tasks=tasks, label_field="florence2" if len(tasks) > 1 else "florence2_detection")
        assert len(counts) == 2, tasks  # the target's size, and the samples with labels in any field
    assert reads == []


def test_several_tasks_share_each_batchs_vision_features(operator, dataset, tiny_checkpoint, monkeypatch):
    calls = []
    real = Florence2Runner.image_features
    monkeypatch.setattr(Florence2Runner, "image_features", lambda self, pv: calls.append(len(pv)) or real(self, pv))
    tasks = ["caption", "detection", "ocr"]
    result = run(dataset, tasks=tasks, model=str(tiny_checkpoint), **FAST).result
    assert calls == [2, 2, 1]  # one vision pass per batch of 2, for all three tasks
    assert result["label_fields"] == {task: f"florence2_{task}" for task in tasks}
    assert result["label_types"] == {"caption": "Classification", "detection": "Detections", "ocr": "Classification"}


def test_masks_change_the_label_type_the_form_shows(operator, dataset):
    summary = form(operator, dataset, tasks=["caption", "segmentation"], prompt="a cat", masks=True)["summary"]
    assert "florence2_segmentation (Detections)" in summary.view.label


@pytest.fixture
def forced(plugin_module, tokenizer, monkeypatch):
    """Makes the operators' model emit :data:`ANSWERS` (per task), so that what they show is known."""
    runs = plugin_module.runs
    real = runs.Florence2Model

    def model(config, runner=None):
        config.generate_kwargs = force(tokenizer, lambda task, question: ANSWERS[task])
        return real(config, runner=runner)

    monkeypatch.setattr(runs, "Florence2Model", model)


def test_dry_run_shows_each_label_per_sample_and_task_and_writes_nothing(boxes, tiny_checkpoint, forced):
    ids = boxes.values("id")
    boxes.set_values("florence2_detection", [fol.Detections()] * len(boxes))  # a run would be refused
    before = _snapshot(boxes)
    result = dry_run(boxes, ids[1:3], tasks=["caption", "detection"], model=str(tiny_checkpoint), num_beams=1).result
    assert _snapshot(boxes) == before
    assert result["previewed"] == 2
    rows = [(r["sample_id"], r["task"], r["label_type"], r["labels"], r["problem"]) for r in result["rows"]]
    assert rows == [
        (i, task, label_type, text, None)
        for i in ids[1:3]
        for task, label_type, text in [
            ("caption", "Classification", "a cat on a mat"),
            ("detection", "Detections", "2 boxes: car, dog"),
        ]
    ]
    assert [len(r["confidences"]) for r in result["rows"]] == [1, 2, 1, 2]
    assert all(0 < c <= 1 for r in result["rows"] for c in r["confidences"])
    assert "| img_1.jpg | detection (Detections) | 2 boxes: car, dog | 0." in result["table"]


def test_dry_run_previews_the_open_sample_and_applies_the_threshold(boxes, tiny_checkpoint, forced):
    ids = boxes.values("id")
    params = {"task": "detection", "model": str(tiny_checkpoint), "num_beams": 1, "confidence_thresh": 0.5}
    result = dry_run(boxes, ids[:3], current_sample=ids[4], **params).result
    assert [(r["sample_id"], r["labels"], r["confidences"]) for r in result["rows"]] == [(ids[4], "0 boxes", [])]


@pytest.mark.parametrize(
    ("thresh", "labels"), [("1, car=0", "1 box: car"), ("dog=0,*=1", "1 box: dog"), ("0", "2 boxes: car, dog")]
)
def test_the_form_takes_a_threshold_per_class(dry_run_operator, boxes, tiny_checkpoint, forced, thresh, labels):
    ids = boxes.values("id")
    params = {"task": "detection", "model": str(tiny_checkpoint), "num_beams": 1, "confidence_thresh": thresh}
    assert (
        "CLASS=NUMBER" in dry_run_form(dry_run_operator, boxes, ids[:1], **params)["confidence_thresh"].view.description
    )
    [row] = dry_run(boxes, ids[:1], **params).result["rows"]
    assert row["labels"] == labels


def test_the_form_refuses_per_class_thresholds_that_leave_classes_out(dry_run_operator, boxes, tiny_checkpoint):
    params = {"task": "detection", "model": str(tiny_checkpoint), "confidence_thresh": "car=0.5"}
    problem = dry_run_form(dry_run_operator, boxes, boxes.values("id")[:1], **params)["problem"]
    assert problem.invalid
    assert problem.error_message.startswith('"Confidence threshold" names no threshold for the classes it does not')


def test_dry_run_reports_a_sample_it_cannot_read(boxes, tiny_checkpoint, forced):
    first = boxes.first()
    first.filepath = "/no/such/image.jpg"
    first.save()
    result = dry_run(boxes, [first.id], task="caption", model=str(tiny_checkpoint), num_beams=1).result
    [row] = result["rows"]
    assert row["labels"] is None and "file not found" in row["problem"]
    assert "not labelled: file not found" in result["table"]


def test_dry_run_loads_the_weights_the_run_then_uses(operator, dataset, tiny_checkpoint, runner_loads):
    loads = runner_loads
    dry_run(dataset, dataset.values("id")[:1], task="caption", model=str(tiny_checkpoint), **FAST)
    run(dataset, task="caption", model=str(tiny_checkpoint), **FAST)
    assert loads == [str(tiny_checkpoint)]


DRY_RUN_REFUSALS = [
    ({"selected": []}, "Open a sample, or select up to 8 samples"),
    ({"selected": "nine"}, "previews at most 8 samples, and 9 are selected"),
    ({"params": {"task": "phrase_grounding"}}, "need text"),
    ({"params": {"task": "phrase_grounding", "prompt": " "}}, "The prompt is empty"),
    ({"params": {"task": "region_to_category", "regions_field": "cls"}}, "must be a Detections field"),
    ({"params": {"model": "/no/such/checkpoint"}}, "is not a directory that exists"),
    ({"params": {"tasks": []}}, "At least one task is required"),
    ({"selected": ["not-an-id"]}, "'not-an-id' is not a sample id (24 hexadecimal digits)"),
]


@pytest.mark.parametrize(("given", "message"), DRY_RUN_REFUSALS, ids=[m for _, m in DRY_RUN_REFUSALS])
def test_dry_run_refusals(dry_run_operator, boxes, tiny_checkpoint, given, message):
    first = boxes.first()
    boxes.add_samples([first.copy() for _ in range(4)])
    ids = boxes.values("id")
    selected = ids[:9] if given.get("selected") == "nine" else given.get("selected", ids[:1])
    params = {"model": str(tiny_checkpoint), **given.get("params", {})}
    execute = lambda dataset, **p: dry_run(dataset, selected, **p)  # noqa: E731
    assert_refused(execute, lambda dataset, **p: dry_run_form(dry_run_operator, dataset, selected, **p), boxes,
                   params, message)  # fmt: skip


def test_dry_run_form_is_the_labelling_form_without_the_runs_own_options(dry_run_operator, boxes):
    properties = dry_run_form(dry_run_operator, boxes, boxes.values("id")[:2], tasks=["caption", "segmentation"])
    run_only = {"view_target", "label_field", "skip_existing", "embeddings_field", "delegate"}
    assert inputs_of(properties) == (COMMON - run_only) | {"text_input", "prompt", "masks", "tiles", "nms_iou"}
    summary = properties["summary"].view.label
    assert "Previews 2 sample(s) with caption (Classification), segmentation (Polylines)" in summary
    assert "writes nothing" in summary


def test_dry_run_output_shows_the_table(dry_run_operator, dataset):
    results = {"previewed": 1, "rows": [], "table": "| sample |", "seconds": 0.1}
    ctx = ExecutionContext(request_params={"dataset_name": dataset.name, "params": {}, "results": results})
    outputs = dry_run_operator.resolve_type(ctx, "outputs").type.properties
    assert type(outputs["table"].view).__name__ == "MarkdownView"
    assert "nothing was written" in outputs["table"].view.label


def _label(kind: str, n: int, **extra):
    make = {"box": fol.Detection, "polygon": fol.Polyline}[kind]
    items = [make(label=f"x{i}", confidence=i / 20, **extra) for i in range(n)]
    return fol.Detections(detections=items) if kind == "box" else fol.Polylines(polylines=items)


SUMMARIES = [
    (None, "nothing", []),
    (fol.Classification(label="a cat", confidence=0.5), "a cat", [0.5]),
    (fol.Classification(), "(empty text)", [None]),
    (fol.Detections(), "0 boxes", []),
    (_label("box", 1), "1 box: x0", [0.0]),
    (_label("box", 2, mask=np.ones((2, 2), bool)), "2 masks: x0, x1", [0.0, 0.05]),
    (_label("polygon", 3), "3 polygons: x0, x1, x2", [0.0, 0.05, 0.1]),
    (_label("box", 12), "12 boxes: x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, and 2 more", [i / 20 for i in range(12)]),
    (fol.Detections(detections=[fol.Detection(label=None)]), "1 box: None", [None]),
]


@pytest.mark.parametrize(("label", "text", "confidences"), SUMMARIES, ids=[row[1] for row in SUMMARIES])
def test_label_summaries(label, text, confidences):
    assert summarize(label) == (text, confidences)


def test_preview_table_cells(plugin_module):
    table = plugin_module.dry_run.preview_table
    assert table([]) == "None of the chosen samples could be read."
    row = {"filepath": "/a/b.jpg", "task": "caption", "label_type": "Classification", "problem": None}
    hostile = table([{**row, "labels": "a | b\nc", "confidences": [None, *[0.5] * 11]}])
    assert (
        hostile.splitlines()[-1]
        == "| b.jpg | caption (Classification) | a / b c | none, " + ", ".join(["0.50"] * 9) + ", ... (12) |"
    )


def test_run_name_names_every_task_and_field(operator, dataset):
    ctx = ExecutionContext(request_params={"dataset_name": dataset.name, "params": {"tasks": ["caption", "ocr"]}})
    assert operator.resolve_run_name(ctx) == "Florence-2 caption, ocr → florence2_caption, florence2_ocr"
