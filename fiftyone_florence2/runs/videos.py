"""Videos that gave a frames view no frame: each one a failed sample of the run, with the reason.

FiftyOne samples a video's frames to images with ffmpeg and skips a video it
cannot read with only a log line, so a run over the frames view would never
see it. Here each such video of the view's source gets its reason: a missing
or empty file, or what ffprobe says about it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

import numpy as np

from fiftyone_florence2.runs.checks import is_frames, shard_ids

# ffprobe reads a file's header only; a stalled network mount should not stall a run.
PROBE_SECONDS = 30
_FFMPEG_PREFIX = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\] ")


def unreadable_videos(samples: Any, shard: tuple[int, int] | None = None) -> dict[str, str]:
    """For a frames view, ``{video id: reason}`` for each video of its source (of ``shard``) with no sampled
    frame; empty for any other collection."""
    if not is_frames(samples):
        return {}
    sampled = {str(i) for i in samples._frames_dataset.distinct("sample_id")}
    ids, paths = samples._source_collection.values(["id", "filepath"])
    chosen = set(shard_ids(ids, shard))
    return {i: video_problem(path) for i, path in zip(ids, paths) if i not in sampled and i in chosen}


def video_problem(path: str) -> str:
    """Why no frame of the video at ``path`` could be sampled, in a few words."""
    if not os.path.isfile(path):
        return f"the video file does not exist ({path})"
    if os.path.getsize(path) == 0:
        return "the video file is empty (0 bytes)"
    if shutil.which("ffprobe") is None:
        return "no frame could be sampled from it: install ffmpeg, which FiftyOne reads videos with"
    probe = _probe(path)
    return f"ffmpeg cannot read it as a video: {probe}" if probe else "no frame could be sampled from it"


def _probe(path: str) -> str | None:
    """ffprobe's error for ``path`` (without the path it starts with), or None when it finds a video stream."""
    command = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=codec_type", "-of",
               "csv=p=0", path]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        return f"ffprobe did not answer within {PROBE_SECONDS} s"
    if done.returncode == 0 and "video" in done.stdout:
        return None
    # Lines such as "[mov,mp4 @ 0x55d1] moov atom not found" and "<path>: Invalid data found ...".
    lines = [_FFMPEG_PREFIX.sub("", line.strip()).removeprefix(f"{path}: ") for line in done.stderr.splitlines()]
    return "; ".join(dict.fromkeys(line for line in lines if line)) or "it holds no video stream"


def first_frame(path: str) -> np.ndarray:
    """The first frame of the video at ``path``, as an RGB array; ``ValueError`` with the reason if none."""
    import cv2

    capture = cv2.VideoCapture(path)
    try:
        ok, frame = capture.read() if capture.isOpened() else (False, None)
    finally:
        capture.release()
    if not ok or frame is None:
        raise ValueError(video_problem(path))
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
