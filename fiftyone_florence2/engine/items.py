"""One sample's image and inputs, loaded for labelling: the unit the data loader and the batches pass on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from fiftyone_florence2.core.crops import XYWH, crop_decode_wh, crop_pixels, crop_xywh, labels_of
from fiftyone_florence2.core.tiling import XYXY, Tiling, decode_wh, pixel_box_to_rel, tile_pixel_boxes
from fiftyone_florence2.engine.images import ImageLoadError, load_rgb, shrink_toward, to_rgb


@dataclass
class Item:
    """One loaded image with what its sample provides; ``error`` says why it is unusable.

    ``tasks``, when set, names the only tasks to run for this item (the others'
    fields are already filled and must stay as they are). A tiled item has
    ``tile_pixels``, one per box of ``tiles`` (relative to the whole image),
    and ``pixel_values`` only when some task reads the whole image. A patch of
    a patches view has ``crop``, its box relative to the source image: the
    image is that crop, and ``image_wh`` its size.
    """

    sample_id: str | None
    pixel_values: Any = None
    image_wh: tuple[int, int] | None = None
    prompt: Any = None
    regions: Any = None
    error: str | None = None
    tasks: frozenset[str] | None = None
    tile_pixels: list[Any] | None = None
    tiles: tuple[XYXY, ...] = ()
    crop: XYWH | None = None

    @property
    def views(self) -> list[Any]:
        """The pixel values the vision pass reads, one feature row each: the whole image (if read), then
        the tiles."""
        if not self.tiles:
            return [self.pixel_values]
        whole = [] if self.pixel_values is None else [self.pixel_values]
        return whole + list(self.tile_pixels or [])


class ImagePreprocessor:
    """Turns an RGB PIL image into Florence-2 pixel values; safe to send to data-loader workers."""

    def __init__(self, image_processor: Any):
        self.image_processor = image_processor

    def __call__(self, image: Image.Image) -> Any:
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]


def load_item(item: Item, image: Any, preprocess, draft_wh=None, tiling: Tiling | None = None) -> Item:
    """Fills ``item`` with the pixel values of ``image`` (a path, PIL image or HWC array), or of its tiles
    (of its crop, for a patch); never raises. An item that already has an error is left as it is."""
    if item.error is not None:
        return item
    if tiling is not None and draft_wh:
        # Decoded once, no smaller than each tile needs.
        draft_wh = decode_wh(draft_wh, tiling.grid, tiling.overlap)
    try:
        if isinstance(image, str):
            loaded = load_rgb(image, crop_decode_wh(draft_wh, item.crop) if item.crop else draft_wh)
            pil, item.image_wh = loaded.image, (loaded.width, loaded.height)
        else:
            pil = to_rgb(image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image)))
            item.image_wh = pil.size
        if item.crop is not None:
            left, top, right, bottom = crop_pixels(item.crop, item.image_wh)
            item.image_wh = (right - left, bottom - top)  # the crop's size at full resolution
            pil = pil.crop(crop_pixels(item.crop, pil.size))
        if not isinstance(image, str) or item.crop is not None:
            pil = shrink_toward(pil, draft_wh)
        if tiling is None:
            item.pixel_values = preprocess(pil)
        else:
            _load_tiles(item, pil, preprocess, tiling)
    except ImageLoadError as e:
        item.error = str(e)
    except Exception as e:  # a worker must hand every failure back, not raise
        item.error = f"could not load the image ({type(e).__name__}: {e})"
    return item


def _load_tiles(item: Item, pil: Image.Image, preprocess, tiling: Tiling) -> None:
    """Each tile's pixel values, one crop at a time (so one crop's copy is alive at once), and the whole
    image's when some task reads it."""
    boxes = tile_pixel_boxes(pil.size, tiling.grid, tiling.overlap)
    item.tile_pixels = [preprocess(pil.crop(box)) for box in boxes]
    item.tiles = tuple(pixel_box_to_rel(box, pil.size) for box in boxes)
    if tiling.whole:
        item.pixel_values = preprocess(pil)


def set_crop(item: Item, patch_values: list[Any]) -> Item:
    """Makes ``item`` the patch whose labels are ``patch_values`` (one value per patch field), or gives it
    the reason it has no crop."""
    try:
        item.crop = crop_xywh([label for value in patch_values for label in labels_of(value)])
    except ValueError as e:
        item.error = str(e)
    return item
