"""The ``florence2`` command: list tasks, label a folder, fail cleanly on bad arguments."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import uuid

import pytest

from fiftyone_florence2.app import app_command
from fiftyone_florence2.cli import build_parser, main, task_table
from fiftyone_florence2.core.tasks import TASKS


def run_cli(*args: str, env_db: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if env_db:
        env["FIFTYONE_DATABASE_DIR"] = env_db
    return subprocess.run(
        [sys.executable, "-m", "fiftyone_florence2.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_tasks_lists_every_task_with_its_label_type(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for task in TASKS:
        assert task.name in out and task.token in out
    assert out.strip() == task_table().strip()


def test_labels_a_folder(tmp_path, image_dir, tiny_checkpoint):
    name = f"cli-folder-{uuid.uuid4().hex[:8]}"  # databases of concurrent test runs may be shared
    (image_dir / "notes.txt").write_text("ignored: not an image extension")
    (image_dir / "fake.jpg").write_text("not really a jpeg")
    db = str(tmp_path / "db")
    result = run_cli(
        "label", "--images", str(image_dir), "--dataset-name", name, "--task", "detection",
        "--task", "caption", "--label-field", "f2", "--model", str(tiny_checkpoint), "--batch-size", "2",
        "--num-beams", "1", "--max-new-tokens", "8",
        env_db=db,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Labelled 5 of 6 sample(s)" in result.stdout
    assert "fake.jpg: not an image file" in result.stdout
    assert "f2_detection (Detections)" in result.stdout and "f2_caption (Classification)" in result.stdout
    assert f"Open it in the App:  {app_command(name)}" in result.stdout
    code = (
        f"import fiftyone as fo; d = fo.load_dataset({name!r}); print(len(d), d.count('f2_caption'), "
        "d.count('f2_detection'), d.get_field('f2_detection').document_type.__name__)"
    )
    env = {**os.environ, "FIFTYONE_DATABASE_DIR": db}
    check = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert check.stdout.split()[-4:] == ["6", "5", "5", "Detections"], check.stderr
    again = run_cli("label", "--images", str(image_dir), "--dataset-name", name, "--task", "caption",
                    "--label-field", "f2_caption", "--model", str(tiny_checkpoint), env_db=db)  # fmt: skip
    assert again.returncode == 2 and "already have labels" in again.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["label", "--images", "/x"], "the following arguments are required: --task"),
        (["label", "--task", "caption"], "one of the arguments --images --dataset is required"),
        (["label", "--images", "{images}", "--task", "nope"], "Unknown Florence-2 task 'nope'"),
        (["label", "--images", "{images}", "--task", "caption", "--batch-size", "0"], "of at least 1, got 0"),
        (["label", "--images", "{images}", "--task", "caption", "--batch-size", "x"], "invalid int value"),
        (["label", "--images", "{images}", "--task", "caption", "--confidence-thresh", "5"], "from 0 to 1"),
        (["label", "--images", "{images}", "--task", "caption", "--confidence-thresh", "nan"], "from 0 to 1"),
        (["label", "--images", "{images}", "--task", "caption", "--confidence-thresh", "-1"], "from 0 to 1"),
        (
            ["label", "--images", "{images}", "--task", "caption", "--confidence-thresh", "high"],
            "--confidence-thresh must be a number from 0 to 1",
        ),
        (
            ["label", "--images", "{images}", "--task", "caption", "--confidence-thresh", "car=2"],
            "--confidence-thresh['car'] must be from 0 to 1",
        ),
        (
            ["label", "--images", "{images}", "--task", "detection", "--confidence-thresh", "car=0.7"],
            "--confidence-thresh names no threshold for the classes it does not list",
        ),
        (
            [
                "label",
                "--images",
                "{images}",
                "--task",
                "open_vocabulary_detection",
                "--classes",
                "car,bus",
                "--confidence-thresh",
                "car=0.7",
            ],
            "--confidence-thresh has no threshold for class(es) 'bus'",
        ),
        (["label", "--images", "{images}", "--task", "caption", "--device", "gpu"], "device must be one of"),
        (["label", "--images", "{images}", "--task", "caption", "--prompt", "hi"], "none of the tasks"),
        (["label", "--images", "{images}", "--task", "phrase_grounding"], "need text"),
        (["label", "--images", "/no/such/dir", "--task", "caption"], "is not a folder"),
        (["label", "--images", "{images}", "--task", "caption", "--model", "/no/ckpt"], "is not a directory"),
        (["label", "--images", "{images}", "--task", "caption", "--label-field", "a.b"], "Invalid label field"),
        (["label", "--images", "{images}", "--task", "caption", "--shard", "4/4"], "0 <= INDEX < COUNT"),
        (["label", "--dataset", "no-such-dataset", "--task", "caption"], "No FiftyOne dataset"),
        (
            ["label", "--images", "{images}", "--task", "caption", "--skip-existing", "--overwrite"],
            "--skip-existing and --overwrite exclude each other",
        ),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_fail_cleanly(args, message, image_dir, capsys):
    args = [a.replace("{images}", str(image_dir)) for a in args]
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_a_per_class_threshold_is_recorded_in_its_json_form(image_dir, tiny_checkpoint, capsys):
    import fiftyone as fo

    name = f"cli-thresh-{uuid.uuid4().hex[:8]}"
    args = ["label", "--images", str(image_dir), "--dataset-name", name, "--task", "detection", "--model",
            str(tiny_checkpoint), "--num-beams", "1", "--max-new-tokens", "4",
            "--confidence-thresh", "0.4, car=0.7"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    dataset = fo.load_dataset(name)
    try:
        [key] = dataset.list_runs()
        assert dataset.get_run_info(key).config.generation["confidence_thresh"] == {"car": 0.7, "*": 0.4}
    finally:
        dataset.delete()


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_a_device_this_machine_lacks_is_a_usage_error(device, image_dir, tiny_checkpoint, capsys):
    """Regression: --device cuda without CUDA exited 1 with the runner's error; it is a usage error (2)."""
    import fiftyone as fo

    name = f"no-{device.replace(':', '')}-{uuid.uuid4().hex[:6]}"
    args = ["label", "--images", str(image_dir), "--dataset-name", name, "--model", str(tiny_checkpoint)]
    assert main([*args, "--task", "caption", "--device", device]) == 2
    err = capsys.readouterr().err
    assert "is not available" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not fo.dataset_exists(name)


def test_a_folder_of_only_broken_images_leaves_no_dataset(tmp_path, tiny_checkpoint, capsys):
    """Regression: a folder whose every image is unreadable still left a new persistent dataset behind."""
    import fiftyone as fo

    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.jpg").write_text("not a jpeg")
    (folder / "b.png").write_bytes(b"")
    name = f"broken-{uuid.uuid4().hex[:6]}"
    args = ["label", "--images", str(folder), "--dataset-name", name, "--task", "caption"]
    assert main([*args, "--model", str(tiny_checkpoint), "--max-new-tokens", "2"]) == 1
    out = capsys.readouterr().out
    assert "2 sample(s) could not be labelled" in out and "a.jpg: not an image file" in out
    assert "deleted again" in out and not fo.dataset_exists(name)


def test_unreachable_hub_is_one_clear_line(image_dir, capsys):
    code = main(["label", "--images", str(image_dir), "--dataset-name", "hubless", "--task", "caption"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Hugging Face Hub is not reachable" in err and "--model /path/to/checkpoint" in err


def test_runs_lists_failures_and_deletes(dataset, tiny_checkpoint, tmp_path, capsys):
    import fiftyone as fo

    from fiftyone_florence2 import load_model
    from fiftyone_florence2.runs.labelling import label_samples

    missing = dataset.add_sample(fo.Sample(filepath=str(tmp_path / "gone.jpg")))
    summary = label_samples(dataset, load_model("caption", model=str(tiny_checkpoint), max_new_tokens=4), "cap")
    assert main(["runs", "--dataset", dataset.name]) == 0
    listing = capsys.readouterr().out
    assert summary.run_key in listing and "completed" in listing and "labelled 5, skipped 0, failed 1" in listing
    assert main(["runs", "--dataset", dataset.name, "--failures", summary.run_key]) == 0
    out = capsys.readouterr().out
    assert f"{missing}  {tmp_path / 'gone.jpg'}  file not found" in out and "1 failure(s)" in out
    assert main(["runs", "--dataset", dataset.name, "--failures", "nope"]) == 2
    assert "No Florence-2 run 'nope'" in capsys.readouterr().err
    assert main(["runs", "--dataset", dataset.name, "--delete", summary.run_key]) == 0
    assert dataset.list_runs() == [] and dataset.count("cap") == 5


def two_photo_folders(tmp_path):
    """``first/photos-X`` and ``second/photos-X``: two unrelated folders whose default dataset names agree."""
    from helpers import write_image

    name = f"photos-{uuid.uuid4().hex[:8]}"
    folders = [tmp_path / "first" / name, tmp_path / "second" / name]
    for seed, folder in enumerate(folders):
        folder.mkdir(parents=True)
        write_image(folder / f"img_{seed}.png", size=(64, 48), seed=seed)
    return name, folders


@pytest.mark.parametrize(
    ("made_by", "second", "extra", "code", "count", "message"),
    [
        ("cli", "same", [], 0, 1, None),
        ("cli", "other", [], 2, 1, "was made from {first}, not {second}: name a new dataset with --dataset-name"),
        ("cli", "other", ["--dataset-name", "{name}"], 2, 1, "was made from {first}"),
        ("cli", "other", ["--add-to-dataset"], 0, 2, None),
        ("unrecorded", "same", [], 0, 1, None),
        ("unrecorded", "other", [], 2, 1, "holds images from outside {second} (such as {first}"),
        ("unrecorded", "other", ["--add-to-dataset"], 0, 2, None),
        ("cli", "other", ["--dataset", "{name}", "--add-to-dataset"], 2, 1, "--add-to-dataset goes with --images"),
    ],
    ids=["same-folder", "other-folder", "named-alike", "asked-to-add", "old-same", "old-other", "old-asked",
         "add-without-images"],
)  # fmt: skip
def test_a_folder_never_silently_joins_a_dataset_made_from_another(
    tmp_path, tiny_checkpoint, capsys, made_by, second, extra, code, count, message
):
    import fiftyone as fo

    from fiftyone_florence2.runs.folders import SOURCE_KEY

    name, (first, other) = two_photo_folders(tmp_path)
    flags = ["--task", "caption", "--model", str(tiny_checkpoint), "--max-new-tokens", "2", "--num-beams", "1"]
    assert main(["label", "--images", str(first), *flags]) == 0
    dataset = fo.load_dataset(name)
    try:
        assert dataset.info[SOURCE_KEY] == str(first.resolve())
        if made_by == "unrecorded":  # a dataset made before folders were recorded
            dataset.info.pop(SOURCE_KEY)
            dataset.save()
        capsys.readouterr()
        folder = first if second == "same" else other
        fill = {"name": name, "first": str(first.resolve()), "second": str(folder.resolve())}
        extra = [arg.format(**fill) for arg in extra]
        source = extra[:2] if extra[:1] == ["--dataset"] else ["--images", str(folder)]
        rest = extra[2:] if extra[:1] == ["--dataset"] else extra
        assert main(["label", *source, *rest, *flags, "--skip-existing", "--label-field", "florence2_caption"]) == code
        err = capsys.readouterr().err
        assert fo.load_dataset(name).count() == count
        if message:
            assert message.format(**fill) in err and err.count("\n") == 1, err
    finally:
        dataset.delete()


@pytest.mark.parametrize("add", [False, True])
def test_dataset_for_images_refuses_another_folder_unless_asked(tmp_path, add):
    import fiftyone as fo

    from fiftyone_florence2.runs.folders import dataset_for_images

    name, (first, other) = two_photo_folders(tmp_path)
    dataset = dataset_for_images(str(first))
    try:
        if add:
            assert dataset_for_images(str(other), add=True).count() == 2
        else:
            with pytest.raises(ValueError, match=f"was made from {first.resolve()}, not .*pass another name="):
                dataset_for_images(str(other))
            assert fo.load_dataset(name).count() == 1
    finally:
        dataset.delete()


def test_the_usage_and_a_missing_command_name_every_command(capsys):
    parser = build_parser()
    (commands,) = [action.choices for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    listed = "{" + ",".join(commands) + "}"
    assert "recalibrate" in commands and listed in parser.format_usage()
    with pytest.raises(SystemExit):
        main([])
    assert f"required: {listed}" in capsys.readouterr().err
