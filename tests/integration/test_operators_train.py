"""The fine-tuning operator: delegated only, its form from the declarations, refusals before any work, and a
real delegated run whose checkpoint the labelling form then offers."""

from __future__ import annotations

from pathlib import Path

import fiftyone.core.labels as fol
import fiftyone.operators as foo
import pytest
import yaml
from fiftyone.operators.delegated import DelegatedOperationService
from fiftyone.operators.executor import ExecutionContext
from helpers.operators import FAST, PLUGIN, ROOT, _snapshot, assert_refused, form, inputs_of, run

from fiftyone_florence2.core.tasks import get_task
from fiftyone_florence2.training.options import TRAIN
from fiftyone_florence2.training.record import METHOD, list_training_runs

TRAIN_URI = f"{PLUGIN}/florence2_train"
DETECTION, CAPTION, GROUNDING = get_task("detection"), get_task("caption"), get_task("phrase_grounding")
TINY = {"max_steps": 4, "batch_size": 2}


@pytest.fixture
def trainer(operator):
    return foo.get_operator(TRAIN_URI)


@pytest.fixture
def labelled(dataset):
    """The dataset with a Detections field ``gt``, a Classification field ``cls`` and a text field ``text``."""
    box = fol.Detection(label="thing", bounding_box=[0.1, 0.2, 0.5, 0.4])
    dataset.set_values("gt", [fol.Detections(detections=[box.copy()]) for _ in range(len(dataset))])
    dataset.set_values("cls", [fol.Classification(label="cat") for _ in range(len(dataset))])
    dataset.set_values("text", ["a thing"] * len(dataset))
    return dataset


def train_form(trainer, dataset, **params):
    ctx = ExecutionContext(request_params={"dataset_name": dataset.name, "params": params})
    return trainer.resolve_type(ctx, "inputs").type.properties


def queue(dataset, **params):
    return foo.execute_operator(TRAIN_URI, ctx={"dataset": dataset, "params": params})


def test_the_operator_is_delegated_only_and_listed(trainer, dataset):
    assert (trainer.config.allow_immediate_execution, trainer.config.allow_delegated_execution) == (False, True)
    options = trainer.resolve_execution_options(ExecutionContext(request_params={"dataset_name": dataset.name}))
    assert (options.allow_immediate_execution, options.allow_delegated_execution) == (False, True)
    assert "florence2_train" in yaml.safe_load((ROOT / "fiftyone.yml").read_text())["operators"]
    ctx = ExecutionContext(request_params={"dataset_name": dataset.name, "params": {}, "delegated": False})
    with pytest.raises(ValueError, match="only as a delegated operation"):
        trainer.execute(ctx)


def _expected(tasks, **given) -> set[str]:
    """The declared form options the tasks read, as the form names them."""
    names = {o.name for o in TRAIN.values() if o.form and (o.applies is None or any(map(o.applies, tasks)))}
    if not given.get("lora"):
        names -= {"lora_rank", "lora_alpha"}
    names.discard("task")
    return names | {"tasks", "view_target"}


@pytest.mark.parametrize("task", [DETECTION, CAPTION, GROUNDING], ids=lambda task: task.name)
def test_the_form_is_the_declared_options_the_task_reads(trainer, labelled, task):
    properties = train_form(trainer, labelled, task=task.name)
    assert inputs_of(properties) == _expected([task])
    assert ("prompt_field" in properties) is (task is GROUNDING)
    # Defaults, help and titles come from the declarations, not from the form.
    for name in ("epochs", "learning_rate", "lr_schedule", "warmup", "seed", "freeze_vision", "overwrite"):
        assert properties[name].default == TRAIN[name].default, name
    assert properties["model"].default == TRAIN["model"].default
    # Label fields: the dataset's fields of the type the task learns from.
    choices = [choice.value for choice in properties["label_field"].view.choices]
    assert choices == {DETECTION: ["gt"], CAPTION: ["cls"], GROUNDING: ["gt"]}[task]
    assert properties["label_field"].default == choices[0]  # the declared "ground_truth" is not there


def test_the_form_follows_lora_and_several_tasks(trainer, labelled):
    assert {"lora_rank", "lora_alpha"} <= inputs_of(train_form(trainer, labelled, task=DETECTION.name, lora=True))
    several = train_form(trainer, labelled, tasks=[DETECTION.name, CAPTION.name], output_dir="/tmp/nowhere-ft")
    assert inputs_of(several) == _expected([DETECTION, CAPTION]) - {"label_field"} | {"label_fields"}
    per_task = several["label_fields"].type.properties
    assert {name: prop.default for name, prop in per_task.items()} == {DETECTION.name: "gt", CAPTION.name: "cls"}
    assert "give label_field as task=field pairs" in several["problem"].error_message  # until the App sends them
    fields = {DETECTION.name: "gt", CAPTION.name: "cls", GROUNDING.name: "gt"}  # one left from an earlier choice
    chosen = train_form(trainer, labelled, tasks=[DETECTION.name, CAPTION.name], output_dir="/tmp/nowhere-ft",
                        label_fields=fields)  # fmt: skip
    assert "problem" not in chosen


def test_a_field_left_over_from_an_earlier_choice_is_not_sent_to_training(plugin_module_train):
    options = plugin_module_train.train_form.train_options(
        {"tasks": [DETECTION.name], "lora_rank": 4, "prompt_field": "text", "label_field": "gt", "view_target": "x"},
        (DETECTION,),
    )
    assert options == {"task": DETECTION.name, "label_field": "gt"}


@pytest.fixture
def plugin_module_train(trainer):
    """The plugin's ``operators`` package, as FiftyOne imported it."""
    import sys

    return sys.modules[type(trainer).__module__.rsplit(".", 1)[0]]


BAD = [
    ({"output_dir": None}, '"Output directory" is required'),
    ({"label_field": "cls"}, "learns from Detections labels, but 'cls' holds Classification"),
    ({"label_field": "missing"}, "The dataset has no field 'missing'"),
    ({"batch_size": 0}, '"Batch size" must be a whole number of at least 1, got 0'),
    ({"learning_rate": -1.0}, '"Learning rate" must be a number above 0'),
    ({"val_fraction": 1.5}, '"Validation fraction" must be between 0 and 1'),
    ({"val_fraction": 0.01}, "The validation split (val_fraction 0.01) has no samples"),
    ({"val_tag": "nope"}, "The validation split (val_tag 'nope') has no samples"),
    ({"overwrite": True, "resume": True}, '"Resume" (go on) and "Overwrite" (start again) exclude each other'),
    ({"resume": True}, "Nothing to resume"),
    ({"model": "/no/such/florence2-checkpoint"}, "is not a directory that exists"),
    ({"tasks": [DETECTION.name, CAPTION.name]}, "give label_field as task=field pairs"),
]


@pytest.mark.parametrize(("bad", "message"), BAD, ids=[message for _, message in BAD])
def test_bad_inputs_are_refused_in_the_form_and_before_queueing(trainer, labelled, tmp_path, bad, message):
    params = {"task": DETECTION.name, "label_field": "gt", "output_dir": str(tmp_path / "ft"), **TINY, **bad}
    assert_refused(queue, lambda dataset, **p: train_form(trainer, dataset, **p), labelled, params, message)
    assert not (tmp_path / "ft").exists()


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("foreign", "holds config.json, which no training run wrote"),
        ("images", "holds the images being trained on"),
        ("finished", 'pass "Overwrite" ticked to replace it, "Resume" ticked to go on'),
        ("locked", "is being written by training run 'florence2_train_elsewhere'"),
    ],
)
def test_an_output_directory_that_is_not_free_is_refused_in_the_forms_words(
    trainer, labelled, image_dir, tmp_path, where, message
):
    from contextlib import nullcontext

    from fiftyone_florence2.training.output import MANIFEST, locked_output

    project = image_dir if where == "images" else tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / "notes.txt").write_text("mine")
    (project / ("config.json" if where == "foreign" else MANIFEST)).write_text('{"files": []}')
    params = {"task": DETECTION.name, "label_field": "gt", "output_dir": str(project), "overwrite": where != "finished"}
    held = locked_output(project.resolve(), "florence2_train_elsewhere") if where == "locked" else nullcontext()
    with held:
        assert_refused(queue, lambda dataset, **p: train_form(trainer, dataset, **p), labelled, params, message)
    assert (project / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_a_delegated_run_trains_with_progress_and_the_labelling_form_offers_its_checkpoint(
    trainer, operator, labelled, tiny_checkpoint, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # a relative output directory is recorded as the absolute one it is
    params = {"task": DETECTION.name, "label_field": "gt", "output_dir": "ft", "model": str(tiny_checkpoint),
              "val_fraction": 0.4, "learning_rate": 1e-3, **TINY}  # fmt: skip
    before = _snapshot(labelled)
    queued = queue(labelled, **params)
    assert queued.delegated and _snapshot(labelled) != before  # queued: nothing trained yet
    assert not (tmp_path / "ft").exists() and list_training_runs(labelled) == []
    service = DelegatedOperationService()
    [operation] = service.list_operations(dataset_name=labelled.name, run_state="queued")
    assert operation.label == f"Florence-2 fine-tune {DETECTION.name} → ft"

    [done] = service.execute_queued_operations(dataset_name=labelled.name)
    assert done.error is None, done.error
    result = done.result
    output = tmp_path / "ft"
    assert result["output_dir"] == str(output) and result["steps"] == 4
    assert (output / "config.json").is_file() and list(output.glob("*.safetensors"))
    assert (result["train_samples"], result["val_samples"]) == (3, 2)
    assert [row["epoch"] for row in result["epochs"]] == [1, 2]
    assert {"loss", "eval_loss", "eval_score", f"eval_{DETECTION.name}_map"} <= set(result["epochs"][-1])
    assert result["best_score"] == result["best"]["eval_score"] is not None
    assert "| epoch | step | loss |" in result["metrics"]

    # The run record, and the progress stored on the operation (which the runs operator shows).
    labelled.reload()
    assert list_training_runs(labelled) == [result["run_key"]]
    config = labelled.get_run_info(result["run_key"]).config
    assert (config.status, config.output_dir) == ("completed", str(output))
    finished = service.get(operation.id)
    assert finished.run_state == "completed" and finished.status.progress == 1.0
    assert finished.status.label.startswith("step 4/4, loss ") and ", val score " in finished.status.label
    runs = foo.get_operator(f"{PLUGIN}/florence2_runs")
    table = runs.resolve_type(ExecutionContext(request_params={"dataset_name": labelled.name}), "inputs")
    rows = table.type.properties["runs"].default
    assert "| completed | 100% (step 4/4, loss " in rows and "4 steps in" in rows and str(output) in rows

    # The output shows the metrics and the checkpoint.
    ctx = ExecutionContext(request_params={"dataset_name": labelled.name, "params": params, "results": result})
    shown = trainer.resolve_type(ctx, "outputs").type.properties
    assert {"output_dir", "best_score", "metrics", "steps", "run_key"} <= set(shown)

    # The labelling form offers the checkpoint, and it labels.
    model = form(operator, labelled, task=DETECTION.name)["model"]
    offered = {choice.value: choice.description for choice in model.view.choices}
    assert str(output) in offered and f"{DETECTION.name} from gt" in offered[str(output)]
    assert model.default == TRAIN["model"].default
    labels = run(labelled, task=DETECTION.name, model=str(output), label_field="tuned", **FAST)
    assert labels.result["labelled"] == len(labelled)
    # The fine-tuning form offers it too, to go on from.
    assert str(output) in {c.value for c in train_form(trainer, labelled, task=DETECTION.name)["model"].view.choices}


def test_progress_labels_carry_the_latest_loss_and_score(plugin_module_train):
    seen = []
    progress = plugin_module_train.train.TrainingProgress(lambda **kwargs: seen.append(kwargs))
    progress({"step": 2, "max_steps": 8, "loss": 1.25})
    progress({"step": 2, "max_steps": 8, "eval_score": 0.5})
    progress({"step": 8, "max_steps": 8, "loss": 0.75})
    assert seen == [
        {"progress": 0.25, "label": "step 2/8, loss 1.25"},
        {"progress": 0.25, "label": "step 2/8, loss 1.25, val score 0.5"},
        {"progress": 1.0, "label": "step 8/8, loss 0.75, val score 0.5"},
    ]


def test_metrics_per_epoch(plugin_module_train):
    history = [
        {"step": 1, "epoch": 0.5, "loss": 3.0},
        {"step": 2, "epoch": 1.0, "loss": 2.0, "grad_norm": 1.0},
        {"step": 2, "epoch": 1.0, "eval_loss": 2.5, "eval_runtime": 0.1},
        {"step": 2, "epoch": 1.0, "eval_score": 0.1},
        {"step": 4, "epoch": 2.0, "loss": 1.0},
    ]
    assert plugin_module_train.train.per_epoch(history) == [
        {"epoch": 1, "step": 2, "loss": 2.0, "eval_loss": 2.5, "eval_score": 0.1},
        {"epoch": 2, "step": 4, "loss": 1.0},
    ]
    assert plugin_module_train.train.per_epoch([]) == []
    assert plugin_module_train.train.metrics_table([]) == "No step was logged."


def test_the_checkpoint_offered_is_only_a_completed_runs_that_is_still_on_disk(operator, labelled, tmp_path):
    from fiftyone_florence2.training.record import finished_checkpoints

    for status, folder in [("completed", "kept"), ("failed", "broken"), ("completed", "deleted")]:
        path = tmp_path / folder
        if folder != "deleted":
            path.mkdir()
        config = labelled.init_run(method=METHOD, status=status, started_at=folder, output_dir=str(path),
                                   label_field={DETECTION.name: "gt"}, train_samples=3)  # fmt: skip
        labelled.register_run(f"florence2_train_{folder}", config)
    assert list(finished_checkpoints(labelled)) == [str(tmp_path / "kept")]
    assert Path(form(operator, labelled, task=DETECTION.name)["model"].view.choices[-1].value).name == "kept"
