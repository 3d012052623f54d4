"""Video datasets and frames views: every frame (or every Nth) labelled where FiftyOne keeps frame labels."""

from __future__ import annotations

import shutil

import cv2
import fiftyone as fo
import numpy as np
import pytest
from conftest import force

from fiftyone_florence2 import load_model
from fiftyone_florence2.labeling import label_samples
from fiftyone_florence2.provenance import list_runs

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
