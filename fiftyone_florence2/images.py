"""Image files to upright RGB PIL images, with a reason for every failure.

Uses PIL and numpy only.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# EXIF orientations that swap width and height.
_TRANSPOSED = {5, 6, 7, 8}


class ImageLoadError(Exception):
    """An image that cannot be used; ``str(error)`` is the reason a user reads."""


@dataclass(frozen=True)
class LoadedImage:
    """An upright RGB image and the size the App shows it at (its full, upright size)."""

    image: Image.Image
    width: int
    height: int


def upright_wh(img: Image.Image) -> tuple[int, int]:
    """The ``(width, height)`` of ``img`` once its EXIF orientation is applied."""
    width, height = img.size
    try:
        orientation = img.getexif().get(0x0112)
    except Exception:  # corrupt EXIF must not make a readable image fail
        orientation = None
    return (height, width) if orientation in _TRANSPOSED else (width, height)


def to_rgb(img: Image.Image) -> Image.Image:
    """Converts any PIL mode to 8-bit RGB; transparency is composited on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(img, dtype=np.float64)
        scale = 257.0 if array.max(initial=0) > 255 else 1.0
        img = Image.fromarray(np.clip(array / scale, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def shrink_toward(img: Image.Image, wh: tuple[int, int] | None) -> Image.Image:
    """Shrinks ``img`` by a whole factor while it stays at least ``wh``: cheap, and the model's
    own resize to ``wh`` then starts from far fewer pixels."""
    if not wh:
        return img
    factor = min(img.width // max(1, wh[0]), img.height // max(1, wh[1]))
    return img.reduce(factor) if factor >= 2 else img


def load_rgb(path: str, draft_wh: tuple[int, int] | None = None) -> LoadedImage:
    """Reads an image file upright (EXIF orientation applied) as RGB.

    Args:
        path: the image file
        draft_wh (None): a size the image will be shrunk to anyway; JPEGs are
            then decoded at a reduced scale no smaller than it, and other
            images shrunk by a whole factor, which makes very large images
            fast and light

    Raises:
        ImageLoadError: with the reason, for a missing, empty, truncated or
            unreadable file, or one over PIL's decompression-bomb limit
            (about 179 megapixels)
    """
    if not isinstance(path, str) or not path:
        raise ImageLoadError(f"no image path ({path!r})")
    if not os.path.exists(path):
        raise ImageLoadError(f"file not found: {path}")
    if os.path.getsize(path) == 0:
        raise ImageLoadError(f"empty file (0 bytes): {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = upright_wh(img)
                if draft_wh and img.format == "JPEG":
                    img.draft("RGB", draft_wh)
                img.load()
                upright = ImageOps.exif_transpose(img) or img
                rgb = shrink_toward(to_rgb(upright), draft_wh)
    except UnidentifiedImageError:
        raise ImageLoadError(f"not an image file PIL can read: {path}") from None
    except Image.DecompressionBombError as e:
        raise ImageLoadError(f"image too large: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        reason = "truncated or corrupt image" if "truncated" in str(e) else "corrupt image"
        raise ImageLoadError(f"{reason} ({e}): {path}") from None
    if rgb.width < 1 or rgb.height < 1:
        raise ImageLoadError(f"image has no pixels: {path}")
    return LoadedImage(rgb, width, height)
