"""The FiftyOne ``Model`` for ``apply_model``: per-sample prompts and regions, per-image failures.

The vision features of a batch are computed once and shared by every task
and by every prompt or region of the batch. A sample that fails gets no
label and a reason in :attr:`Florence2Model.failures`; the others in its
batch are still labelled.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import fiftyone.core.config as foc
import fiftyone.core.labels as fol
import fiftyone.core.models as fom
import numpy as np
from PIL import Image

from .checkpoints import DEFAULT_CHECKPOINT, resolve_checkpoint
from .images import ImageLoadError, load_rgb, shrink_toward, to_rgb
from .labels import Result, build_label
from .prompts import build_question, check_prompt
from .tasks import Task, get_tasks

logger = logging.getLogger(__name__)

# Tasks that accept a list of classes, one generation per class.
CLASS_TASKS = frozenset({"open_vocabulary_detection", "segmentation"})
SEGMENTATION_TASKS = frozenset({"segmentation", "region_to_segmentation"})

OPTIONS = [
    "task",
    "model",
    "revision",
    "prompt",
    "prompt_field",
    "classes",
    "regions_field",
    "masks",
    "batch_size",
    "num_beams",
    "max_new_tokens",
    "device",
    "dtype",
    "attn_implementation",
    "confidence_thresh",
    "scores",
    "skip_failures",
    "generate_kwargs",
]


class Florence2Error(RuntimeError):
    """A sample that could not be labelled, raised when ``skip_failures`` is off."""

    def __init__(self, sample_id: str | None, reason: str):
        super().__init__(f"Sample {sample_id or '(no id)'}: {reason}")
        self.sample_id = sample_id
        self.reason = reason


def _field_name(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or value.startswith(("$", "_")) or " " in value:
        raise ValueError(f"{key} must be a field name such as 'ground_truth', got {value!r}.")
    return value


def _positive(value: Any, key: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{key} must be a whole number of at least 1, got {value!r}.")
    return int(value)


class Florence2ModelConfig(foc.Config):
    """Settings of a :class:`Florence2Model`, validated when built.

    Args:
        task ("caption"): a task name or token, or a list of them; several
            tasks write one field each (``<label_field>_<task>``)
        model ("florence-community/Florence-2-base-ft"): a Hub id or a local
            checkpoint directory in transformers' native format
        revision (None): a Hub branch, tag or commit
        prompt (None): the text for every sample of a text task
        prompt_field (None): a field holding each sample's text: a string, a
            list of strings, or a ``Classification``/``Classifications``/
            ``Detections`` whose labels are used
        classes (None): a list of texts, one generation each, for
            ``open_vocabulary_detection`` and ``segmentation``
        regions_field (None): a ``Detections`` field whose boxes region tasks
            describe, one generation per box
        masks (False): write segmentation tasks as ``Detections`` with
            instance masks instead of ``Polylines``
        batch_size (8): the most generations per ``generate`` call
        num_beams (3): beam search width (1 is greedy and fastest)
        max_new_tokens (None): a budget for every task instead of each
            task's own
        device (None): ``cuda``, ``cuda:N``, ``mps`` or ``cpu``; the best one
            available when None
        dtype (None): ``float32``, ``bfloat16`` or ``float16``; bf16/fp16 on
            GPUs and fp32 on CPU when None
        attn_implementation ("sdpa"): the attention kernel
        confidence_thresh (None): drop detections and polylines whose
            confidence is lower
        scores (True): compute confidences from token probabilities
        skip_failures (True): record a failing sample and go on; when
            False, raise
        generate_kwargs (None): extra ``generate`` arguments, or a function
            ``(task, questions) -> dict``
    """

    def __init__(self, d: dict):
        unknown = sorted(set(d) - set(OPTIONS))
        if unknown:
            raise ValueError(f"Unknown option(s) {', '.join(unknown)}. Options are: {', '.join(OPTIONS)}.")
        self.task = self.parse_raw(d, "task", default="caption")
        self.tasks: tuple[Task, ...] = get_tasks(self.task)
        self.model = resolve_checkpoint(self.parse_raw(d, "model", default=DEFAULT_CHECKPOINT))
        self.revision = self.parse_raw(d, "revision", default=None)
        prompt = self.parse_raw(d, "prompt", default=None)
        self.prompt = None if prompt is None else check_prompt(prompt)
        self.prompt_field = _field_name(self.parse_raw(d, "prompt_field", default=None), "prompt_field")
        classes = self.parse_raw(d, "classes", default=None)
        if isinstance(classes, str):
            classes = [c for c in classes.split(",") if c.strip()]
        if classes is not None and (not isinstance(classes, (list, tuple)) or not classes):
            raise ValueError(f"classes must be a non-empty list of texts, got {classes!r}.")
        self.classes = None if classes is None else list(dict.fromkeys(check_prompt(c) for c in classes))
        self.regions_field = _field_name(self.parse_raw(d, "regions_field", default=None), "regions_field")
        self.masks = bool(self.parse_raw(d, "masks", default=False))
        self.batch_size = _positive(self.parse_raw(d, "batch_size", default=8), "batch_size")
        self.num_beams = _positive(self.parse_raw(d, "num_beams", default=3), "num_beams")
        self.max_new_tokens = _positive(
            self.parse_raw(d, "max_new_tokens", default=None), "max_new_tokens", allow_none=True
        )
        self.device = self.parse_raw(d, "device", default=None)
        self.dtype = self.parse_raw(d, "dtype", default=None)
        self.attn_implementation = self.parse_raw(d, "attn_implementation", default="sdpa")
        thresh = self.parse_raw(d, "confidence_thresh", default=None)
        if thresh is not None and (isinstance(thresh, bool) or not isinstance(thresh, (int, float))):
            raise ValueError(f"confidence_thresh must be a number, got {thresh!r}.")
        self.confidence_thresh = thresh
        self.scores = bool(self.parse_raw(d, "scores", default=True))
        self.skip_failures = bool(self.parse_raw(d, "skip_failures", default=True))
        self.generate_kwargs = self.parse_raw(d, "generate_kwargs", default=None)
        self._check_inputs()

    def _check_inputs(self) -> None:
        """Each task gets exactly the inputs it needs; stray inputs are mistakes."""
        text_tasks = [t.name for t in self.tasks if t.input == "text"]
        region_tasks = [t.name for t in self.tasks if t.input == "region"]
        given = [k for k in ("prompt", "prompt_field", "classes") if getattr(self, k) is not None]
        if text_tasks and not given:
            raise ValueError(
                f"Task(s) {', '.join(text_tasks)} need text: pass prompt='...', "
                "prompt_field='<field>' or, for detection and segmentation, classes=[...]."
            )
        if len(given) > 1:
            raise ValueError(f"Pass only one of prompt, prompt_field and classes (got {', '.join(given)}).")
        if given and not text_tasks:
            raise ValueError(f"{given[0]} was given, but none of the tasks takes text.")
        if self.classes is not None and set(text_tasks) - CLASS_TASKS:
            raise ValueError(
                f"classes applies to {' and '.join(sorted(CLASS_TASKS))}; "
                f"give {', '.join(sorted(set(text_tasks) - CLASS_TASKS))} a prompt or prompt_field."
            )
        if region_tasks and self.regions_field is None:
            raise ValueError(f"Task(s) {', '.join(region_tasks)} need regions_field='<Detections field>'.")
        if self.regions_field is not None and not region_tasks:
            raise ValueError("regions_field was given, but none of the tasks takes regions.")
        if self.masks and not SEGMENTATION_TASKS & {t.name for t in self.tasks}:
            raise ValueError(f"masks applies only to {' and '.join(sorted(SEGMENTATION_TASKS))}.")

    @property
    def label_types(self) -> dict[str, str]:
        """The FiftyOne label type each task writes, with ``masks`` taken into account."""
        return {
            t.name: "Detections" if self.masks and t.name in SEGMENTATION_TASKS else t.label_type for t in self.tasks
        }

    def label_fields(self, label_field: str) -> dict[str, str]:
        """The field each task writes: ``label_field``, or ``<label_field>_<task>`` for several tasks."""
        if self.multitask:
            return {t.name: f"{label_field}_{t.name}" for t in self.tasks}
        return {self.tasks[0].name: label_field}

    @property
    def multitask(self) -> bool:
        """Whether predictions are dicts keyed by task name."""
        return len(self.tasks) > 1 or isinstance(self.task, (list, tuple))


@dataclass
class Item:
    """One loaded image with what its sample provides; ``error`` says why it is unusable."""

    sample_id: str | None
    pixel_values: Any = None
    image_wh: tuple[int, int] | None = None
    prompt: Any = None
    regions: Any = None
    error: str | None = None


def load_item(item: Item, image: Any, preprocess, draft_wh=None) -> Item:
    """Fills ``item`` with the pixel values of ``image`` (a path, PIL image or HWC array)."""
    try:
        if isinstance(image, str):
            loaded = load_rgb(image, draft_wh)
            pil, item.image_wh = loaded.image, (loaded.width, loaded.height)
        else:
            pil = to_rgb(image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image)))
            item.image_wh = pil.size
            pil = shrink_toward(pil, draft_wh)
        item.pixel_values = preprocess(pil)
    except ImageLoadError as e:
        item.error = str(e)
    except Exception as e:  # a worker must hand every failure back, not raise
        item.error = f"could not load the image ({type(e).__name__}: {e})"
    return item


def _get(sample: Any, field: str | None) -> Any:
    if not field:
        return None
    try:
        return sample.get_field(field)
    except (AttributeError, KeyError):
        return None


def texts_from_value(value: Any) -> list[str]:
    """The prompts a field value holds: a string, strings, or labelled FiftyOne labels."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, fol.Classification):
        return [value.label] if value.label else []
    if isinstance(value, (fol.Classifications, fol.Detections, fol.Polylines)):
        labels = [label.label for label in getattr(value, value._LABEL_LIST_FIELD) if label.label]
        return list(dict.fromkeys(labels))
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(dict.fromkeys(value))
    raise ValueError(f"a prompt field must hold text or labels, not {type(value).__name__}")


@dataclass(frozen=True)
class Request:
    """One generation to run: which image (row of the features), the question, and its context."""

    row: int
    question: str
    prompt: str | None = None
    region: fol.Detection | None = None


class Florence2Model(fom.Model, fom.SamplesMixin):
    """Florence-2 as a FiftyOne model, for ``dataset.apply_model(model, label_field=...)``.

    Args:
        config: a :class:`Florence2ModelConfig`
        runner (None): an already loaded :class:`~fiftyone_florence2.runner.Florence2Runner`
            to share (its weights), e.g. across App executions; loaded from the
            config when None
    """

    def __init__(self, config: Florence2ModelConfig, runner: Any = None):
        fom.SamplesMixin.__init__(self)
        self.config = config
        self.runner = runner if runner is not None else load_runner(config)
        self.failures: dict[str, str] = {}
        self._preprocess = True

    @property
    def needs_fields(self) -> dict[str, str]:
        """The fields read from each sample: the prompt and regions fields, if any.

        ``apply_model(..., prompt_field="x")`` or ``regions_field="x"`` also
        work, as FiftyOne passes such keywords here.
        """
        fields = {"prompt_field": self.config.prompt_field, "regions_field": self.config.regions_field}
        fields.update(self._fields)
        return {key: name for key, name in fields.items() if name}

    @needs_fields.setter
    def needs_fields(self, fields: dict[str, str] | None) -> None:
        self._fields = dict(fields or {})

    @property
    def media_type(self) -> str:
        return "image"

    @property
    def ragged_batches(self) -> bool:
        return False

    @property
    def transforms(self):
        return None  # images are preprocessed inside predict_all

    @property
    def preprocess(self) -> bool:
        return self._preprocess

    @preprocess.setter
    def preprocess(self, value: bool) -> None:
        self._preprocess = value

    def predict(self, arg: Any, sample: Any = None) -> Any:
        return self.predict_all([arg], samples=None if sample is None else [sample])[0]

    def predict_all(self, args: Iterable[Any], samples: Iterable[Any] | None = None) -> list[Any]:
        """Labels a batch; a sample that fails gets ``None`` and a reason in :attr:`failures`."""
        args = list(args)
        samples = [None] * len(args) if samples is None else list(samples)
        items = [self._item(arg, sample) for arg, sample in zip(args, samples)]
        return self.predict_items(items)

    def _item(self, arg: Any, sample: Any) -> Item:
        if isinstance(arg, Item):
            if sample is None or arg.sample_id == sample.id:
                return arg
            # FiftyOne's data loader (ids snapshotted) and its cursor (re-queried)
            # disagree: the label goes to the cursor's sample, so read that one.
            logger.warning("Image of sample %s arrived for sample %s; reading the latter", arg.sample_id, sample.id)
            arg = sample.filepath
        item = Item(getattr(sample, "id", None))
        if sample is not None:
            fields = self.needs_fields
            item.prompt = _get(sample, fields.get("prompt_field"))
            item.regions = _get(sample, fields.get("regions_field"))
        return load_item(item, arg, self.runner.preprocess, self.runner.image_size)

    def predict_items(self, items: Sequence[Item]) -> list[Any]:
        """Labels loaded items: one label (or dict of labels per task) per item, ``None`` on failure.

        Failures are logged and kept in :attr:`failures` (sample id: reason).
        """
        outputs = []
        for item, (output, reason) in zip(items, self.label_items(items)):
            if reason is not None:
                key = item.sample_id or f"image {len(self.failures)}"
                self.failures[key] = reason
                logger.warning("Sample %s not fully labelled: %s", key, reason)
            outputs.append(output)
        return outputs

    def label_items(self, items: Sequence[Item]) -> list[tuple[Any, str | None]]:
        """Each item's output (a label, a dict of labels per task, or ``None``) and failure reason."""
        reasons: list[list[str]] = [[] if item.error is None else [item.error] for item in items]
        labels: list[dict[str, fol.Label]] = [{} for _ in items]
        ready = [i for i, item in enumerate(items) if item.error is None]
        features, ready = self._features(items, ready, reasons)
        for task in self.config.tasks:
            requests: dict[int, list[Request]] = {}
            for row, i in enumerate(ready):
                try:
                    requests[i] = self._requests(task, items[i], row)
                except ValueError as e:
                    reasons[i].append(f"{task.name}: {e}")
            flat = [r for rs in requests.values() for r in rs]
            generations = iter(self._generate(task, features, flat))
            for i, mine in requests.items():
                answers = [(r, next(generations)) for r in mine]
                errors = [g for _, g in answers if isinstance(g, Exception)]
                if errors:
                    reasons[i].append(f"{task.name}: generation failed ({errors[0]})")
                    continue
                results = [Result(g, r.prompt, r.region) for r, g in answers]
                label = build_label(task, results, masks=self.config.masks, image_wh=items[i].image_wh)
                labels[i][task.name] = self._threshold(label)
        return [self._output(item, label, reason) for item, label, reason in zip(items, labels, reasons)]

    def _features(self, items: Sequence[Item], ready: list[int], reasons: list[list[str]]):
        """Vision features of the ready items; an image that breaks the batch is found and left out."""
        if not ready:
            return None, []
        try:
            return self.runner.image_features([items[i].pixel_values for i in ready]), ready
        except Exception as e:
            if not self.config.skip_failures:
                raise
            if len(ready) == 1:
                reasons[ready[0]].append(f"vision encoder failed ({e})")
                return None, []
        parts = [(self._features(items, [i], reasons), i) for i in ready]
        kept = [(features, i) for (features, ok), i in parts if ok]
        if not kept:
            return None, []
        return self.runner.concat_features([f for f, _ in kept]), [i for _, i in kept]

    def _requests(self, task: Task, item: Item, row: int) -> list[Request]:
        if task.input == "none":
            return [Request(row, build_question(task))]
        if task.input == "text":
            texts = self._texts(item)
            if not texts:
                raise ValueError(f"no prompt in field {self.config.prompt_field!r}")
            return [Request(row, build_question(task, text=t), prompt=check_prompt(t)) for t in texts]
        regions = item.regions
        if regions is None:
            return []
        if not isinstance(regions, fol.Detections):
            raise ValueError(
                f"regions field {self.config.regions_field!r} holds {type(regions).__name__}, not Detections"
            )
        requests = []
        for detection in regions.detections:
            try:
                requests.append(Request(row, build_question(task, rel_xywh=detection.bounding_box), region=detection))
            except (ValueError, TypeError) as e:
                logger.warning("Sample %s: region %s skipped (%s)", item.sample_id, detection.id, e)
        return requests

    def _texts(self, item: Item) -> list[str]:
        if self.config.prompt is not None:
            return [self.config.prompt]
        if self.config.classes is not None:
            return list(self.config.classes)
        return texts_from_value(item.prompt)

    def _generate(self, task: Task, features, requests: list[Request]) -> list[Any]:
        """Generations (or the exception that stopped them) in chunks of ``batch_size``."""
        out: list[Any] = []
        size = self.config.batch_size
        for lo in range(0, len(requests), size):
            out.extend(self._generate_chunk(task, features, requests[lo : lo + size]))
        return out

    def _generate_chunk(self, task: Task, features, chunk: list[Request]) -> list[Any]:
        try:
            return self.runner.generate(
                task,
                features,
                [r.question for r in chunk],
                [r.row for r in chunk],
                num_beams=self.config.num_beams,
                max_new_tokens=self.config.max_new_tokens,
                generate_kwargs=self.config.generate_kwargs,
                scores=self.config.scores,
            )
        except Exception as e:
            if not self.config.skip_failures:
                raise
            if len(chunk) == 1:
                return [e]
            half = len(chunk) // 2
            return self._generate_chunk(task, features, chunk[:half]) + self._generate_chunk(
                task, features, chunk[half:]
            )

    def _threshold(self, label: fol.Label) -> fol.Label:
        thresh = self.config.confidence_thresh
        if thresh is None:
            return label
        if isinstance(label, (fol.Detections, fol.Polylines)):
            name = label._LABEL_LIST_FIELD
            kept = [x for x in label[name] if x.confidence is not None and x.confidence >= thresh]
            label[name] = kept
            return label
        if label.confidence is None or label.confidence < thresh:
            return fol.Classification()
        return label

    def _output(self, item: Item, labels: dict[str, fol.Label], reasons: list[str]) -> tuple[Any, str | None]:
        reason = "; ".join(reasons) if reasons else None
        if reason is not None and not self.config.skip_failures:
            raise Florence2Error(item.sample_id, reason)
        if not labels:
            return None, reason
        if self.config.multitask:
            return labels, reason
        return labels[self.config.tasks[0].name], reason


def load_runner(config: Florence2ModelConfig):
    """Loads the weights a config names (torch and transformers are imported here, not before)."""
    from .runner import Florence2Runner

    return Florence2Runner(
        config.model,
        revision=config.revision,
        device=config.device,
        dtype=config.dtype,
        attn_implementation=config.attn_implementation,
    )


def load_model(
    task: str | Sequence[str] = "caption", model: str = DEFAULT_CHECKPOINT, **options: Any
) -> Florence2Model:
    """Returns a FiftyOne model that runs Florence-2 ``task`` (or several tasks).

    See :class:`Florence2ModelConfig` for the options: ``prompt``,
    ``prompt_field``, ``classes``, ``regions_field``, ``masks``,
    ``batch_size``, ``num_beams``, ``max_new_tokens``, ``device``, ``dtype``,
    ``confidence_thresh``, ``scores``, ``skip_failures`` and more.

    With torchvision installed, ``apply_model`` then reads and preprocesses
    images in FiftyOne's data-loader workers, and an unreadable file fails
    only its own sample; without it, FiftyOne reads the images itself and an
    unreadable file skips its whole batch.

    Example::

        model = fiftyone_florence2.load_model("detection")
        dataset.apply_model(model, label_field="florence2", batch_size=8)
    """
    config = Florence2ModelConfig({"task": task, "model": model, **options})
    if data_loader_available():
        from .loader import Florence2LoaderModel

        return Florence2LoaderModel(config)
    return Florence2Model(config)


def data_loader_available() -> bool:
    """Whether FiftyOne's data loader (``fiftyone.utils.torch``, which needs torchvision) imports here."""
    try:
        import fiftyone.utils.torch  # noqa: F401
    except Exception:  # ImportError, or FiftyOne's own requirement error
        return False
    return True
