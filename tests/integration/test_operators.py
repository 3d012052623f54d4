"""The App operator, executed from Python on the tiny offline model: form, runs, refusals, plugin install."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import fiftyone as fo
import fiftyone.operators as foo
import pytest
from fiftyone.operators.delegated import DelegatedOperationService
from fiftyone.operators.executor import ExecutionContext, ExecutionError
from helpers import ROOT
from helpers.operators import COMMON, FAST, PLUGIN, URI, _snapshot, assert_refused, form, inputs_of, run, run_from_app
from helpers.repo_archive import HIDE_INSTALLED, env_without_the_library, served_repository

from fiftyone_florence2.core.tasks import TASK_NAMES, TASKS, get_task
from fiftyone_florence2.runs.records import list_runs


def _example_params(task, tiny_checkpoint) -> dict:
    params = {"task": task.name, "model": str(tiny_checkpoint), "label_field": f"out_{task.name}", **FAST}
    if task.input == "text":
        params["prompt"] = "a thing"
    if task.input == "region":
        params["regions_field"] = "gt"
    return params


# The first task of each kind of input and label type in the table.
EXAMPLES: dict[tuple[str, str], str] = {}
for _task in TASKS:
    EXAMPLES.setdefault((_task.input, _task.label_type), _task.name)


@pytest.mark.parametrize("task_name", EXAMPLES.values())
def test_execute_from_python_writes_the_tasks_label_type(operator, boxes, tiny_checkpoint, task_name):
    # Regression: the operator was always a generator, which execute_operator exhausts, so
    # Python got result None; now it gets the summary that the App's notification describes.
    task = get_task(task_name)
    result = run(boxes, **_example_params(task, tiny_checkpoint))
    field = f"out_{task.name}"
    schema = boxes.get_field_schema()
    if task.free:  # the random model's answers are empty: nothing types the field, every sample is skipped
        assert field not in schema
        return
    assert schema[field].document_type.__name__ == task.label_type
    assert boxes.count(field) == len(boxes)
    summary = result.result
    assert summary["label_fields"] == {task.name: field} and summary["label_types"] == {task.name: task.label_type}
    assert (summary["targeted"], summary["labelled"], summary["skipped"], summary["failed"]) == (len(boxes), 5, 0, 0)
    assert list_runs(boxes)[-1] == summary["run_key"]
    assert json.loads(json.dumps(summary)) == summary  # JSON, as an operator's result must be


# Each row: the run, and the App operations it streams (progress updates collapsed into one).
APP_RUNS = [
    ("labels", {"task": "caption", "label_field": "app_cap"}, ["set_progress", "reload_dataset", "notify"]),
    ("queues shards", {"task": "caption", "label_field": "app_shards", "shards": 2, "delegate": True}, ["notify"]),
]


@pytest.mark.parametrize(("params", "expected"), [row[1:] for row in APP_RUNS], ids=[row[0] for row in APP_RUNS])
def test_the_app_gets_progress_then_a_reload_and_a_notification(operator, dataset, tiny_checkpoint, params, expected):
    messages = run_from_app(dataset, model=str(tiny_checkpoint), **FAST, **params)
    assert all(m["cls"] == "InvocationRequest" for m in messages)
    requested = [m["body"]["operator_uri"] for m in messages]
    assert [name for i, name in enumerate(requested) if requested[i - 1 : i] != [name]] == expected
    if "shards" in params:
        assert len(DelegatedOperationService().list_operations(dataset_name=dataset.name, run_state="queued")) == 2
        return
    progress = [m["body"]["params"]["label"] for m in messages if m["body"]["operator_uri"] == "set_progress"]
    assert progress[-1] == f"{len(dataset)}/{len(dataset)} images"
    assert "Florence-2 labelled 5 of 5 sample(s) into app_cap" in messages[-1]["body"]["params"]["message"]
    assert dataset.count("app_cap") == len(dataset)


def test_the_model_is_loaded_once_per_process(operator, dataset, tiny_checkpoint, runner_loads):
    loads = runner_loads
    run(dataset, task="caption", model=str(tiny_checkpoint), label_field="first", **FAST)
    run(dataset, task="detection", model=str(tiny_checkpoint), label_field="second", **FAST)
    assert loads == [str(tiny_checkpoint)]
    assert dataset.count("first") == dataset.count("second") == len(dataset)


@pytest.mark.parametrize("task", TASKS, ids=TASK_NAMES)
def test_form_shows_exactly_the_inputs_the_task_needs(operator, boxes, task):
    expected = set(COMMON)
    if task.input == "text":
        expected |= {"text_input", "prompt"}
    if task.input == "region":
        expected |= {"regions_field"}
    if task.can_mask:
        expected |= {"masks"}
    if task.finds_instances:
        expected |= {"tiles", "nms_iou"}
    properties = form(operator, boxes, task=task.name)
    assert inputs_of(properties) == expected
    assert [choice.value for choice in properties["tasks"].view.choices] == list(TASK_NAMES)
    assert properties["tasks"].default == [task.name]
    assert task.label_type in properties["label_field"].view.description
    if task.input == "text":
        offered = properties["text_input"].type.values
        assert offered == (["prompt", "prompt_field", "classes"] if task.takes_classes else ["prompt", "prompt_field"])
    if task.input == "region":
        assert [c.value for c in properties["regions_field"].view.choices] == ["gt"]


def test_form_follows_the_chosen_text_input_and_existing_field(operator, boxes):
    by_field = form(operator, boxes, task="phrase_grounding", text_input="prompt_field")
    assert "prompt_field" in by_field and "prompt" not in by_field
    assert [c.value for c in by_field["prompt_field"].view.choices] == ["gt", "cls"]
    by_class = form(operator, boxes, task="open_vocabulary_detection", text_input="classes", classes="car, bus")
    assert "classes" in by_class and "problem" not in by_class
    existing = form(operator, boxes, task="region_to_category", regions_field="gt", label_field="gt")
    assert "overwrite" in inputs_of(existing)
    sharded = form(operator, boxes, task="caption", delegate=True, shards=2)
    assert "shards" in inputs_of(sharded)


def test_form_offers_the_tile_overlap_once_tiles_are_on(operator, boxes):
    tiled = form(operator, boxes, task="detection", tiles=2)
    assert {"tiles", "tile_overlap", "nms_iou"} <= inputs_of(tiled) and "problem" not in tiled
    assert tiled["tile_overlap"].default == 0.2
    assert not {"tiles", "tile_overlap", "nms_iou"} & inputs_of(form(operator, boxes, task="caption", tiles=2))
    # Tiles back to 1: the overlap input goes, and the value the App may still hold for it is not refused.
    untiled = form(operator, boxes, task="detection", tiles=1, tile_overlap=0.5)
    assert "tile_overlap" not in inputs_of(untiled) and "problem" not in untiled


def test_target_can_be_the_dataset_the_current_view_or_the_selection(operator, dataset, tiny_checkpoint):
    ids = dataset.values("id")
    view = dataset.skip(1)
    request = {"dataset_name": dataset.name, "view": view._serialize(), "selected": ids[3:5], "params": {}}
    choices = operator.resolve_type(ExecutionContext(request_params=request), "inputs").type.properties["view_target"]
    assert set(choices.type.values) == {"DATASET", "CURRENT_VIEW", "SELECTED_SAMPLES"}
    params = {"task": "caption", "model": str(tiny_checkpoint), **FAST}
    for target, field, labelled in [
        ("SELECTED_SAMPLES", "on_selection", ids[3:5]),
        ("CURRENT_VIEW", "on_view", ids[1:]),
        ("DATASET", "on_dataset", ids),
    ]:
        ctx = {"view": view, "selected": ids[3:5], "params": {**params, "label_field": field, "view_target": target}}
        foo.execute_operator(URI, ctx=ctx)
        assert dataset.exists(field).values("id") == labelled


BAD_INPUTS = [
    ({"label_field": "bad name"}, "Invalid label field 'bad name'"),
    ({"label_field": "1st"}, "Invalid label field '1st'"),
    ({"label_field": "filepath"}, "one of FiftyOne's own fields"),
    ({"task": "detection", "label_field": "cls"}, "'cls' already holds Classification, but task 'detection' writes"),
    ({"task": "phrase_grounding", "prompt": ""}, "The prompt is empty"),
    ({"task": "segmentation", "prompt": "   "}, "The prompt is empty"),
    ({"task": "phrase_grounding"}, "need text"),
    ({"batch_size": 0}, '"Batch size" must be a whole number of at least 1, got 0'),
    ({"batch_size": -4}, '"Batch size" must be a whole number of at least 1, got -4'),
    ({"model": "/no/such/florence2-checkpoint"}, "is not a directory that exists"),
    ({"model": "./missing-florence2"}, "is not a directory that exists"),
    ({"task": "region_to_category", "regions_field": "cls"}, "'cls' must be a Detections field, not Classification"),
    ({"task": "region_to_description"}, 'need "Regions field"'),
    ({"task": "region_to_category", "regions_field": "gt", "label_field": "gt"}, "already have labels in gt"),
    ({"shards": 0}, "shards must be a whole number of at least 1"),
    ({"fps": 2}, '"Frames per second" was given, but this collection holds image media, not videos'),
    ({"frame_step": 3}, '"Frame step" was given, but this collection holds image media, not videos'),
]


@pytest.mark.parametrize("delegate", [False, True], ids=["immediate", "delegated"])
@pytest.mark.parametrize(("bad", "message"), BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_inputs_are_refused_and_nothing_is_written(operator, boxes, tiny_checkpoint, bad, message, delegate):
    params = {"task": "caption", "model": str(tiny_checkpoint), "label_field": "out", "delegate": delegate, **bad}
    assert_refused(run, lambda dataset, **p: form(operator, dataset, **p), boxes, params, message)


def test_a_run_that_fails_while_loading_says_why_and_writes_nothing(operator, dataset):
    # The default checkpoint is a Hub id, and the tests run with the Hub offline.
    before = _snapshot(dataset)
    with pytest.raises(ExecutionError, match="Hub is not reachable"):
        run(dataset, task="caption", label_field="never", **FAST)
    assert _snapshot(dataset) == before


def test_large_targets_default_to_delegated(operator, dataset, plugin_module):
    plan = plugin_module.plan
    ctx = ExecutionContext(request_params={"dataset_name": dataset.name, "params": {}})
    assert operator.resolve_delegation(ctx) is False
    first = dataset.first()
    dataset.add_samples([fo.Sample(filepath=first.filepath) for _ in range(plan.DELEGATE_ABOVE)])
    assert operator.resolve_delegation(ctx) is True
    ctx = ExecutionContext(request_params={"dataset_name": dataset.name, "params": {"delegate": False}})
    assert operator.resolve_delegation(ctx) is False


def test_delegated_run_is_queued_then_labels_with_progress(operator, dataset, tiny_checkpoint):
    service = DelegatedOperationService()
    result = run(dataset, task="caption", model=str(tiny_checkpoint), label_field="later", delegate=True, **FAST)
    assert result.delegated
    assert "later" not in dataset.get_field_schema()
    [operation] = service.list_operations(dataset_name=dataset.name, run_state="queued")
    [done] = service.execute_queued_operations(dataset_name=dataset.name)
    assert done.error is None, done.error
    assert done.result["labelled"] == len(dataset) and done.result["failed"] == 0
    dataset.reload()
    assert dataset.count("later") == len(dataset)
    finished = service.get(operation.id)
    assert finished.run_state == "completed"
    assert finished.status.progress == 1.0 and finished.status.label == f"{len(dataset)}/{len(dataset)} images"
    # The App reads that progress back through the runs operator.
    runs = foo.get_operator(f"{PLUGIN}/florence2_runs")
    ctx = ExecutionContext(request_params={"dataset_name": dataset.name, "params": {}})
    table = runs.resolve_type(ctx, "inputs").type.properties["runs"].default
    n = len(dataset)
    assert f"| completed | 100% ({n}/{n} images) | {n} labelled, 0 failed" in table


def test_sharded_run_queues_one_operation_per_shard(operator, dataset, tiny_checkpoint):
    first = dataset.first()
    dataset.add_samples([fo.Sample(filepath=first.filepath) for _ in range(25)])
    service = DelegatedOperationService()
    result = run(dataset, task="detection", model=str(tiny_checkpoint), label_field="sharded", shards=3, **FAST)
    assert not result.delegated
    queued = service.list_operations(dataset_name=dataset.name, run_state="queued")
    assert sorted(result.result["queued"]) == sorted(str(op.id) for op in queued)
    assert sorted(tuple(op.context.params["shard"]) for op in queued) == [(0, 3), (1, 3), (2, 3)]
    assert len({op.context.params["run_key"] for op in queued}) == 1
    results = service.execute_queued_operations(dataset_name=dataset.name)
    assert [r.error for r in results] == [None] * 3
    assert sum(r.result["labelled"] for r in results) == len(dataset) == 30
    assert all(r.result["skipped"] == 0 for r in results)
    dataset.reload()
    assert dataset.count("sharded") == len(dataset)
    assert len(dataset.list_runs()) == 3


def test_requirements_file_matches_the_package():
    """The plugin's requirements.txt is the package's dependencies, less FiftyOne itself."""
    from packaging.requirements import Requirement

    def parsed(lines):
        return {r.name: r.specifier for r in map(Requirement, lines) if r.marker is None and r.name != "fiftyone"}

    listed = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if line and line[0] != "#"]
    assert parsed(listed) == parsed(importlib.metadata.requires("fiftyone-florence2"))


def test_plugins_download_of_the_repository_root_works_without_the_library(tmp_path):
    """``fiftyone plugins download <archive of the repository>``, then the operator loads from that copy alone."""
    env = env_without_the_library(FIFTYONE_PLUGINS_DIR=str(tmp_path / "plugins"))
    fiftyone = str(Path(sys.executable).parent / "fiftyone")
    with served_repository(tmp_path / "serve") as url:
        subprocess.run([fiftyone, "plugins", "download", url], env=env, check=True, capture_output=True)
    installed = next((tmp_path / "plugins").rglob("fiftyone.yml")).parent

    script = HIDE_INSTALLED + textwrap.dedent(f"""
        import fiftyone.operators as foo
        import fiftyone.plugins as fop
        operator = foo.get_operator({URI!r})
        import fiftyone_florence2
        print(fiftyone_florence2.__file__)
        print(fop.load_plugin_requirements({PLUGIN!r}))
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    library, requirements = out.stdout.strip().splitlines()[-2:]
    assert Path(library).resolve().is_relative_to(installed.resolve())
    assert "transformers" in requirements


def test_the_form_offers_only_the_devices_this_machine_has(operator, dataset):
    """Regression: the form offered cuda and mps on a machine that has neither."""
    from fiftyone_florence2.engine.devices import available_devices

    offered = form(operator, dataset)["device"].type.values
    assert offered == ["auto", *(d for d in ("cuda", "mps", "cpu") if d in available_devices())]
    assert "cpu" in offered
