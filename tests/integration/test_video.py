"""Video datasets and frames views: every frame (or every Nth) labelled where FiftyOne keeps frame labels."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import fiftyone as fo
import numpy as np
import pytest
from helpers import force

from fiftyone_florence2 import load_model
from fiftyone_florence2.runs.labelling import label_samples
from fiftyone_florence2.runs.records import list_runs, run_failures

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="FiftyOne reads video with ffmpeg")

FRAMES = 6


def write_video(path, frames=FRAMES, fps=6, seed=0) -> str:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (64, 48))
    rng = np.random.default_rng(seed)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return str(path)


@pytest.fixture
def videos(tmp_path):
    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(filepath=write_video(tmp_path / f"clip{i}.mp4", seed=i)) for i in range(2)])
    dataset.compute_metadata()
    yield dataset
    dataset.delete()


@pytest.fixture
def model(tiny_checkpoint, tokenizer):
    return load_model(
        "detection", model=str(tiny_checkpoint), generate_kwargs=force(tokenizer, "car<loc_1><loc_2><loc_500><loc_600>")
    )


def frame_labels(videos, field):
    videos.reload()
    return [label for frames in videos.values(f"frames.{field}") for label in frames]


def test_label_samples_on_a_video_dataset_labels_every_frame(videos, model):
    summary = label_samples(videos, model, "det")
    assert (summary.targeted, summary.labelled, summary.failures) == (2 * FRAMES, 2 * FRAMES, {})
    labels = frame_labels(videos, "det")
    assert len(labels) == 2 * FRAMES and all(label.detections[0].label == "car" for label in labels)
    assert "det" not in videos.get_field_schema()  # frame labels, not an empty sample-level field
    (key,) = list_runs(videos)  # the run is recorded on the video dataset, with its counts
    assert videos.load_run_results(key, cache=False).labelled == 2 * FRAMES


def test_every_nth_frame_and_resume_with_skip_existing(videos, model):
    summary = label_samples(videos, model, "det", frame_step=3)
    assert summary.labelled == 2 * FRAMES // 3
    numbers = [n for frames in videos.values("frames.frame_number") for n in frames]
    labels = frame_labels(videos, "det")
    assert [n for n, label in zip(numbers, labels) if label is not None] == [1, 4, 1, 4]
    resumed = label_samples(videos, model, "det", skip_existing=True)
    assert (resumed.skipped, resumed.labelled) == (4, 2 * FRAMES - 4)
    assert all(label is not None for label in frame_labels(videos, "det"))


def test_a_frames_view_is_labelled_through_to_the_videos(videos, model):
    frames = videos.to_frames(sample_frames=True)
    summary = label_samples(frames.skip(2), model, "det")
    assert summary.labelled == 2 * FRAMES - 2 and summary.failures == {}
    assert sum(label is not None for label in frame_labels(videos, "det")) == 2 * FRAMES - 2
    with pytest.raises(ValueError, match="already have labels"):
        label_samples(frames, model, "det")


# FiftyOne's save batching: per sample (the most background saves) and its default (a save per 0.2 s).
BATCHERS = [("static", 1), ("static", 3), ("latency", 0.2)]


@pytest.mark.parametrize(("batcher", "size"), BATCHERS, ids=[f"{b}-{s}" for b, s in BATCHERS])
def test_apply_model_on_a_frames_view_labels_every_frame_of_the_videos(tmp_path, model, monkeypatch, batcher, size):
    """Regression: FiftyOne's asynchronous save of a frames view synced some frames before their labels
    were written (3 of 80 frames at its default batcher, 3 to 15 of 24 saving per sample)."""
    monkeypatch.setattr(fo.config, "default_batcher", batcher)
    monkeypatch.setattr(fo.config, "batcher_static_size" if batcher == "static" else "batcher_target_latency", size)
    dataset = fo.Dataset()
    clips = [write_video(tmp_path / f"long{i}.mp4", frames=20, seed=i) for i in range(2)]
    dataset.add_samples([fo.Sample(filepath=path) for path in clips])
    frames = dataset.to_frames(sample_frames=True)
    for run in range(2):
        frames.apply_model(model, label_field=f"det{run}", batch_size=2)
        assert sum(label is not None for label in frame_labels(dataset, f"det{run}")) == 40
    dataset.delete()


def test_apply_model_on_a_video_dataset_labels_frames(videos, model):
    videos.apply_model(model, label_field="det")
    assert len([label for label in frame_labels(videos, "det") if label is not None]) == 2 * FRAMES


def test_the_cli_labels_every_nth_frame_of_a_video_dataset(videos, tiny_checkpoint, capsys):
    from fiftyone_florence2.cli import main

    videos.persistent = True
    args = ["label", "--dataset", videos.name, "--task", "caption", "--model", str(tiny_checkpoint)]
    assert main([*args, "--label-field", "cap", "--frame-step", "2", "--max-new-tokens", "2"]) == 0
    assert f"Labelled {FRAMES} of {FRAMES} sample(s)" in capsys.readouterr().out
    assert sum(label is not None for label in frame_labels(videos, "cap")) == FRAMES
    assert main([*args, "--frame-step", "0"]) == 2 and "--frame-step must be" in capsys.readouterr().err


SAMPLING_REFUSALS = [
    ("images", {"fps": 2}, "fps was given, but this collection holds image media, not videos"),
    ("images", {"frame_step": 2}, "frame_step was given, but this collection holds image media"),
    ("frames", {"fps": 2}, "fps was given, but this is a frames view, whose frames are sampled already"),
    ("frames", {"frame_step": 3}, "frame_step was given, but this is a frames view"),
]


@pytest.mark.parametrize(("target", "given", "message"), SAMPLING_REFUSALS, ids=[m for *_, m in SAMPLING_REFUSALS])
def test_sampling_options_are_refused_where_nothing_is_sampled(videos, model, image_dir, target, given, message):
    images = fo.Dataset()
    images.add_samples([fo.Sample(filepath=str(p)) for p in sorted(image_dir.iterdir())])
    collection = images if target == "images" else videos.to_frames(sample_frames=True)
    with pytest.raises(ValueError, match=message):
        label_samples(collection, model, "det", **given)
    assert images.list_runs() == list_runs(videos) == []
    assert "det" not in images.get_field_schema() and "det" not in videos.get_frame_field_schema()
    images.delete()


@pytest.mark.parametrize("flag", [["--fps", "2"], ["--frame-step", "2"]], ids=["fps", "frame_step"])
@pytest.mark.parametrize("source", ["--images", "--dataset"])
def test_the_cli_refuses_sampling_options_on_images_and_writes_nothing(
    tiny_checkpoint, image_dir, capsys, flag, source
):
    from fiftyone_florence2.cli import main

    images = fo.Dataset(persistent=True)
    images.add_samples([fo.Sample(filepath=str(p)) for p in sorted(image_dir.iterdir())])
    name = "never-made" if source == "--images" else images.name
    given = ["--images", str(image_dir), "--dataset-name", name] if source == "--images" else ["--dataset", name]
    assert main(["label", *given, "--task", "caption", "--model", str(tiny_checkpoint), *flag]) == 2
    assert f"{flag[0]} was given, but this collection holds image media" in capsys.readouterr().err
    assert (
        not fo.dataset_exists("never-made")
        and images.list_runs() == []
        and "florence2_caption" not in images.get_field_schema()
    )
    images.delete()


def _random_bytes(path):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _truncated(path):
    whole = write_video(path.with_suffix(".whole.mp4"), frames=20)
    data = Path(whole).read_bytes()
    path.write_bytes(data[: len(data) // 2])


# Each row: how the broken file is made, and what its reason says.
BROKEN = [
    ("random bytes", _random_bytes, "Invalid data found when processing input"),
    ("zero length", lambda path: path.write_bytes(b""), "the video file is empty (0 bytes)"),
    ("truncated", _truncated, "ffmpeg cannot read it as a video: moov atom not found; Invalid data found"),
    ("missing", lambda path: None, "the video file does not exist"),
]


@pytest.mark.parametrize(("make", "reason"), [row[1:] for row in BROKEN], ids=[row[0] for row in BROKEN])
def test_a_broken_video_is_a_failed_sample_with_its_reason(tmp_path, model, make, reason, capsys):
    from fiftyone_florence2.cli import main

    make(tmp_path / "broken.mp4")
    good = write_video(tmp_path / "good.mp4")
    dataset = fo.Dataset(persistent=True)
    broken_id, good_id = dataset.add_samples([fo.Sample(filepath=str(tmp_path / "broken.mp4")),
                                              fo.Sample(filepath=good)])  # fmt: skip
    summary = label_samples(dataset, model, "det")
    assert (summary.targeted, summary.labelled, list(summary.failures)) == (FRAMES + 1, FRAMES, [broken_id])
    assert reason in summary.failures[broken_id]
    assert reason in dataset.load_run_results(summary.run_key, cache=False).failures[broken_id]
    assert len([label for label in frame_labels(dataset, "det") if label is not None]) == FRAMES  # the good one
    assert dataset.get_run_info(summary.run_key).config.status == "completed"

    dataset.delete_samples(good_id)  # only the broken video: a failed run, and the CLI says why
    args = ["label", "--dataset", dataset.name, "--task", "caption", "--model", str(tiny_checkpoint_of(model))]
    assert main([*args, "--label-field", "cap", "--max-new-tokens", "2"]) == 1
    out = capsys.readouterr().out
    assert "Labelled 0 of 1 sample(s)" in out and "broken.mp4: " in out and reason in out
    (key,) = [k for k in list_runs(dataset) if k != summary.run_key]
    assert dataset.get_run_info(key).config.status == "failed"
    dataset.delete()


def tiny_checkpoint_of(model) -> str:
    return model.config.model


def test_a_preview_of_a_video_labels_its_first_frame_and_writes_nothing(videos, model, tmp_path):
    from fiftyone_florence2.runs.labelling import preview_samples

    (tmp_path / "empty.mp4").write_bytes(b"")
    empty = fo.Sample(filepath=str(tmp_path / "empty.mp4"))
    videos.add_sample(empty)
    ids = videos.values("id")
    rows = preview_samples(videos, model, [ids[0], empty.id])
    (item, path, outcome) = rows[0]
    assert (item.sample_id, path, item.image_wh, item.error) == (ids[0], videos.first().filepath, (64, 48), None)
    assert outcome.labels["detection"].detections[0].label == "car"
    assert rows[1][0].error == "the video file is empty (0 bytes)" and not rows[1][2].labels
    assert "det" not in videos.get_frame_field_schema() and list_runs(videos) == []


@pytest.mark.parametrize("bad", ["clip0", "", 42, "0" * 23], ids=["a name", "empty", "a number", "23 digits"])
def test_a_preview_of_something_that_is_not_a_sample_id_is_refused(videos, model, bad):
    from fiftyone_florence2.runs.labelling import preview_samples

    with pytest.raises(ValueError, match=r"is not a sample id \(24 hexadecimal digits\)"):
        preview_samples(videos, model, [videos.first().id, bad])


def _as_in_a_new_shell(make_frames):
    """Runs ``make_frames``, then drops the frames datasets it generated, as FiftyOne does once the last
    process using them exits: a later process rebuilding the view would sample the frames again."""
    import fiftyone.core.odm as foo

    def temporary():
        return set(foo.get_db_conn().datasets.find({"persistent": False}).distinct("name"))

    before = temporary()
    result = make_frames()
    for name in temporary() - before:
        fo.Dataset(name, _create=False, _virtual=True)._delete()
    return result


@pytest.fixture
def ffmpeg_calls(tmp_path, monkeypatch) -> Path:
    """A log of every ffmpeg call from now on, by this process and those it starts."""
    bin_dir = tmp_path / "bin"
    log = bin_dir / "calls.log"
    bin_dir.mkdir()
    (bin_dir / "ffmpeg").write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {shutil.which("ffmpeg")} "$@"\n')
    (bin_dir / "ffmpeg").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def _media(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if "bin" not in path.parts)


def test_listing_a_video_datasets_runs_is_read_only(videos, model, tmp_path, ffmpeg_calls):
    videos.persistent = True  # for the commands in other processes
    summary = _as_in_a_new_shell(lambda: label_samples(videos, model, "det"))
    for folder in tmp_path.glob("clip*/"):  # the sampled frames: rebuilding the view would write them again
        shutil.rmtree(folder)
    ffmpeg_calls.unlink()  # labelling sampled them
    media = _media(tmp_path)
    assert list_runs(videos) == [summary.run_key] and run_failures(videos, summary.run_key) == {}
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    command = [sys.executable, "-m", "fiftyone_florence2.cli", "runs", "--dataset", videos.name]
    for extra, printed in (([], "  completed   detection -> det"), (["--failures", summary.run_key], "0 failure(s)")):
        listed = subprocess.run([*command, *extra], env=env, capture_output=True, text=True, timeout=120)
        assert listed.returncode == 0 and printed in listed.stdout, listed.stderr
    assert _media(tmp_path) == media and not ffmpeg_calls.exists()
