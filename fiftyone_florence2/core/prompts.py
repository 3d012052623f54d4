"""Prompt building: the question text for one generation. Standard library only."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from fiftyone_florence2.core.tasks import BINS, TASKS, VOCABULARY_TOKENS, Task

# A prompt holding one of Florence-2's own tokens would change the task or smuggle locations in.
_SPECIAL_TOKEN = re.compile(
    "|".join(
        [r"<loc_\d+>"]
        + [re.escape(task.token) for task in TASKS if task.token]
        + [rf"</?{re.escape(name)}>" for name in VOCABULARY_TOKENS]
    )
)

_MAX_EXTENT = 1.5


def prompt_string(text: object) -> str:
    """Returns ``text`` as given if it is a string that is not blank, else raises ``ValueError``."""
    if not isinstance(text, str):
        raise ValueError(f"A prompt must be a string, not {type(text).__name__}.")
    if not text.strip():
        raise ValueError("The prompt is empty.")
    return text


def check_prompt(text: object) -> str:
    """Returns ``text`` stripped, or raises ``ValueError`` if it cannot be a prompt."""
    stripped = " ".join(prompt_string(text).split())
    token = find_special_token(stripped)
    if token:
        raise ValueError(f"The prompt must not contain Florence-2 tokens such as {token!r}.")
    return stripped


def check_free_prompt(text: object) -> str:
    """Returns ``text`` exactly as given (a fine-tune's prompt, e.g. ``<DocVQA>What is the total?``), or
    raises ``ValueError`` if it is not text, is blank, or holds a task token of the table (``<OD>``), which
    Florence-2 was trained to read as its question, never as written."""
    text = prompt_string(text)
    task = next((task for task in TASKS if task.token and task.token in text), None)
    if task is not None:
        raise ValueError(
            f"The prompt holds {task.token!r}, the token of task {task.name!r}, which Florence-2 reads as its "
            f"question: run task {task.name!r} instead (a free prompt is sent exactly as written)."
        )
    return text


def task_prompt(task: Task, text: object) -> str:
    """The prompt as ``task`` sends it: a free prompt as given, any other checked and its spaces collapsed."""
    return check_free_prompt(text) if task.free else check_prompt(text)


def find_special_token(text: str) -> str | None:
    """The first Florence-2 token (task token, ``<loc_*>``, ``<sep>``...) inside ``text``, if any."""
    match = _SPECIAL_TOKEN.search(text)
    return match.group() if match else None


def rel_to_bin(value: float) -> int:
    """Quantizes a relative coordinate to a location bin, as Florence-2's processor does."""
    if not math.isfinite(value):
        raise ValueError(f"Coordinate {value!r} is not a finite number.")
    return min(math.floor(min(max(value, 0.0), 1.0) * BINS), BINS - 1)


def region_tokens(rel_xywh: Sequence[float]) -> str:
    """Returns ``<loc_x1><loc_y1><loc_x2><loc_y2>`` for a relative ``[x, y, w, h]`` box."""
    if rel_xywh is None or len(rel_xywh) != 4:
        raise ValueError(f"A region must be [x, y, width, height], got {rel_xywh!r}.")
    x, y, w, h = (float(v) for v in rel_xywh)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise ValueError(f"The region {list(rel_xywh)} has a coordinate that is not a finite number.")
    if not (w > 0 and h > 0):
        raise ValueError(f"The region {list(rel_xywh)} has no area.")
    # Relative boxes stay near [0, 1]; far larger values are pixel boxes or
    # corrupt, and clamping them would silently ask about the wrong region.
    if w > _MAX_EXTENT or h > _MAX_EXTENT or not (x < 1 and y < 1 and x + w > 0 and y + h > 0):
        raise ValueError(f"The region {list(rel_xywh)} is not a relative [x, y, w, h] box on the image.")
    return loc_tokens(box_bins((x, y, w, h)))


def loc_tokens(bins: Sequence[int]) -> str:
    """``<loc_b>`` for each bin, in order."""
    return "".join(f"<loc_{b}>" for b in bins)


def box_bins(rel_xywh: Sequence[float]) -> tuple[int, int, int, int]:
    """The ``(x1, y1, x2, y2)`` bins of a finite relative box, at least one bin wide each way."""
    x, y, w, h = rel_xywh
    (x1, x2), (y1, y2) = _bin_span(x, x + w), _bin_span(y, y + h)
    return x1, y1, x2, y2


def _bin_span(lo: float, hi: float) -> tuple[int, int]:
    """The bins of an interval, at least one bin wide, so that a thin region is still a region."""
    first, last = rel_to_bin(lo), rel_to_bin(hi)
    if last > first:
        return first, last
    return (first, first + 1) if first < BINS - 1 else (first - 1, first)


def build_question(task: Task, text: str | None = None, rel_xywh: Sequence[float] | None = None) -> str:
    """Returns the question Florence-2 is asked for ``task``.

    ``text`` is required by text tasks and ``rel_xywh`` by region tasks;
    giving either to a task that takes no input raises ``ValueError``.
    """
    if task.input == "none":
        if text is not None or rel_xywh is not None:
            raise ValueError(f"Task {task.name!r} takes no prompt or region.")
        return task.question
    if task.input == "text":
        if text is None:
            raise ValueError(f"Task {task.name!r} needs a prompt.")
        return task.question.format(input=task_prompt(task, text))
    if rel_xywh is None:
        raise ValueError(f"Task {task.name!r} needs a region.")
    return task.question.format(input=region_tokens(rel_xywh))
