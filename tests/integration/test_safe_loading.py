"""Safe loading: no remote code, safetensors only, local paths resolved and checked, a dead Hub fails fast.

And refusals write nothing: a bad argument, through the API or the command
line, leaves every dataset as it was, with no run record and no lock.
"""

from __future__ import annotations

import ast
import contextlib
import http.server
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import fiftyone as fo
import fiftyone.core.labels as fol
import pytest
from helpers import force, write_image
from helpers.threads import one_torch_thread  # noqa: F401

import fiftyone_florence2
from fiftyone_florence2 import load_model
from fiftyone_florence2.cli import main
from fiftyone_florence2.core.checkpoints import CheckpointError, resolve_checkpoint
from fiftyone_florence2.engine import runner as runner_module
from fiftyone_florence2.engine.runner import Florence2Runner
from fiftyone_florence2.runs.labelling import label_samples
from fiftyone_florence2.runs.locks import list_locks
from fiftyone_florence2.runs.records import list_runs

HUB_ID = "florence-community/Florence-2-base-ft"
PACKAGE = Path(fiftyone_florence2.__file__).parent
ANSWER = "car<loc_100><loc_200><loc_500><loc_900>"


def copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


class Evil:
    """Unpickling this writes a marker file: a stand-in for code hidden in pickled weights."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pickle ran"))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "REMOTE_CODE_RAN"


@pytest.fixture
def remote_code_checkpoint(tiny_checkpoint, tmp_path, marker) -> Path:
    """A native-looking checkpoint whose config.json declares remote code, shipped beside it."""
    path = copy_checkpoint(tiny_checkpoint, tmp_path / "remote-code")
    code = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    (path / "configuration_florence2.py").write_text(code + "from transformers import Florence2Config\n")
    (path / "modeling_florence2.py").write_text(code + "from transformers import Florence2ForConditionalGeneration\n")
    edit_json(
        path / "config.json",
        auto_map={
            "AutoConfig": "configuration_florence2.Florence2Config",
            "AutoModelForCausalLM": "modeling_florence2.Florence2ForConditionalGeneration",
        },
    )
    # Weights that would fail loudly if anything got as far as reading them.
    (path / "model.safetensors").write_bytes(b"not weights")
    return path


# ---------------------------------------------------------------- remote code


def test_remote_code_checkpoint_is_refused_before_weights_load(remote_code_checkpoint, marker, monkeypatch):
    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(runner_module.Florence2ForConditionalGeneration, "from_pretrained", no_weights)
    for attempt in (
        lambda: Florence2Runner(str(remote_code_checkpoint)),
        lambda: load_model("caption", model=str(remote_code_checkpoint)),
    ):
        start = time.perf_counter()
        with pytest.raises(CheckpointError) as refused:
            attempt()
        assert time.perf_counter() - start < 10
        message = str(refused.value)
        assert "declares remote code (auto_map)" in message and "never run" in message
        assert HUB_ID in message and "\n" not in message
    assert not marker.exists()


def test_cli_refuses_remote_code_in_one_line(remote_code_checkpoint, marker, dataset, capsys):
    before = _state(dataset)
    code = main(["label", "--dataset", dataset.name, "--task", "caption", "--model", str(remote_code_checkpoint)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("florence2: error: Checkpoint")
    assert "declares remote code" in err and "Traceback" not in err
    assert not marker.exists()
    assert _state(dataset) == before


@pytest.mark.parametrize("config_file", ["processor_config.json", "tokenizer_config.json"])
def test_remote_code_declared_by_the_processor_never_runs(config_file, tiny_checkpoint, tmp_path, marker):
    """Only native classes are built, so code a processor or tokenizer config points at is never imported."""
    path = copy_checkpoint(tiny_checkpoint, tmp_path / "processor-remote-code")
    (path / "evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import BartTokenizer as EvilTokenizer, Florence2Processor as EvilProcessor\n"
    )
    auto_map = {"AutoTokenizer": ["evil.EvilTokenizer", None], "AutoProcessor": "evil.EvilProcessor"}
    edit_json(path / config_file, auto_map=auto_map)
    try:
        Florence2Runner(str(path))
    except CheckpointError as e:  # refusing it is fine too
        assert "remote code" in str(e)
    assert not marker.exists()


def test_a_checkpoint_of_another_model_is_refused(tiny_checkpoint, tmp_path):
    path = copy_checkpoint(tiny_checkpoint, tmp_path / "bart")
    edit_json(path / "config.json", model_type="bart")
    with pytest.raises(CheckpointError, match="is a 'bart' model, not Florence-2"):
        Florence2Runner(str(path))


def test_trust_remote_code_is_never_requested(tiny_checkpoint, monkeypatch):
    calls = []

    def spy(owner, name):
        real = getattr(owner, name).__func__  # a classmethod: keep the class it is called on

        def recorded(cls, *args, **kwargs):
            calls.append((f"{owner_name[owner]}.{name}", kwargs))
            return real(cls, *args, **kwargs)

        monkeypatch.setattr(owner, name, classmethod(recorded))

    from transformers import Florence2ForConditionalGeneration, Florence2Processor, PretrainedConfig

    # The classes themselves, wherever the product imports them from (the runner, its loading module).
    owner_name = {
        Florence2ForConditionalGeneration: "Florence2ForConditionalGeneration",
        Florence2Processor: "Florence2Processor",
        PretrainedConfig: "PretrainedConfig",
    }
    spy(Florence2ForConditionalGeneration, "from_pretrained")
    spy(Florence2Processor, "from_pretrained")
    spy(PretrainedConfig, "get_config_dict")
    Florence2Runner(str(tiny_checkpoint))
    assert {name for name, _ in calls} == {
        "Florence2ForConditionalGeneration.from_pretrained",
        "Florence2Processor.from_pretrained",
        "PretrainedConfig.get_config_dict",
    }
    assert all(not kwargs.get("trust_remote_code") for _, kwargs in calls)
    (model_kwargs,) = [kwargs for name, kwargs in calls if name.startswith("Florence2ForConditional")]
    assert model_kwargs["use_safetensors"] is True and model_kwargs["trust_remote_code"] is False


def test_source_never_enables_remote_code_or_unpickles():
    """Auto classes are what honour ``auto_map``; pickle is what runs code hidden in ``.bin`` weights."""
    files = sorted(PACKAGE.rglob("*.py")) + sorted((PACKAGE.parent / "operators").glob("*.py"))
    assert len(files) > 60  # every layer folder, not only the package's top level
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                assert isinstance(node.value, ast.Constant) and node.value.value is False, path
            if isinstance(node, (ast.Name, ast.Attribute)):
                name = node.id if isinstance(node, ast.Name) else node.attr
                assert not name.startswith("AutoModel") and name not in {"AutoConfig", "AutoProcessor"}, path
                assert name not in {"pickle", "torch_load"}, path
            if isinstance(node, ast.Attribute) and node.attr == "load" and isinstance(node.value, ast.Name):
                assert node.value.id not in {"torch", "pickle"}, f"{path}: {node.value.id}.load"


# ---------------------------------------------------------------- safetensors only


def test_pickled_weights_alone_are_refused(tiny_checkpoint, tmp_path, marker, capsys):
    path = copy_checkpoint(tiny_checkpoint, tmp_path / "bin-only")
    (path / "model.safetensors").unlink()
    (path / "pytorch_model.bin").write_bytes(pickle.dumps(Evil(str(marker))))
    for attempt in (lambda: resolve_checkpoint(str(path)), lambda: load_model("caption", model=str(path))):
        with pytest.raises(CheckpointError, match=r"only pickled weights \(\*\.bin\).*not a safe loader.*safetensors"):
            attempt()
    assert main(["label", "--images", str(tmp_path), "--task", "caption", "--model", str(path)]) == 2
    assert "only pickled weights (*.bin)" in capsys.readouterr().err
    assert not marker.exists()


def test_safetensors_are_loaded_and_pickled_weights_beside_them_ignored(tiny_checkpoint, tokenizer, tmp_path, marker):
    path = copy_checkpoint(tiny_checkpoint, tmp_path / "both")
    (path / "pytorch_model.bin").write_bytes(pickle.dumps(Evil(str(marker))))
    model = load_model("detection", model=str(path), num_beams=1, generate_kwargs=force(tokenizer, ANSWER))
    dataset = fo.Dataset()
    dataset.add_sample(fo.Sample(filepath=write_image(tmp_path / "a.png")))
    assert label_samples(dataset, model, "det").labelled == 1
    assert dataset.first().det.detections[0].label == "car"
    assert not marker.exists()
    dataset.delete()


# ---------------------------------------------------------------- corrupt weights


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _header_only(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: 8 + int.from_bytes(data[:8], "little")])


CORRUPTIONS = [
    ("truncated", _truncate, "file not fully covered"),
    ("header only", _header_only, "file not fully covered"),
    ("random bytes", lambda path: path.write_bytes(os.urandom(path.stat().st_size)), "header too large"),
    ("empty file", lambda path: path.write_bytes(b""), "header too small"),
    ("three bytes", lambda path: path.write_bytes(b"abc"), "header too small"),
]


@pytest.fixture(params=CORRUPTIONS, ids=[row[0] for row in CORRUPTIONS])
def corrupt_checkpoint(request, tiny_checkpoint, tmp_path):
    """A copy of the tiny checkpoint whose model.safetensors is damaged, and safetensors' reason."""
    _, corrupt, reason = request.param
    path = copy_checkpoint(tiny_checkpoint, tmp_path / "corrupt")
    corrupt(path / "model.safetensors")
    return path, reason


def test_corrupt_weights_raise_a_checkpoint_error_naming_the_file(corrupt_checkpoint):
    # Regression: safetensors' own SafetensorError came through, naming no file.
    path, reason = corrupt_checkpoint
    with pytest.raises(CheckpointError, match="corrupt or incomplete") as refused:
        Florence2Runner(str(path), device="cpu")
    message = str(refused.value)
    assert str(path / "model.safetensors") in message and reason in message
    with pytest.raises(CheckpointError, match="corrupt or incomplete"):
        load_model("caption", model=str(path))


def test_cli_refuses_corrupt_weights_in_one_line_and_creates_nothing(corrupt_checkpoint, image_dir, capsys):
    path, _ = corrupt_checkpoint
    name = f"corrupt-{uuid.uuid4().hex[:8]}"
    try:
        code = main(["label", "--images", str(image_dir), "--dataset-name", name, "--task", "caption",
                     "--model", str(path)])  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert code == 2, err
        assert err.count("\n") == 0 and err.startswith("florence2: error: The weights in"), err
        assert str(path / "model.safetensors") in err and "Traceback" not in err
        assert not fo.dataset_exists(name), "a refused run left a new dataset behind"
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def test_corrupt_weights_of_a_hub_checkpoint_say_how_to_download_again():
    from safetensors import SafetensorError

    from fiftyone_florence2.engine.weights import corrupt_weights_error

    error = corrupt_weights_error(HUB_ID, SafetensorError("Error while deserializing header: header too small"))
    assert isinstance(error, CheckpointError) and "corrupt or incomplete (Error while deserializing" in str(error)
    assert f"hf cache rm model/{HUB_ID}" in str(error)


# ---------------------------------------------------------------- local paths


def test_relative_home_and_linked_paths_are_resolved(tiny_checkpoint, tokenizer, tmp_path, monkeypatch):
    home = tmp_path / "home"
    real = copy_checkpoint(tiny_checkpoint, home / "models" / "tiny")
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home)
    for name in ("models/tiny", "./models/tiny", "models/tiny/", "models/../models/tiny", "~/models/tiny"):
        assert resolve_checkpoint(name) == str(real), name
    assert resolve_checkpoint(f"  {real}  ") == str(real)
    assert resolve_checkpoint(real) == str(real)  # a Path works too
    assert resolve_checkpoint(str(tmp_path / "link")) == str(real)

    # The resolved path is what loads, and what the run record names.
    model = load_model("detection", model="~/models/tiny", num_beams=1, generate_kwargs=force(tokenizer, ANSWER))
    assert model.config.model == str(real)
    dataset = fo.Dataset()
    dataset.add_sample(fo.Sample(filepath=write_image(tmp_path / "a.png")))
    summary = label_samples(dataset, model, "det")
    assert dataset.get_run_info(summary.run_key).config.checkpoint == str(real)
    dataset.delete()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "nope", "is not a directory that exists"),
        (lambda root: _file(root / "weights.safetensors"), "is not a directory that exists"),
        (lambda root: _without(root, "config.json"), "lacks config.json"),
        (lambda root: _without(root, "processor_config.json"), "lacks processor_config.json"),
        (lambda root: _without(root, "model.safetensors"), r"lacks \*\.safetensors weights"),
    ],
    ids=["missing", "a file", "no config", "no processor config", "no weights"],
)
def test_bad_local_checkpoints_are_refused_before_anything_loads(make, message, tiny_checkpoint, tmp_path):
    root = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    path = str(make(root))
    for name in (path, "./" + os.path.relpath(path)):
        with pytest.raises(CheckpointError, match=message) as refused:
            load_model("caption", model=name)
        assert str(Path(path).resolve()) in str(refused.value)  # names the resolved path


def _file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _without(root: Path, name: str) -> Path:
    (root / name).unlink()
    return root


# ---------------------------------------------------------------- an unreachable Hub


def test_hub_offline_fails_at_once_with_one_line():
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as refused:
        Florence2Runner(HUB_ID)
    assert time.perf_counter() - start < 10
    message = str(refused.value)
    assert "Hugging Face Hub is not reachable" in message and "as model='/path/to/checkpoint'" in message
    assert "\n" not in message


def _cli_against_endpoint(endpoint: str, dataset_name: str, tmp_path: Path, timeout: float):
    """Runs ``florence2 label`` in a fresh process with the Hub at ``endpoint`` and no offline flag."""
    code = (
        "import sys, time\n"
        "import fiftyone, fiftyone_florence2.engine.runner\n"
        "from fiftyone_florence2.cli import main\n"
        "start = time.perf_counter()\n"
        f"code = main(['label', '--dataset', {dataset_name!r}, '--task', 'caption', '--model', {HUB_ID!r}])\n"
        "print(f'exit={code} seconds={time.perf_counter() - start:.2f}')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf-home"))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def persistent_dataset(dataset):
    dataset.persistent = True
    return dataset


def test_hub_refusing_connections_fails_fast_with_one_line(persistent_dataset, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends
    result = _cli_against_endpoint(f"http://127.0.0.1:{port}", persistent_dataset.name, tmp_path, timeout=120)
    exit_code, seconds = (part.split("=")[1] for part in result.stdout.split()[-2:])
    assert exit_code == "2" and float(seconds) < 10, result.stdout
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "florence2: error: The Hugging Face Hub is not reachable" in result.stderr
    assert list_runs(persistent_dataset) == []


class _StalledHub(http.server.BaseHTTPRequestHandler):
    """Answers a HEAD of the root, then never answers an API call: a Hub (or proxy) that is half down."""

    def do_HEAD(self):
        self.send_response(200)
        self.end_headers()

    def do_GET(self):
        self.server.stalled.wait()

    def log_message(self, *args):
        pass


@contextmanager
def _silent_socket():
    """Accepts connections and never says a word: a stalled proxy or a filtering firewall."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        server.settimeout(0.2)
        held, stop = [], threading.Event()

        def accept_and_hold():
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    held.append(server.accept()[0])

        thread = threading.Thread(target=accept_and_hold, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.getsockname()[1]}"
        finally:
            stop.set()
            thread.join()
            for conn in held:
                conn.close()


@contextmanager
def _half_down_hub():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StalledHub)
    server.stalled = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.stalled.set()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("hub", [_silent_socket, _half_down_hub], ids=["silent socket", "root answers, API stalls"])
def test_hub_that_never_answers_fails_fast_with_one_line(hub, persistent_dataset, tmp_path):
    # Regressions, both found by this test. Silent socket: the probe was a bare TCP
    # connect, which such an endpoint passes; loading then waited in
    # huggingface_hub's model_info GET, which has no read timeout (seen stuck
    # > 5 min); fixed by an HTTP probe (e21accb). Root answers, API stalls: that
    # probe passed and the same GET hung (> 60 s); fixed by probing the model API
    # that loading calls first, with a timeout (456a6b7).
    with hub() as endpoint:
        try:
            # The limit covers the fresh process's imports too, which take far longer on a loaded machine;
            # the check that matters is the time main() takes, measured inside and bounded below.
            result = _cli_against_endpoint(endpoint, persistent_dataset.name, tmp_path, timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("loading a Hub checkpoint hung for 120 s on a Hub that does not answer")
    exit_code, seconds = (part.split("=")[1] for part in result.stdout.split()[-2:])
    assert exit_code == "2" and float(seconds) < 15, result.stdout + result.stderr
    assert result.stderr.strip().count("\n") == 0 and "florence2: error:" in result.stderr


# ---------------------------------------------------------------- refusals write nothing


def _state(dataset: fo.Dataset):
    dataset.reload()
    docs = [s.to_dict() for s in dataset]
    return docs, sorted(dataset.get_field_schema()), list_runs(dataset), list_locks(dataset)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"label_field": "a.b"}, "Invalid label field"),
        ({"label_field": "filepath"}, "FiftyOne's own fields"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"shard": (2, 2)}, "Invalid shard"),
        ({"shard": (0, 0)}, "Invalid shard"),
        ({"skip_existing": True, "overwrite": True}, "skip_existing and overwrite exclude each other"),
        ({"label_field": "gt"}, "already holds Classification"),
        ({"label_field": "note"}, "already holds StringField"),
    ],
)
def test_bad_api_arguments_write_nothing(kwargs, error, dataset, tiny_checkpoint, tokenizer):
    dataset.set_values("gt", [fol.Classification(label="mine")] * len(dataset))
    dataset.set_values("note", ["keep"] * len(dataset))
    model = load_model("detection", model=str(tiny_checkpoint), generate_kwargs=force(tokenizer, ANSWER))
    before = _state(dataset)
    kwargs = {"label_field": "det", **kwargs}
    with pytest.raises(ValueError, match=error):
        label_samples(dataset, model, **kwargs)
    assert _state(dataset) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "caption", "--label-field", "a.b"], "Invalid label field"),
        (["--task", "caption", "--label-field", "note"], "already holds StringField"),
        (["--task", "phrase_grounding", "--prompt-field", "nope"], "does not exist"),
        (["--task", "region_to_category", "--regions-field", "note"], "must be a Detections field"),
        (["--task", "caption", "--model", "{remote}"], "declares remote code"),
        (["--task", "caption", "--model", HUB_ID], "Hugging Face Hub is not reachable"),
        (["--task", "caption", "--shard", "3/2"], "0 <= INDEX < COUNT"),
        (["--task", "caption", "--batch-size", "-1"], "of at least 1, got -1"),
    ],
)
def test_bad_cli_arguments_on_a_dataset_write_nothing(
    args, message, persistent_dataset, remote_code_checkpoint, capsys
):
    persistent_dataset.set_values("note", ["keep"] * len(persistent_dataset))
    before = _state(persistent_dataset)
    args = [a.replace("{remote}", str(remote_code_checkpoint)) for a in args]
    try:
        code = main(["label", "--dataset", persistent_dataset.name, *args])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert _state(persistent_dataset) == before


@pytest.mark.parametrize(
    "args",
    [
        ["--task", "caption", "--model", "{remote}"],
        ["--task", "caption", "--model", HUB_ID],
        ["--task", "phrase_grounding", "--prompt-field", "nope"],
        ["--task", "caption", "--label-field", "a.b"],
    ],
    ids=["remote code", "hub unreachable", "missing prompt field", "bad label field"],
)
def test_bad_cli_arguments_on_a_folder_create_no_dataset(args, image_dir, remote_code_checkpoint, capsys):
    # Regression (found by this test, fixed in e21accb): with --images the dataset
    # was created, persistent and filled, before check_run and before the model
    # loaded, so a refused run exited 2 but left a new dataset behind.
    name = f"refused-{uuid.uuid4().hex[:8]}"
    args = [a.replace("{remote}", str(remote_code_checkpoint)) for a in args]
    try:
        code = main(["label", "--images", str(image_dir), "--dataset-name", name, *args])
        assert code == 2 and "Traceback" not in capsys.readouterr().err
        assert not fo.dataset_exists(name), "a refused run left a new dataset behind"
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
