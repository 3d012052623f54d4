"""The repository as a FiftyOne remote model source: registered from a served archive, as FiftyOne does it.

FiftyOne 1.22 registers a source from GitHub or an archive URL, so the source
here is a zip of the repository's files on a local HTTP server, copied under
a temporary ``fo.config.model_zoo_dir``. The Hub is unreachable: the tiny
checkpoint is put where the zoo keeps a downloaded model.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types
import fiftyone.zoo as foz
import fiftyone.zoo.models as fozm
import pytest
from fiftyone.operators.executor import ExecutionContext
from helpers import force
from helpers.fake_hub import serve_hub
from helpers.repo_archive import HIDE_INSTALLED, ROOT, env_without_the_library, served_repository

from fiftyone_florence2.core.checkpoints import NATIVE_CHECKPOINTS, CheckpointError
from fiftyone_florence2.runs.model import Florence2Model
from fiftyone_florence2.runs.zoo import checkpoint_problem, download_model

MANIFEST = json.loads((ROOT / "manifest.json").read_text())
PLACED = "florence-community/Florence-2-base-ft"  # holds the tiny checkpoint
ANSWER = "car<loc_100><loc_200><loc_500><loc_900>"
GENERATION = ("num_beams", "max_new_tokens", "device", "dtype")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The served repository registered as a source; yields its URL."""
    previous = fo.config.model_zoo_dir
    fo.config.model_zoo_dir = str(tmp_path_factory.mktemp("zoo"))
    try:
        with served_repository(tmp_path_factory.mktemp("serve")) as url:
            foz.register_zoo_model_source(url)
        yield url
    finally:
        fo.config.model_zoo_dir = previous


def model_path(name: str) -> Path:
    return Path(foz.get_zoo_model(name).get_path_in_dir(fo.config.model_zoo_dir))


@pytest.fixture(scope="module")
def placed(source, tiny_checkpoint) -> Path:
    """The tiny checkpoint where the zoo keeps the downloaded ``PLACED``."""
    path = model_path(PLACED)
    shutil.copytree(tiny_checkpoint, path)
    return path


def zoo_ctx(dataset, **remote_params) -> ExecutionContext:
    """A context as FiftyOne's "Apply zoo model" form passes it, our inputs nested under remote_params."""
    return ExecutionContext(request_params={"dataset_name": dataset.name, "params": {"remote_params": remote_params}})


# ---------------------------------------------------------------- the manifest


def test_the_manifest_declares_the_four_native_checkpoints_as_fiftyone_reads_them():
    parsed = fozm.RemoteZooModelsManifest.from_json(str(ROOT / "manifest.json"))
    assert parsed.name == MANIFEST["name"] and [m.name for m in parsed] == list(NATIVE_CHECKPOINTS)
    requirements = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if line[:1] not in "#"]
    for model, declared in zip(parsed, MANIFEST["models"]):
        assert model.base_filename == model.name.split("/")[1]
        assert model.default_deployment_config_dict is None  # so FiftyOne calls our load_model
        assert isinstance(model.manager, fozm.RemoteModelManager) and model.manager.config.model_name == model.name
        assert model.requirements.packages == requirements
        assert model.license == "MIT" and "detection" in model.tags
        assert declared["url"] == f"https://huggingface.co/{model.name}"


# ---------------------------------------------------------------- registering, loading, labelling


def test_a_registered_archive_lists_the_four_models(source):
    assert source in foz.list_zoo_model_sources()
    assert foz.list_zoo_models(source=source) == sorted(NATIVE_CHECKPOINTS)
    assert foz.list_zoo_models(tags="florence2") == sorted(NATIVE_CHECKPOINTS)
    zoo_model = foz.get_zoo_model(PLACED)
    assert (
        isinstance(zoo_model, fozm.RemoteZooModel)
        and zoo_model.source == "https://huggingface.co/microsoft/Florence-2-base-ft"
    )


def test_a_clone_linked_into_the_zoo_directory_is_a_source_too(tmp_path, monkeypatch):
    """FiftyOne 1.22 registers no local path, but reads every manifest under its zoo directory."""
    monkeypatch.setattr(fo.config, "model_zoo_dir", str(tmp_path))
    link = tmp_path.joinpath(*MANIFEST["name"].split("/"))
    link.parent.mkdir(parents=True)
    link.symlink_to(ROOT, target_is_directory=True)
    assert foz.list_zoo_models(tags="florence2") == sorted(NATIVE_CHECKPOINTS)
    zoo_model = foz.get_zoo_model(PLACED)
    assert isinstance(zoo_model, fozm.RemoteZooModel) and model_path(PLACED) == link / "Florence-2-base-ft"


def test_load_zoo_model_labels_a_dataset_from_the_checkpoint_in_place(placed, dataset, tokenizer):
    model = foz.load_zoo_model(PLACED, task="detection", num_beams=1, generate_kwargs=force(tokenizer, ANSWER))
    assert isinstance(model, Florence2Model) and model.config.model == str(placed.resolve())
    dataset.apply_model(model, label_field="zoo", batch_size=2)
    boxes = [[(d.label, [round(v, 4) for v in d.bounding_box]) for d in ds.detections] for ds in dataset.values("zoo")]
    assert boxes == [[("car", [0.1005, 0.2005, 0.4, 0.7])]] * len(dataset)
    assert model.failures == {}


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"model": "florence-community/Florence-2-large"}, "model cannot be passed to the zoo model"),
        ({"revision": "main"}, "revision cannot be passed to the zoo model"),
        ({"model": "x", "revision": "main"}, "model and revision cannot be passed"),
        ({"tasks": "caption"}, "Unknown option(s) tasks"),
        ({"task": "phrase_grounding"}, "need text"),
        ({"task": "caption", "prompt": "a dog"}, "none of the tasks (caption) reads it"),
        ({"task": "detection", "num_beams": 0}, "num_beams must be a whole number"),
    ],
)
def test_options_are_checked_as_the_library_checks_them_before_weights_load(placed, options, error):
    with pytest.raises(ValueError) as refused:
        foz.load_zoo_model(PLACED, **options)
    assert error in str(refused.value)


# ---------------------------------------------------------------- downloads that cannot happen


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the block ends


@pytest.mark.parametrize("hub", ["HF_HUB_OFFLINE", "refusing connections"])
def test_a_download_without_the_hub_fails_at_once_in_one_line(source, monkeypatch, hub):
    if hub != "HF_HUB_OFFLINE":
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    name = "florence-community/Florence-2-large"
    path = model_path(name)
    for attempt in (foz.download_zoo_model, foz.load_zoo_model):
        start = time.perf_counter()
        with pytest.raises(CheckpointError) as refused:
            attempt(name)
        assert time.perf_counter() - start < 10
        message = str(refused.value)
        assert "\n" not in message and "Hugging Face Hub is not reachable" in message and str(path) in message
    assert not path.exists() and not Path(f"{path}.partial").exists()


def test_a_directory_in_the_way_is_refused_and_left_as_it_was(source):
    name = "florence-community/Florence-2-base"
    path = model_path(name)
    path.mkdir()
    (path / "config.json").write_text('{"mine": true}')
    for attempt in (foz.download_zoo_model, lambda n: foz.load_zoo_model(n, task="detection")):
        with pytest.raises(CheckpointError) as refused:
            attempt(name)
        message = str(refused.value)
        assert "lacks" in message and "remove it to download again" in message and "\n" not in message
    assert sorted(p.name for p in path.iterdir()) == ["config.json"]
    assert (path / "config.json").read_text() == '{"mine": true}'


def _sharded(path: Path) -> None:
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    (path / "model.safetensors").rename(path / "model-00001-of-00002.safetensors")


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda path: shutil.rmtree(path), "is not a directory that exists"),
        (lambda path: (shutil.rmtree(path), path.write_text("")), "is not a directory that exists"),
        (lambda path: [f.unlink() for f in path.iterdir()], "lacks config.json, processor_config.json, *.safetensors"),
        (lambda path: (path / "config.json").unlink(), "lacks config.json;"),
        (lambda path: (path / "model.safetensors").unlink(), "lacks *.safetensors weights"),
        (_sharded, "lacks the weight shard(s) model-00002-of-00002.safetensors."),
        (lambda path: None, None),
    ],
    ids=["missing", "a file", "empty", "no config", "no weights", "a missing shard", "complete"],
)
def test_what_counts_as_a_complete_checkpoint(tiny_checkpoint, tmp_path, make, problem):
    path = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint, path)
    make(path)
    found = checkpoint_problem(path)
    assert found is None if problem is None else problem in found


# ---------------------------------------------------------------- downloads from a Hub (a local stand-in)


@pytest.fixture
def hub(tmp_path, tiny_checkpoint, monkeypatch):
    """A Hub holding a native checkpoint (with a pickle and a card beside it) and a remote-code one."""
    import huggingface_hub.constants

    native, remote = tmp_path / "native", tmp_path / "remote"
    for repo in (native, remote):
        shutil.copytree(tiny_checkpoint, repo)
    (native / "pytorch_model.bin").write_bytes(b"a pickle, never to be fetched")
    (native / "README.md").write_text("a model card")
    config = json.loads((remote / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling.Florence2"}}))
    repos = {"florence-community/Florence-2-large-ft": native, "microsoft/Florence-2-base": remote}
    with serve_hub(repos) as (url, asked):
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read when it was imported
        monkeypatch.setenv("HF_ENDPOINT", url)
        yield asked


def test_a_download_fetches_only_native_files_then_loads_without_asking_again(source, hub, tiny_checkpoint):
    name = "florence-community/Florence-2-large-ft"
    foz.download_zoo_model(name)
    path = model_path(name)
    native = sorted(p.name for p in tiny_checkpoint.iterdir())
    assert sorted(p.name for p in path.iterdir() if not p.name.startswith(".")) == native
    assert {Path(f).name for f in hub} == set(native) and not Path(f"{path}.partial").exists()
    asked = len(hub)
    model = foz.load_zoo_model(name, task="caption", num_beams=1, max_new_tokens=2)
    assert isinstance(model, Florence2Model) and model.config.model == str(path.resolve())
    assert len(hub) == asked


def test_a_remote_code_checkpoint_is_refused_before_its_weights_download(hub, tmp_path):
    with pytest.raises(CheckpointError, match="declares remote code"):
        download_model("microsoft/Florence-2-base", str(tmp_path / "model"))
    assert set(hub) == {"microsoft/Florence-2-base/config.json"}
    assert list(tmp_path.glob("model*")) == []


# ---------------------------------------------------------------- FiftyOne's "Apply zoo model" form


@pytest.mark.parametrize(
    ("remote_params", "inputs", "problem"),
    [
        ({}, {"task"}, None),
        ({"task": "phrase_grounding", "prompt": "a car"}, {"task", "text_input", "prompt"}, None),
        ({"task": "phrase_grounding"}, {"task", "text_input", "prompt"}, "need text"),
        ({"task": "open_vocabulary_detection", "text_input": "classes", "classes": "car"},
         {"task", "text_input", "classes"}, None),
        ({"task": "region_to_category", "regions_field": "gt"}, {"task", "regions_field"}, None),
        ({"task": "segmentation", "prompt": "the car"},
         {"task", "text_input", "prompt", "masks"}, None),
        ({"task": "nonsense"}, {"task"}, "Unknown Florence-2 task 'nonsense'"),
        ({"task": "detection", "num_beams": -1}, {"task"}, '"Beams" must be a whole number'),
    ],
)  # fmt: skip
def test_the_zoo_form_asks_only_what_the_task_reads(source, dataset, remote_params, inputs, problem):
    prop = foz.get_zoo_model(PLACED).resolve_input(zoo_ctx(dataset, **remote_params))
    shown = {name for name, p in prop.type.properties.items() if not isinstance(p.type, types.Void)}
    assert shown == inputs | set(GENERATION)
    assert not shown & {"model", "revision", "batch_size", "confidence_thresh"}  # fixed, or the zoo form's own
    error = prop.type.properties.get("problem")
    assert error is None if problem is None else problem in error.error_message


def test_parse_parameters_gives_load_zoo_model_the_task_options(placed, dataset):
    ctx = zoo_ctx(dataset)
    params = {"task": "open_vocabulary_detection", "text_input": "classes", "classes": "car, dog",
              "prompt": "left from an earlier choice", "batch_size": 4, "num_beams": 1, "device": "auto"}  # fmt: skip
    foz.get_zoo_model(PLACED).parse_parameters(ctx, params)
    assert not params.keys() & {"text_input", "prompt", "model", "revision", "batch_size", "confidence_thresh"}
    model = foz.load_zoo_model(PLACED, **params)
    assert (model.config.classes, model.config.num_beams, model.config.device) == (["car", "dog"], 1, None)


# ---------------------------------------------------------------- the two loaders of the root __init__.py


def test_the_zoo_and_the_plugin_loader_both_import_the_downloaded_root(source):
    source_dir = model_path(PLACED).parent
    module = fozm._import_zoo_module(str(source_dir))  # as FiftyOne's download_model and load_model do
    assert module.__name__ == MANIFEST["name"].replace("/", ".")
    assert all(callable(getattr(module, name)) for name in ("download_model", "load_model", "resolve_input",
                                                             "parse_parameters", "register"))  # fmt: skip
    previous = fo.config.plugins_dir
    fo.config.plugins_dir = str(source_dir)
    # Earlier tests of this process loaded the plugin from the checkout under the same module names.
    for name in [name for name in sys.modules if name.startswith("fiftyone.plugins.orgs.fiftyone_florence2")]:
        del sys.modules[name]
    try:
        operator = foo.get_operator("@fiftyone-florence2/florence2/apply_florence2")
        assert Path(sys.modules[type(operator).__module__].__file__).is_relative_to(source_dir)
    finally:
        fo.config.plugins_dir = previous


def test_a_registered_source_loads_without_the_library_installed(placed, tmp_path):
    script = HIDE_INSTALLED + textwrap.dedent(f"""
        import fiftyone.zoo as foz
        model = foz.load_zoo_model({PLACED!r}, task="caption", num_beams=1, max_new_tokens=2)
        import fiftyone_florence2
        print(type(model).__name__, fiftyone_florence2.__file__)
    """)
    env = env_without_the_library(FIFTYONE_MODEL_ZOO_DIR=fo.config.model_zoo_dir)
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    kind, library = out.stdout.split()[-2:]
    assert kind == "Florence2Model" and Path(library).is_relative_to(placed.parent)
