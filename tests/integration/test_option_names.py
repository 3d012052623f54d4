"""Refusals name what the user typed: argument names in Python, flags on the CLI, form labels in the App.

Each defect is driven through the real route: the library call, ``florence2`` (``cli.main``), and the
operators' form (``resolve_input``) and run (``execute``, or the App's stream of notifications).
"""

from __future__ import annotations

import asyncio
import json

import fiftyone.core.labels as fol
import fiftyone.operators as foo
import pytest
from fiftyone.operators.executor import ExecutionError, execute_or_delegate_operator
from fiftyone.operators.server import create_response_generator
from helpers.operators import FAST, PLUGIN, URI, form, run

from fiftyone_florence2 import load_model, train
from fiftyone_florence2.cli import build_parser, main
from fiftyone_florence2.core.errors import OptionError
from fiftyone_florence2.core.options import OPTIONS
from fiftyone_florence2.runs.labelling import label_samples
from fiftyone_florence2.training.options import TRAIN
from fiftyone_florence2.training.output import MANIFEST

# defect -> the words each route shows, exactly as the user must find the control.
WORDS = {
    "both policies": {
        "python": "skip_existing and overwrite exclude each other: choose one.",
        "cli": "--skip-existing and --overwrite exclude each other: choose one.",
        "app": '"Skip existing" and "Overwrite" exclude each other: choose one.',
    },
    "labels exist": {
        "python": "Label with skip_existing=True to fill only the fields they lack, or with overwrite=True to replace",
        "cli": "Label with --skip-existing to fill only the fields they lack, or with --overwrite to replace them.",
        "app": 'Label with "Skip existing" ticked to fill only the fields they lack, or with "Overwrite" ticked to',
    },
    "bad batch size": {
        "python": "batch_size must be a whole number of at least 1, got 0.",
        "cli": "--batch-size must be a whole number of at least 1, got 0.",
        "app": '"Batch size" must be a whole number of at least 1, got 0.',
    },
    "hub offline": {
        "python": "Pass a local checkpoint directory instead, as model='/path/to/checkpoint'.",
        "cli": "Pass a local checkpoint directory instead, as --model /path/to/checkpoint.",
        "app": 'Pass a local checkpoint directory instead, as "Checkpoint".',
    },
    "no output dir": {
        "python": "output_dir is required: the directory the fine-tuned checkpoint is written to.",
        "cli": "--output-dir is required: the directory the fine-tuned checkpoint is written to.",
        "app": '"Output directory" is required: the directory the fine-tuned checkpoint is written to.',
    },
    "output dir taken": {
        "python": "holds a training run's output: pass overwrite=True to replace it, resume=True to go on from its",
        "cli": "holds a training run's output: pass --overwrite to replace it, --resume to go on from its last",
        "app": 'holds a training run\'s output: pass "Overwrite" ticked to replace it, "Resume" ticked to go on',
    },
}
ROUTES = ("python", "cli", "app")
# Every other route's words for the same controls, none of which may show.
FOREIGN = {
    "python": ("--skip-existing", "--overwrite", "--output-dir", "--model", '"'),
    "cli": ("skip_existing", "overwrite=", "output_dir", "model=", "model option", '"Skip', '"Output'),
    "app": ("skip_existing", "overwrite=", "--", "output_dir", "model=", "model option"),
}


@pytest.fixture
def trainer(operator):
    return foo.get_operator(f"{PLUGIN}/florence2_train")


@pytest.fixture
def scene(dataset, tiny_checkpoint, tmp_path, capsys, operator, trainer):
    """A persistent dataset (the CLI loads it by name) with captions in ``cap`` and boxes in ``gt``, and a
    ``taken`` directory holding an earlier training run's output (its manifest) and a file of the user's."""
    dataset.persistent = True
    dataset.set_values("cap", [fol.Classification(label="old")] * len(dataset))
    box = fol.Detection(label="thing", bounding_box=[0.1, 0.2, 0.5, 0.4])
    dataset.set_values("gt", [fol.Detections(detections=[box.copy()]) for _ in range(len(dataset))])
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    (tmp_path / "taken" / MANIFEST).write_text('{"files": []}')
    return {"dataset": dataset, "ckpt": str(tiny_checkpoint), "tmp": tmp_path, "capsys": capsys,
            "operator": operator, "trainer": trainer}  # fmt: skip


# defect -> (labelling or training, its arguments); None: the default checkpoint, which the offline Hub lacks.
CASES = {
    "both policies": ("label", {"label_field": "new", "skip_existing": True, "overwrite": True}),
    "labels exist": ("label", {"label_field": "cap"}),
    "bad batch size": ("label", {"label_field": "new", "batch_size": 0}),
    "hub offline": ("label", {"label_field": "new", "model": None}),
    "no output dir": ("train", {}),
    "output dir taken": ("train", {"output_dir": "{tmp}/taken"}),
}


def _arguments(scene: dict, given: dict) -> dict:
    arguments = {"model": scene["ckpt"], **given}
    if arguments["model"] is None:
        del arguments["model"]
    return {
        key: value.format(tmp=scene["tmp"]) if isinstance(value, str) else value for key, value in arguments.items()
    }


def _flags(arguments: dict) -> list[str]:
    flags = []
    for name, value in arguments.items():
        flag = OPTIONS[name].cli_flag if name in OPTIONS else TRAIN[name].cli_flag
        flags += [flag] if value is True else [flag, str(value)]
    return flags


def notifications(dataset, params: dict) -> list[str]:
    """The notifications an App's run streams before it fails, as the App's server executes it."""
    request = {"operator_uri": URI, "dataset_name": dataset.name, "view": [], "selected": [], "params": params}
    execution = asyncio.run(execute_or_delegate_operator(URI, request))
    messages = []
    with pytest.raises(ValueError):
        for line in create_response_generator(execution.result):
            messages.append(json.loads(line))
    return [m["body"]["params"]["message"] for m in messages if m["body"]["operator_uri"] == "notify"]


def refusal(route: str, scene: dict, kind: str, arguments: dict) -> list[str]:
    """What ``route`` shows for the run: the exception in Python, stderr on the CLI, and in the App the
    form's problem and the run's error (or the notification streamed to the App)."""
    dataset = scene["dataset"]
    if route == "python":
        with pytest.raises(ValueError) as error:
            if kind == "label":
                run_options = {
                    k: arguments.pop(k) for k in ("label_field", "skip_existing", "overwrite") if k in arguments
                }
                label_samples(dataset, load_model("caption", **arguments), **run_options)
            else:
                train(dataset, task="detection", label_field="gt", **arguments)
        return [str(error.value)]
    if route == "cli":
        task = ["--task", "caption"] if kind == "label" else ["--label-field", "gt"]
        assert main([kind, "--dataset", dataset.name, *task, *_flags(arguments)]) == 2
        err = scene["capsys"].readouterr().err
        assert err.count("\n") == 1
        return [err]
    if kind == "train":
        params = {"task": "detection", "label_field": "gt", **arguments}
        with pytest.raises(ExecutionError) as error:
            foo.execute_operator(f"{PLUGIN}/florence2_train", ctx={"dataset": dataset, "params": params})
        return [form(scene["trainer"], dataset, **params)["problem"].error_message, str(error.value)]
    params = {"task": "caption", **FAST, **arguments}
    if "model" not in params:  # fails as it loads: the App hears it in a notification
        return notifications(dataset, params)
    with pytest.raises(ExecutionError) as error:
        run(dataset, **params)
    return [form(scene["operator"], dataset, **params)["problem"].error_message, str(error.value)]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("defect", list(CASES))
def test_each_route_names_its_own_controls(scene, defect, route):
    kind, given = CASES[defect]
    shown = refusal(route, scene, kind, _arguments(scene, given))
    assert shown
    for text in shown:
        assert WORDS[defect][route] in text, text
        assert not [word for word in FOREIGN[route] if word in text.replace(WORDS[defect][route], "")], text


@pytest.mark.parametrize(
    ("template", "python", "cli", "app"),
    [
        ("", "", "", ""),
        ("{masks}", "masks=True", "--masks", '"Masks" ticked'),
        ("{skip_failures}", "skip_failures=False", "--fail-fast", "skip_failures=False"),  # not in the form
        ("{prompt_field:name}", "prompt_field", "--prompt-field", '"Prompt field"'),
        ("{prompt_field:'<f>'}", "prompt_field='<f>'", "--prompt-field <f>", '"Prompt field"'),
        ("{classes:[...]|A,B}", "classes=[...]", "--classes A,B", '"Classes"'),
        ("{model}", "model", "--model", '"Checkpoint"'),
        ("{{braces}} {masks:name}", "{braces} masks", "{braces} --masks", '{braces} "Masks"'),
        ("{shuffle}", "shuffle=False", "--in-order", '"Shuffle" unticked'),
        ("{scores}", "scores=False", "scores=False", "scores=False"),  # no flag, no form input: Python's name
        ("{shard:name}", "shard", "--shard", "shard"),  # a flag, but no form input
    ],
    ids=[
        "empty",
        "bool",
        "default-on",
        "name",
        "example",
        "python-and-cli",
        "label",
        "braces",
        "default-on-form",
        "no-control",
        "cli-only",
    ],
)
def test_a_template_renders_each_routes_controls(template, python, cli, app):
    names = ("masks", "skip_failures", "prompt_field", "classes", "model", "scores", "shard")
    error = OptionError(template, *(OPTIONS[name] for name in names), TRAIN["shuffle"])
    assert (str(error), error.render("cli"), error.render("app")) == (python, cli, app)
    assert isinstance(error, ValueError)


@pytest.mark.parametrize(
    ("value", "python", "kept_type"),
    [
        ("/no/such/checkpoint", "Local checkpoint", "CheckpointError"),  # not about the name: left as it is
        (0, "batch_size must be", "OptionError"),
    ],
)
def test_a_declared_check_names_its_option_by_route(value, python, kept_type):
    name = "model" if isinstance(value, str) else "batch_size"
    with pytest.raises(ValueError) as error:
        OPTIONS[name].read(value)
    assert str(error.value).startswith(python) and type(error.value).__name__ == kept_type


def _help(command: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._subparsers._group_actions).choices[command]
    return " ".join(sub.format_help().split())


@pytest.mark.parametrize(
    ("command", "expected", "wrong"),
    [
        ("label", "--fail-fast stop at the first failing sample", "--fail-fast record a failing sample"),
        ("train", "--in-order train in the view's order", "--in-order shuffle each epoch"),
        ("label", "--skip-existing fill only the fields a sample lacks", None),
        ("label", "--add-to-dataset with --images", None),
    ],
    ids=["fail-fast", "in-order", "plain-flag", "add-to-dataset"],
)
def test_a_flag_that_turns_an_option_off_says_what_it_does(command, expected, wrong):
    text = _help(command)
    assert expected in text
    assert wrong is None or wrong not in text


def _view(properties, name: str):
    return properties[name].view


# (form, parameters, input, what its view shows, as a function of the view)
FORM_TEXTS = [
    ("label", {"task": "caption"}, "device", "cuda, cuda:N, mps or cpu; auto picks the best available",
     lambda view: view.description),
    ("label", {"task": "caption"}, "dtype", "float32, bfloat16 or float16; auto is", lambda view: view.description),
    ("label", {"task": "caption"}, "batch_size", "Images per batch", lambda view: view.description),
    ("label", {"task": "caption"}, "tasks", "caption: short caption → Classification",
     lambda view: next(c.label for c in view.choices if c.value == "caption")),
    ("label", {"task": "caption"}, "tasks", "phrase_grounding: ", lambda view: next(
        c.label for c in view.choices if c.value == "phrase_grounding")),
    ("label", {"task": "caption"}, "model", "Checkpoint", lambda view: view.label),
    ("train", {"task": "detection", "label_field": "gt"}, "label_field",
     "A Detections field of corrected labels for detection to learn from", lambda view: view.description),
    ("train", {"task": "detection", "label_field": "gt"}, "output_dir", "Output directory", lambda view: view.label),
]  # fmt: skip


@pytest.mark.parametrize(("which", "params", "name", "expected", "shown"), FORM_TEXTS)
def test_the_forms_say_what_they_mean(scene, which, params, name, expected, shown):
    chosen = scene["operator"] if which == "label" else scene["trainer"]
    text = shown(_view(form(chosen, scene["dataset"], **params), name))
    assert text.startswith(expected), text
    assert "none input" not in text and "Cuda" not in text and "Float32" not in text


@pytest.mark.parametrize(
    ("name", "description"),
    [
        ("device", "cuda, cuda:N, mps or cpu; auto picks the best available"),
        ("dtype", "float32, bfloat16 or float16; auto is bf16/fp16 on GPUs and fp32 on CPU"),
        ("batch_size", "Images per batch"),
        ("skip_failures", "Record a failing sample and go on (off: stop at the first failing sample)"),
    ],
)
def test_a_description_keeps_a_leading_value_as_written(name, description):
    assert OPTIONS[name].description.startswith(description)
