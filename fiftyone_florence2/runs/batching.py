"""Labelling a batch of loaded items with a runner: requests, shared features, chunked generation.

A failure stays with its own item: an image that breaks the vision pass is
found and left out, a chunk whose generation fails is split until the failing
generation is alone, and every failure becomes a reason. The runner is
anything with :class:`Runner`'s methods, so this logic is tested without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import fiftyone.core.labels as fol

from fiftyone_florence2.core.errors import NothingToRead, SampleError
from fiftyone_florence2.core.prompts import build_question, check_prompt
from fiftyone_florence2.core.tasks import Task
from fiftyone_florence2.core.tiling import XYXY
from fiftyone_florence2.engine.items import Item
from fiftyone_florence2.labels.convert import Result, build_label, texts_from_value, threshold
from fiftyone_florence2.runs.config import Florence2ModelConfig


class Runner(Protocol):
    """What labelling needs of a runner (:class:`~fiftyone_florence2.engine.runner.Florence2Runner` is one)."""

    def image_features(self, pixel_values: Sequence[Any]) -> Any: ...
    def concat_features(self, parts: Sequence[Any]) -> Any: ...
    def pool_features(self, features: Any) -> Any: ...
    def check_question(self, question: str) -> None: ...
    def generate(self, task: Task, features: Any, questions: Sequence[str], image_index: Sequence[int],
                 **settings: Any) -> list[Any]: ...  # fmt: skip


@dataclass(frozen=True)
class Request:
    """One generation to run: which image or tile (row of the features), the question, and its context."""

    row: int
    question: str
    prompt: str | None = None
    region: fol.Detection | None = None
    tile: XYXY | None = None


@dataclass
class Outcome:
    """What labelling one item gave: a label per task, and why any task failed or was skipped.

    ``embedding``, when asked for, is the image's pooled vision features (a
    float32 vector), from the vision pass the labels were read from.
    """

    labels: dict[str, fol.Label] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    embedding: Any = None

    @property
    def reason(self) -> str | None:
        """Why the item is not fully labelled (failures first), or None."""
        return "; ".join(self.failed or self.skipped) or None


def label_items(
    config: Florence2ModelConfig, runner: Runner, items: Sequence[Item], embed: bool = False
) -> list[Outcome]:
    """Labels loaded items with every task of ``config`` (or the tasks each item asks for); with
    ``embed``, each item whose image went through the vision pass also gets its embedding."""
    outcomes = [Outcome(failed=[] if item.error is None else [item.error]) for item in items]
    ready = [i for i, item in enumerate(items) if item.error is None]
    features, ready = _features(config, runner, items, ready, outcomes)
    rows = _first_rows(items, ready)
    if embed and ready:
        vectors = runner.pool_features(features)
        for i in ready:
            outcomes[i].embedding = vectors[rows[i]]
    for task in config.tasks:
        requests: dict[int, list[Request]] = {}
        for i in ready:
            if items[i].tasks is not None and task.name not in items[i].tasks:
                continue
            try:
                requests[i] = _per_view(task, items[i], rows[i], _requests(config, runner, task, items[i], rows[i]))
            except NothingToRead as e:
                outcomes[i].skipped.append(f"{task.name}: {e}")
            except ValueError as e:
                outcomes[i].failed.append(f"{task.name}: {e}")
        flat = [r for rs in requests.values() for r in rs]
        generations = iter(_generate(config, runner, task, features, flat))
        for i, mine in requests.items():
            answers = [(r, next(generations)) for r in mine]
            errors = [g for _, g in answers if isinstance(g, Exception)]
            if errors:
                outcomes[i].failed.append(f"{task.name}: generation failed ({errors[0]})")
                continue
            results = [Result(g, r.prompt, r.region, r.tile) for r, g in answers]
            label = build_label(task, results, masks=config.masks, image_wh=items[i].image_wh, nms_iou=config.nms_iou)
            try:
                outcomes[i].labels[task.name] = threshold(label, config.confidence_thresh)
            except ValueError as e:  # a class with no threshold (apply_model sets thresholds unchecked)
                outcomes[i].failed.append(f"{task.name}: {e}")
    if not config.skip_failures:
        for item, outcome in zip(items, outcomes):
            if outcome.failed:
                raise SampleError(item.sample_id, "; ".join(outcome.failed))
    return outcomes


def _features(config, runner: Runner, items: Sequence[Item], ready: list[int], outcomes: list[Outcome]):
    """Vision features of the ready items' views (images, tiles), at most ``batch_size`` views a pass
    (or one image's, if more), so that tiles do not multiply the pass's memory."""
    parts = [_features_of(config, runner, items, group, outcomes) for group in _vision_groups(items, ready, config)]
    kept = [(features, done) for features, done in parts if done]
    if len(kept) <= 1:
        return kept[0] if kept else (None, [])
    return runner.concat_features([f for f, _ in kept]), [i for _, done in kept for i in done]


def _vision_groups(items: Sequence[Item], ready: list[int], config) -> list[list[int]]:
    """The ready items in passes of at most ``batch_size`` views, an item's views never split."""
    groups: list[list[int]] = []
    views = 0
    for i in ready:
        count = len(items[i].views)
        if not groups or views + count > config.batch_size:
            groups.append([])
            views = 0
        groups[-1].append(i)
        views += count
    return groups


def _features_of(config, runner: Runner, items: Sequence[Item], ready: list[int], outcomes: list[Outcome]):
    """Vision features of the ready items; an image that breaks the batch is found and left out."""
    if not ready:
        return None, []
    try:
        return runner.image_features([view for i in ready for view in items[i].views]), ready
    except Exception as e:
        if not config.skip_failures:
            raise
        if len(ready) == 1:
            outcomes[ready[0]].failed.append(f"vision encoder failed ({e})")
            return None, []
    parts = [(_features_of(config, runner, items, [i], outcomes), i) for i in ready]
    kept = [(features, i) for (features, ok), i in parts if ok]
    if not kept:
        return None, []
    return runner.concat_features([f for f, _ in kept]), [i for _, i in kept]


def _first_rows(items: Sequence[Item], ready: list[int]) -> dict[int, int]:
    """Each ready item's first row of the features: its views follow one another, item after item."""
    rows, row = {}, 0
    for i in ready:
        rows[i] = row
        row += len(items[i].views)
    return rows


def _per_view(task: Task, item: Item, first_row: int, requests: list[Request]) -> list[Request]:
    """The requests on the whole image, or, for a task that finds its own boxes in a tiled item, the same
    requests once per tile (answers come back relative to their tile)."""
    if not item.tiles:
        return requests
    if task.finds_instances:
        first_tile = first_row + (item.pixel_values is not None)
        return [replace(r, row=first_tile + t, tile=tile) for t, tile in enumerate(item.tiles) for r in requests]
    if item.pixel_values is None:
        raise ValueError("the whole image was not loaded (only its tiles)")
    return requests


def _requests(config: Florence2ModelConfig, runner: Runner, task: Task, item: Item, row: int) -> list[Request]:
    """The generations ``task`` needs for ``item``; raises ``ValueError`` for unusable inputs."""
    if task.input == "none":
        return [Request(row, build_question(task))]
    if task.input == "text":
        texts = _texts(config, item)
        if not texts:
            raise ValueError(f"no prompt in field {config.prompt_field!r}")
        requests = [Request(row, build_question(task, text=t), prompt=check_prompt(t)) for t in texts]
    else:
        requests = _region_requests(config, task, item.regions, row)
    for request in requests:
        runner.check_question(request.question)
    return requests


def _region_requests(config: Florence2ModelConfig, task: Task, regions: Any, row: int) -> list[Request]:
    """One request per box; any unusable box fails the sample rather than vanishing from its answer."""
    name = config.regions_field
    if regions is None or (isinstance(regions, fol.Detections) and not regions.detections):
        raise NothingToRead(f"no regions in field {name!r}")
    if not isinstance(regions, fol.Detections):
        raise ValueError(f"regions field {name!r} holds {type(regions).__name__}, not Detections")
    requests = []
    for detection in regions.detections:
        try:
            requests.append(Request(row, build_question(task, rel_xywh=detection.bounding_box), region=detection))
        except (ValueError, TypeError) as e:
            raise ValueError(f"region {detection.id} of field {name!r} is unusable: {e}") from None
    return requests


def _texts(config: Florence2ModelConfig, item: Item) -> list[str]:
    if config.prompt is not None:
        return [config.prompt]
    if config.classes is not None:
        return list(config.classes)
    return texts_from_value(item.prompt)


def _generate(config, runner: Runner, task: Task, features, requests: list[Request]) -> list[Any]:
    """Generations (or the exception that stopped them) in chunks of ``batch_size``."""
    out: list[Any] = []
    size = config.batch_size
    for lo in range(0, len(requests), size):
        out.extend(_generate_chunk(config, runner, task, features, requests[lo : lo + size]))
    return out


def _generate_chunk(config, runner: Runner, task: Task, features, chunk: list[Request]) -> list[Any]:
    try:
        return runner.generate(
            task,
            features,
            [r.question for r in chunk],
            [r.row for r in chunk],
            num_beams=config.num_beams,
            max_new_tokens=config.max_new_tokens,
            generate_kwargs=config.generate_kwargs,
            scores=config.scores,
        )
    except Exception as e:
        if not config.skip_failures:
            raise
        if len(chunk) == 1:
            return [e]
        half = len(chunk) // 2
        return _generate_chunk(config, runner, task, features, chunk[:half]) + _generate_chunk(
            config, runner, task, features, chunk[half:]
        )
