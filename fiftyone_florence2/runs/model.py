"""The FiftyOne ``Model`` for ``apply_model``: images through FiftyOne's data loader, per-image failures.

``apply_model`` reads and preprocesses each image in the data loader's
workers (:class:`Florence2GetItem`), so an unreadable file becomes a reason
for its own sample and never skips the rest of its batch. The vision features
of a batch are computed once and shared by every task, prompt and region.

The model also gives embeddings (``compute_embeddings``,
``compute_patch_embeddings``, ``fiftyone.brain``): an image's embedding is the
mean of its projected vision features, L2-normalised (``docs/REFERENCE.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import fiftyone.core.models as fom
import fiftyone.utils.torch as fout
import numpy as np

from fiftyone_florence2.core.checkpoints import DEFAULT_CHECKPOINT
from fiftyone_florence2.core.prompts import build_question
from fiftyone_florence2.core.tasks import DEFAULT_TASK
from fiftyone_florence2.core.tiling import Tiling
from fiftyone_florence2.engine.items import Item, load_item, set_crop
from fiftyone_florence2.runs.batching import Outcome, label_items
from fiftyone_florence2.runs.config import Florence2ModelConfig
from fiftyone_florence2.runs.patches import to_source_frame

logger = logging.getLogger(__name__)

__all__ = ["Florence2GetItem", "Florence2Model", "Florence2ModelConfig", "load_model"]


class Florence2GetItem(fout.GetItem):
    """Reads one sample's image upright and preprocessed, with its id and inputs; never raises.

    A file that cannot be read becomes an :class:`~fiftyone_florence2.engine.items.Item`
    with an error, so FiftyOne's collate step never sees an exception and the
    other images of the batch are labelled.
    """

    def __init__(
        self,
        preprocess: Any,
        draft_wh: tuple[int, int],
        input_keys: Sequence[str],
        field_mapping=None,
        tiling: Tiling | None = None,
    ):
        self.preprocess = preprocess
        self.draft_wh = draft_wh
        self.input_keys = list(input_keys)
        self.tiling = tiling
        super().__init__(field_mapping=field_mapping)

    @property
    def required_keys(self) -> list[str]:
        return ["id", "filepath", *self.input_keys]

    def __call__(self, d: dict) -> Item:
        item = Item(d.get("id"), prompt=d.get("prompt_field"), regions=d.get("regions_field"))
        if "patches_field" in self.input_keys:
            set_crop(item, [d.get("patches_field")])
        return load_item(item, d.get("filepath"), self.preprocess, self.draft_wh, self.tiling)


class Florence2Model(fom.Model, fom.SamplesMixin, fom.SupportsGetItem, fom.TorchModelMixin, fom.EmbeddingsMixin):
    """Florence-2 as a FiftyOne model, for ``dataset.apply_model(model, label_field=...)`` and
    ``dataset.compute_embeddings(model)``.

    Args:
        config: a :class:`~fiftyone_florence2.runs.config.Florence2ModelConfig`
        runner (None): an already loaded :class:`~fiftyone_florence2.engine.runner.Florence2Runner`
            to share (its weights), e.g. across App executions; loaded from the
            config when None
    """

    def __init__(self, config: Florence2ModelConfig, runner: Any = None):
        fom.SamplesMixin.__init__(self)
        self.config = config
        self.runner = runner if runner is not None else load_runner(config)
        self.failures: dict[str, str] = {}
        self.skips: dict[str, str] = {}
        self._fields: dict[str, str] = {}
        self._preprocess = True
        self._embeddings: np.ndarray | None = None
        self._generated_views: dict[int, tuple[Any, set[str]]] = {}
        check_fixed_prompts(config, self.runner)

    def __exit__(self, *args: Any) -> None:
        """Syncs the patches and frames ``apply_model`` labelled to their source once more, after FiftyOne's
        last write.

        ``apply_model`` saves through FiftyOne's data-loader route with
        asynchronous writes: each background save writes the queued labels,
        then takes the ids to sync to the source. A sample saved in between
        is synced before its label is written, and never again, so its label
        stays on the generated view only (FiftyOne 1.x ``SaveContext``).
        """
        views, self._generated_views = self._generated_views, {}
        for view, ids in views.values():
            view._sync_source(ids=sorted(ids))
        super().__exit__(*args)

    @property
    def needs_fields(self) -> dict[str, str]:
        """The fields read from each sample: the prompt and regions fields, if any.

        ``apply_model(..., prompt_field="x")`` or ``regions_field="x"`` also
        work, as FiftyOne passes such keywords here; so does ``patches_field``,
        which makes each sample of a patches view its crop (``docs/REFERENCE.md``).
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
        """Florence-2's preprocessing of one PIL image. FiftyOne's patch loader
        (``compute_patch_embeddings``) applies it to each patch; whole images are read by
        :class:`Florence2GetItem`, or in :meth:`predict_all`."""
        return self.runner.preprocess

    @property
    def preprocess(self) -> bool:
        return self._preprocess

    @preprocess.setter
    def preprocess(self, value: bool) -> None:
        self._preprocess = value

    @property
    def has_collate_fn(self) -> bool:
        return True

    @staticmethod
    def collate_fn(batch: list) -> list:
        return list(batch)

    @property
    def _using_gpu(self) -> bool:
        return getattr(getattr(self.runner, "device", None), "type", None) == "cuda"

    def build_get_item(self, field_mapping: dict | None = None) -> Florence2GetItem:
        inputs = self.needs_fields
        return Florence2GetItem(
            self.runner.preprocess,
            self.runner.image_size,
            list(inputs),
            field_mapping={**inputs, **(field_mapping or {})},
            tiling=self.config.tiling,
        )

    def predict(self, arg: Any, sample: Any = None) -> Any:
        return self.predict_all([arg], samples=None if sample is None else [sample])[0]

    def predict_all(self, args: Iterable[Any], samples: Iterable[Any] | None = None) -> list[Any]:
        """Labels a batch; a sample that fails gets ``None`` and a reason in :attr:`failures`."""
        args = list(args)
        samples = [None] * len(args) if samples is None else list(samples)
        if "patches_field" not in self.needs_fields and any(_is_patch(sample) for sample in samples):
            field = samples[0]._view._label_fields[0]
            raise ValueError(
                "A patches view is labelled crop by crop, its labels written on the patches' own labels: call "
                f'apply_model(model, label_field="{field}.<name>", patches_field="{field}"), or label_samples().'
            )
        for sample in samples:
            view = _synced_view(sample)
            if view is not None:  # see __exit__
                self._generated_views.setdefault(id(view._dataset), (view, set()))[1].add(sample.id)
        return self.predict_items([self._item(arg, sample) for arg, sample in zip(args, samples)])

    def _item(self, arg: Any, sample: Any) -> Item:
        if not isinstance(arg, (Item, str)) and not self._preprocess and sample is None:
            return Item(None, pixel_values=arg)  # already through self.transforms (a patch)
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
            if "patches_field" in fields:
                set_crop(item, [_get(sample, fields["patches_field"])])
        return load_item(item, arg, self.runner.preprocess, self.runner.image_size, self.config.tiling)

    def predict_items(self, items: Sequence[Item]) -> list[Any]:
        """Labels loaded items: one label (or dict of labels per task) per item, ``None`` when none.

        Failures are logged and kept in :attr:`failures`, and samples that gave
        a task nothing to read (no regions) in :attr:`skips` (sample id: reason).
        """
        outputs = []
        for item, outcome in zip(items, self.label_items(items)):
            key = item.sample_id or f"image {len(self.failures) + len(self.skips)}"
            if outcome.failed:
                self.failures[key] = outcome.reason
                logger.warning("Sample %s not fully labelled: %s", key, outcome.reason)
            elif outcome.skipped and not outcome.labels:
                self.skips[key] = outcome.reason
            outputs.append(self.output(outcome.labels))
        return outputs

    def label_items(self, items: Sequence[Item], embed: bool = False) -> list[Outcome]:
        """Each item's labels per task, and why any task failed or was skipped; with ``embed``, each
        encoded image's embedding too, from the same vision pass. A patch's labels come back in its source
        image's frame."""
        outcomes = label_items(self.config, self.runner, items, embed=embed)
        for item, outcome in zip(items, outcomes):
            if item.crop is not None:
                outcome.labels = {task: to_source_frame(label, item.crop) for task, label in outcome.labels.items()}
        return outcomes

    @property
    def has_embeddings(self) -> bool:
        return True

    @property
    def can_embed_prompts(self) -> bool:
        """False: Florence-2 puts no text in its image embeddings' space, so a similarity index built
        with it answers image queries (sample ids, vectors), not text."""
        return False

    @property
    def embedding_dim(self) -> int:
        """An embedding's length: the checkpoint's vision projection (768 for base, 1024 for large)."""
        return self.runner.embedding_dim

    def get_embeddings(self) -> np.ndarray:
        """The embeddings of the last :meth:`embed` or :meth:`embed_all` call."""
        if self._embeddings is None:
            raise ValueError("No embeddings computed yet: call embed() or embed_all() first.")
        return self._embeddings

    def embed(self, arg: Any) -> np.ndarray:
        """One image's embedding (see :meth:`embed_all`)."""
        return self.embed_all([arg])[0]

    def embed_all(self, args: Iterable[Any]) -> np.ndarray:
        """Embeddings of a batch of images, ``(N, embedding_dim)`` float32: each image's projected
        vision features (what labelling computes), mean-pooled over its image tokens and L2-normalised.

        Raises ``ValueError`` naming each image that could not be read or encoded (also kept in
        :attr:`failures`); FiftyOne's ``compute_embeddings`` then leaves that batch without vectors.
        """
        items = [self._item(arg, None) for arg in args]
        for item in items:
            item.tasks = frozenset()  # the vision pass alone: no task generates
        outcomes = self.label_items(items, embed=True)
        failed = {item.sample_id or f"image {k}": o.reason for k, (item, o) in enumerate(zip(items, outcomes))
                  if o.embedding is None}  # fmt: skip
        if failed:
            self.failures.update(failed)
            reasons = "; ".join(f"{key}: {reason}" for key, reason in failed.items())
            raise ValueError(f"Could not embed {len(failed)} of {len(items)} image(s): {reasons}")
        vectors = [o.embedding for o in outcomes]
        self._embeddings = np.stack(vectors) if vectors else np.empty((0, self.embedding_dim), np.float32)
        return self._embeddings

    def output(self, labels: dict[str, Any]) -> Any:
        """What ``apply_model`` stores: the task's label, a dict of labels per task, or ``None``."""
        if not labels:
            return None
        return labels if self.config.multitask else labels.get(self.config.tasks[0].name)


def _is_patch(sample: Any) -> bool:
    return bool(getattr(getattr(sample, "_view", None), "_is_patches", False))


def _synced_view(sample: Any) -> Any:
    """The patches or frames view a sample belongs to (FiftyOne syncs its labels to the source), else None."""
    view = getattr(sample, "_view", None)
    return view if getattr(view, "_is_patches", False) or getattr(view, "_is_frames", False) else None


def _get(sample: Any, field: str | None) -> Any:
    if not field:
        return None
    try:
        return sample.get_field(field)
    except (AttributeError, KeyError):
        return None


def check_fixed_prompts(config: Florence2ModelConfig, runner: Any) -> None:
    """Refuses a prompt or class that cannot fit in the text encoder, before any sample is read."""
    texts = [config.prompt] if config.prompt is not None else list(config.classes or [])
    for task in config.tasks:
        if task.input != "text":
            continue
        for text in texts:
            try:
                runner.check_question(build_question(task, text=text))
            except ValueError as e:
                raise ValueError(f"{task.name}: {e}") from None


def load_runner(config: Florence2ModelConfig):
    """Loads the weights a config names (torch and transformers are imported here, not before)."""
    from fiftyone_florence2.engine.runner import Florence2Runner

    return Florence2Runner(
        config.model,
        revision=config.revision,
        device=config.device,
        dtype=config.dtype,
        attn_implementation=config.attn_implementation,
    )


def load_model(
    task: str | Sequence[str] = DEFAULT_TASK, model: str = DEFAULT_CHECKPOINT, **options: Any
) -> Florence2Model:
    """Returns a FiftyOne model that runs Florence-2 ``task`` (or several tasks).

    The options are those of ``docs/OPTIONS.md`` (``prompt``, ``prompt_field``,
    ``classes``, ``regions_field``, ``masks``, ``batch_size``, ``num_beams``,
    ``max_new_tokens``, ``device``, ``dtype``, ``confidence_thresh``, ``tiles``,
    ``tile_overlap``, ``nms_iou``, ...).
    Bad options raise ``ValueError`` before any weights load.

    Example::

        model = fiftyone_florence2.load_model("detection")
        dataset.apply_model(model, label_field="florence2", batch_size=8)
    """
    return Florence2Model(Florence2ModelConfig({"task": task, "model": model, **options}))
