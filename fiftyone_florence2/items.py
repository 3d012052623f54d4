"""One sample's image and inputs, loaded for labelling: the unit the data loader and the batches pass on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .images import ImageLoadError, load_rgb, shrink_toward, to_rgb


@dataclass
class Item:
    """One loaded image with what its sample provides; ``error`` says why it is unusable.

    ``tasks``, when set, names the only tasks to run for this item (the others'
    fields are already filled and must stay as they are).
    """

    sample_id: str | None
    pixel_values: Any = None
    image_wh: tuple[int, int] | None = None
    prompt: Any = None
    regions: Any = None
    error: str | None = None
    tasks: frozenset[str] | None = None


class ImagePreprocessor:
    """Turns an RGB PIL image into Florence-2 pixel values; safe to send to data-loader workers."""

    def __init__(self, image_processor: Any):
        self.image_processor = image_processor

    def __call__(self, image: Image.Image) -> Any:
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]


def load_item(item: Item, image: Any, preprocess, draft_wh=None) -> Item:
    """Fills ``item`` with the pixel values of ``image`` (a path, PIL image or HWC array); never raises."""
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
