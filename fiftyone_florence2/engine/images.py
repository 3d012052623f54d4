"""Image files to upright RGB PIL images, with a reason for every failure.

Uses PIL and numpy only. PIL decodes a PNG (or anything but a JPEG in draft
mode) at full size, so a large image is shrunk by a whole factor straight from
that decode, without full-size copies, and the decode is freed at once. Large
decodes take turns, so a process holds at most one of them at a time.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat
import threading
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from fiftyone_florence2.core.errors import ImageLoadError

# EXIF orientation -> the transpose that makes the stored pixels upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_TRANSPOSED = {5, 6, 7, 8}  # orientations that swap width and height
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
_REDUCIBLE = ("L", "RGB")  # modes where Image.reduce, then to_rgb, is to_rgb, then Image.reduce

# PIL keeps at most 4 bytes a pixel (RGB too). Decodes above this take turns:
# 4 loader threads then hold one large decode and at most three of 64 MiB, while
# photos (a 12-megapixel PNG; any JPEG, which draft mode shrinks) decode in parallel.
LARGE_DECODE_BYTES = 64 << 20
_LARGE_DECODE = threading.Lock()
BAND_PIXELS = 1 << 21  # pixels converted at a time where a mode must be converted before reducing

try:  # glibc keeps memory freed by a thread in that thread's arena; this hands it back to the OS
    _malloc_trim = ctypes.CDLL(None).malloc_trim
    _malloc_trim.argtypes = [ctypes.c_size_t]
except (AttributeError, OSError):  # not glibc: nothing to do
    _malloc_trim = None

_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in after the stat check cannot block the open
_SPECIAL = (
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


@dataclass(frozen=True)
class LoadedImage:
    """An upright RGB image and the size the App shows it at (its full, upright size)."""

    image: Image.Image
    width: int
    height: int


def orientation(img: Image.Image) -> int:
    """The EXIF orientation of ``img``: 1 (upright) when absent or unreadable."""
    try:
        return int(img.getexif().get(0x0112) or 1)
    except Exception:  # corrupt EXIF must not make a readable image fail
        return 1


def upright_wh(img: Image.Image) -> tuple[int, int]:
    """The ``(width, height)`` of ``img`` once its EXIF orientation is applied."""
    width, height = img.size
    return (height, width) if orientation(img) in _TRANSPOSED else (width, height)


def to_rgb(img: Image.Image, peak: float | None = None) -> Image.Image:
    """Converts any PIL mode to 8-bit RGB; transparency is composited on white.

    16- and 32-bit values are divided by 257 when ``peak`` (default: the
    image's own maximum) is over 255.
    """
    if img.mode in _WIDE_MODES:
        array = np.asarray(img, dtype=np.float64)
        peak = array.max(initial=0) if peak is None else peak
        img = Image.fromarray(np.clip(array / (257.0 if peak > 255 else 1.0), 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def reduce_factor(size: tuple[int, int], wh: tuple[int, int] | None) -> int:
    """The largest whole factor that keeps ``size`` at least ``wh`` in both sides (1 for no ``wh``)."""
    if not wh:
        return 1
    return max(1, min(size[0] // max(1, wh[0]), size[1] // max(1, wh[1])))


def shrink_toward(img: Image.Image, wh: tuple[int, int] | None) -> Image.Image:
    """Shrinks ``img`` by a whole factor while it stays at least ``wh``: cheap, and the model's
    own resize to ``wh`` then starts from far fewer pixels."""
    factor = reduce_factor(img.size, wh)
    return img.reduce(factor) if factor >= 2 else img


def _reducible(band: Image.Image, peak: float | None) -> Image.Image:
    """``band`` in a mode that ``Image.reduce`` averages as ``to_rgb`` would have it."""
    if band.mode == "RGBA":
        return band.convert("RGBa")  # premultiplied, as compositing on white then averaging
    if band.mode.startswith("I;16"):
        return band.convert("I")  # at most 65535: dividing by 257 after averaging clips nothing
    return to_rgb(band, peak)


def reduced_rgb(img: Image.Image, factor: int) -> Image.Image:
    """``to_rgb(img).reduce(factor)`` (up to rounding) with no full-size copy: a mode that
    ``Image.reduce`` cannot average as it is goes through it a band of rows at a time."""
    if factor < 2:
        return to_rgb(img)
    peak = img.getextrema()[1] if img.mode in _WIDE_MODES else None  # of the whole image, not a band
    if img.mode in _REDUCIBLE:
        return to_rgb(img.reduce(factor), peak)
    rows = max(1, BAND_PIXELS // max(1, img.width * factor)) * factor
    out: Image.Image | None = None
    for top in range(0, img.height, rows):
        band = _reducible(img.crop((0, top, img.width, min(img.height, top + rows))), peak).reduce(factor)
        if out is None:
            out = Image.new(band.mode, (band.width, -(-img.height // factor)))
        out.paste(band, (0, top // factor))
    return to_rgb(out, peak)


def _decode(img: Image.Image, draft_wh: tuple[int, int] | None) -> LoadedImage:
    """Decodes an opened image upright, shrunk toward ``draft_wh``; frees the full-size decode."""
    width, height = img.size
    if draft_wh and img.format == "JPEG":
        side = max(draft_wh)  # no smaller than draft_wh whichever way the EXIF turns it
        img.draft("RGB", (side, side))
    large = img.width * img.height * 4 > LARGE_DECODE_BYTES
    with _LARGE_DECODE if large else contextlib.nullcontext():
        try:
            turn = orientation(img)  # a PNG whose EXIF follows its pixels decodes here
            raw_wh = draft_wh and (draft_wh[::-1] if turn in _TRANSPOSED else draft_wh)
            img.load()
            rgb = reduced_rgb(img, reduce_factor(img.size, raw_wh))
        finally:
            img.close()  # frees the decoded pixels before the next large decode starts
            if large and _malloc_trim:
                _malloc_trim(0)
    if turn in _UPRIGHT:
        rgb = rgb.transpose(_UPRIGHT[turn])
    return LoadedImage(rgb, *((height, width) if turn in _TRANSPOSED else (width, height)))


def _check_file(path: str, info: os.stat_result) -> None:
    """Raises the reason a directory, FIFO, socket, device or empty file is no image."""
    if stat.S_ISDIR(info.st_mode):
        raise ImageLoadError(f"is a directory, not an image file: {path}")
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _SPECIAL if test(info.st_mode)), "special file")
        raise ImageLoadError(f"not a regular file ({kind}): {path}")
    if info.st_size == 0:
        raise ImageLoadError(f"empty file (0 bytes): {path}")


def load_rgb(path: str, draft_wh: tuple[int, int] | None = None) -> LoadedImage:
    """Reads an image file upright (EXIF orientation applied) as RGB.

    Args:
        path: the image file
        draft_wh (None): a size the image will be shrunk to anyway; JPEGs are
            then decoded at a reduced scale no smaller than it, and other
            images shrunk by a whole factor straight from their decode, which
            makes very large images fast and light

    Raises:
        ImageLoadError: with the reason, for a missing, empty, truncated or
            unreadable file, a directory, FIFO, socket or device, or an image
            over PIL's decompression-bomb limit (about 179 megapixels)
    """
    if not isinstance(path, str) or not path:
        raise ImageLoadError(f"no image path ({path!r})")
    try:
        _check_file(path, os.stat(path))  # never open anything else: a FIFO's open blocks
        fp = open(path, "rb", opener=lambda name, flags: os.open(name, flags | _NONBLOCK))  # noqa: SIM115
    except FileNotFoundError:
        raise ImageLoadError(f"file not found: {path}") from None
    except OSError as e:
        raise ImageLoadError(f"cannot read the file ({e.strerror or e}): {path}") from None
    try:
        with fp, warnings.catch_warnings():
            _check_file(path, os.fstat(fp.fileno()))  # what was opened, in case the path changed
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                loaded = _decode(img, draft_wh)
    except UnidentifiedImageError:
        raise ImageLoadError(f"not an image file PIL can read: {path}") from None
    except Image.DecompressionBombError as e:
        raise ImageLoadError(f"image too large: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        reason = "truncated or corrupt image" if "truncated" in str(e) else "corrupt image"
        raise ImageLoadError(f"{reason} ({e}): {path}") from None
    if loaded.image.width < 1 or loaded.image.height < 1:
        raise ImageLoadError(f"image has no pixels: {path}")
    return loaded
