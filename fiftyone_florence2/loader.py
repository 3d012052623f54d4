"""``apply_model`` through FiftyOne's data loader: images read in worker processes, per-image failures.

FiftyOne's data loader lives in ``fiftyone.utils.torch``, which needs
torchvision; :func:`fiftyone_florence2.load_model` uses this module only when
it imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import fiftyone.core.models as fom
import fiftyone.utils.torch as fout

from .model import Florence2Model, Item, load_item


class Florence2GetItem(fout.GetItem):
    """Reads one sample's image upright and preprocessed, with its id and inputs; never raises.

    A file that cannot be read becomes an :class:`Item` with an error, so
    FiftyOne's collate step never sees an exception and the other images of
    the batch are labelled.
    """

    def __init__(self, preprocess: Any, draft_wh: tuple[int, int], input_keys: Sequence[str], field_mapping=None):
        self.preprocess = preprocess
        self.draft_wh = draft_wh
        self.input_keys = list(input_keys)
        super().__init__(field_mapping=field_mapping)

    @property
    def required_keys(self) -> list[str]:
        return ["id", "filepath", *self.input_keys]

    def __call__(self, d: dict) -> Item:
        item = Item(d.get("id"), prompt=d.get("prompt_field"), regions=d.get("regions_field"))
        return load_item(item, d.get("filepath"), self.preprocess, self.draft_wh)


class Florence2LoaderModel(Florence2Model, fom.SupportsGetItem, fom.TorchModelMixin):
    """A :class:`Florence2Model` that ``apply_model`` feeds through FiftyOne's data loader."""

    @property
    def has_collate_fn(self) -> bool:
        return True

    @staticmethod
    def collate_fn(batch: list) -> list:
        return list(batch)

    @property
    def _using_gpu(self) -> bool:
        return self.runner.device.type == "cuda"

    def build_get_item(self, field_mapping: dict | None = None) -> Florence2GetItem:
        inputs = self.needs_fields
        return Florence2GetItem(
            self.runner.preprocess,
            self.runner.image_size,
            list(inputs),
            field_mapping={**inputs, **(field_mapping or {})},
        )
