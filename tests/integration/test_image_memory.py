"""How ``load_rgb`` reads files: light on large images, and at once on paths that are no image file.

Large images are shrunk straight from their decode, freed at once, and decoded
one at a time; the memory test runs in a subprocess, so its peak RSS is its
own, and the tests after it check that the light path gives the plain path's
pixels. A directory, FIFO, socket or device gets its own reason, and no open
of a FIFO waits for a writer.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fiftyone_florence2.engine import images
from fiftyone_florence2.engine.images import ImageLoadError, load_rgb, reduced_rgb, to_rgb

SIDE = 12000  # 144 megapixels, under PIL's 179-megapixel bomb limit; 576 MB as decoded RGB
RED, BLUE, GREEN = (250, 20, 20), (40, 120, 200), (20, 250, 20)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _deflate(data: bytes) -> bytes:
    """``data`` as raw deflate blocks ending on a byte with an empty history: copies concatenate."""
    z = zlib.compressobj(1, zlib.DEFLATED, -15)
    return z.compress(data) + z.flush(zlib.Z_FULL_FLUSH)


def flat_png(path: Path, color_type: int, depth: int, top: bytes, bottom: bytes, before=b"", after=b"") -> str:
    """A SIDE x SIDE PNG whose top half repeats the row ``top`` and whose bottom half repeats ``bottom``.

    Repeated rows use PNG's "up" filter, so they are zeros, compressed once and
    copied: about 1 MB, written in well under a second, while a decoder still
    does all the work.
    """
    stream, adler = [b"\x78\x01"], 1
    for row in (top, bottom):  # SIDE / 2 rows each: 1 + 59 * 100 + 99
        up = b"\2" + bytes(len(row))
        for data, copies in ((b"\0" + row, 1), (up * 100, SIDE // 200 - 1), (up * 99, 1)):
            stream.append(_deflate(data) * copies)
            for _ in range(copies):
                adler = zlib.adler32(data, adler)
    stream += [zlib.compressobj(1, zlib.DEFLATED, -15).flush(), struct.pack(">I", adler)]
    header = struct.pack(">IIBBBBB", SIDE, SIDE, depth, color_type, 0, 0, 0)
    idat = _chunk(b"IDAT", b"".join(stream))
    Path(path).write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + before + idat + after + _chunk(b"IEND", b"")
    )
    return str(path)


def _halves(left: bytes, right: bytes) -> bytes:
    return left * (SIDE // 2) + right * (SIDE // 2)


def _exif6() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    return _chunk(b"eXIf", exif.tobytes()[6:])  # without the "Exif\0\0" of JPEG's APP1


@pytest.fixture(scope="module")
def huge_pngs(tmp_path_factory) -> list[str]:
    """Four 12000x12000 PNGs of different modes; red top-left quarter as stored (top-right for the EXIF one)."""
    folder = tmp_path_factory.mktemp("huge_png")
    return [
        # RGB with its EXIF after the pixels: reading the orientation decodes the image.
        flat_png(folder / "rgb.png", 2, 8, _halves(bytes(RED), bytes(BLUE)), bytes(BLUE) * SIDE, after=_exif6()),
        flat_png(
            folder / "rgba.png",
            6,
            8,
            _halves(bytes((*RED, 255)), bytes((*BLUE, 128))),  # half-transparent blue: light blue on white
            bytes((*BLUE, 0)) * SIDE,  # transparent: white
        ),
        flat_png(folder / "gray16.png", 0, 16, _halves(b"\xff\xff", b"\x10\x00"), b"\x80\x00" * SIDE),
        flat_png(
            folder / "palette.png",
            3,
            8,
            _halves(b"\0", b"\1"),
            b"\2" * SIDE,
            before=_chunk(b"PLTE", bytes((*RED, *BLUE, *GREEN))),
        ),
    ]


_MEASURE = r"""
import json, re, resource, sys, warnings
from concurrent.futures import ThreadPoolExecutor
from fiftyone_florence2.engine.images import load_rgb

warnings.simplefilter("ignore")
def status_kib(key):  # VmHWM is this process's own peak; ru_maxrss starts at the parent's
    return int(re.search(key + r":\s+(\d+)", open("/proc/self/status").read()).group(1))
# A regression fails with MemoryError here instead of taking the machine's memory.
resource.setrlimit(resource.RLIMIT_AS, (status_kib("VmSize") * 1024 + (4 << 30), resource.RLIM_INFINITY))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # peak RSS := RSS now
before = status_kib("VmRSS")
with ThreadPoolExecutor(4) as pool:  # as the labeller loads a batch
    loaded = list(pool.map(lambda path: load_rgb(path, (768, 768)), sys.argv[1:]))
grown = status_kib("VmHWM") - before
out = [dict(wh=[x.width, x.height], size=list(x.image.size), mode=x.image.mode,
            corners=[x.image.getpixel(p) for p in [(0, 0), (799, 0), (0, 799), (799, 799)]]) for x in loaded]
print(json.dumps(dict(grown_mib=grown / 1024, loaded=out)))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="measures peak RSS in /proc/self")
def test_four_huge_pngs_loaded_by_four_threads_stay_light_and_upright(huge_pngs):
    # Regression: each 144-megapixel image held its decode, an upright copy and an
    # RGB copy at full size, all four at once: peak RSS grew by about 7 GiB.
    package_root = str(Path(images.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *huge_pngs], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    print(f"peak RSS grew by {result['grown_mib']:.0f} MiB")
    assert result["grown_mib"] < 1536, f"peak RSS grew by {result['grown_mib']:.0f} MiB"

    rgb, rgba, gray16, palette = result["loaded"]
    for loaded in result["loaded"]:
        # Full upright size for the labels; shrunk 15 times, still at least 768.
        assert loaded["wh"] == [SIDE, SIDE] and loaded["size"] == [800, 800] and loaded["mode"] == "RGB"
    # Corners: top-left, top-right, bottom-left, bottom-right of the upright image.
    assert rgb["corners"] == [list(BLUE), list(RED), list(BLUE), list(BLUE)]  # turned by EXIF 6
    light_blue = [round((c * 128 + 255 * 127) / 255) for c in BLUE]
    assert np.abs(np.subtract(rgba["corners"], [RED, light_blue, (255,) * 3, (255,) * 3])).max() <= 2
    assert gray16["corners"] == [[255] * 3, [15] * 3, [127] * 3, [127] * 3]  # 16-bit values / 257
    assert palette["corners"] == [list(RED), list(BLUE), list(GREEN), list(GREEN)]


# ---------------------------------------------------------------- same pixels as the plain path


def _image(mode: str, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(len(mode))
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
    if mode in ("I", "F"):
        return Image.fromarray(rng.integers(0, 70000, size[::-1]).astype(np.int32 if mode == "I" else np.float32))
    rgba = Image.fromarray(rng.integers(0, 255, (*size[::-1], 4), dtype=np.uint8), "RGBA")
    if mode == "P+transparency":
        img = rgba.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        img.info["transparency"] = 3
        return img
    return rgba.convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA", "P", "P+transparency", "1", "CMYK", "I;16", "I", "F"])
def test_reduced_rgb_matches_converting_then_reducing(mode, monkeypatch):
    monkeypatch.setattr(images, "BAND_PIXELS", 500)  # many bands, the last one short
    img = _image(mode, (203, 157))  # not a multiple of the factor either way
    expected = np.asarray(to_rgb(img).reduce(4), dtype=np.int16)
    got = reduced_rgb(img, 4)
    assert got.mode == "RGB" and got.size == (51, 40)
    assert np.abs(np.asarray(got, dtype=np.int16) - expected).max() <= 2  # rounding only


@pytest.mark.parametrize("orientation", [1, 6, 8])
def test_reduce_factor_is_taken_for_the_stored_orientation(orientation, tmp_path):
    """A tall upright image and a wide target: only the stored side that becomes the width limits the factor."""
    upright = np.zeros((1600, 400, 3), np.uint8)  # 400 wide, 1600 high
    upright[:800] = RED
    stored = Image.fromarray(upright)
    if orientation != 1:
        stored = stored.transpose({6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "tall.png"
    stored.save(path, exif=exif)
    loaded = load_rgb(str(path), draft_wh=(200, 100))
    assert (loaded.width, loaded.height) == (400, 1600)
    assert loaded.image.size == (200, 800)  # factor 2: the width allows no more
    assert loaded.image.getpixel((100, 10)) == RED and loaded.image.getpixel((100, 790)) == (0, 0, 0)


def test_only_large_decodes_wait_for_each_other(tmp_path, monkeypatch):
    small = tmp_path / "small.png"
    Image.new("RGB", (64, 48), RED).save(small)
    results: list[object] = []

    def load() -> None:
        results.append(load_rgb(str(small), (32, 32)))

    with images._LARGE_DECODE:  # another thread is decoding a large image
        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        worker.join(timeout=5)
        assert not worker.is_alive() and len(results) == 1, "a small image waited for a large decode"

        monkeypatch.setattr(images, "LARGE_DECODE_BYTES", 1000)  # now the same file counts as large
        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        worker.join(timeout=0.5)
        assert worker.is_alive(), "two large decodes ran at once"
    worker.join(timeout=5)
    assert not worker.is_alive() and len(results) == 2


# ---------------------------------------------------------------- paths that are no image file


def _fifo(path: Path) -> str:
    os.mkfifo(path)
    return str(path)


def _directory(path: Path) -> str:
    path.mkdir()
    return str(path)


def _zero_bytes(path: Path) -> str:
    path.write_bytes(b"")
    return str(path)


def _missing(path: Path) -> str:
    return str(path)


def _socket(path: Path) -> str:
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
    return str(path)


def _symlink(target: Callable[[Path], str | Path]) -> Callable[[Path], str]:
    def make(path: Path) -> str:
        link = path.with_name("link.jpg")
        link.symlink_to(target(path))
        return str(link)

    return make


def _symlink_loop(path: Path) -> str:
    first, second = path.with_name("a.jpg"), path.with_name("b.jpg")
    first.symlink_to(second)
    second.symlink_to(first)
    return str(first)


def _under_a_file(path: Path) -> str:
    path.write_bytes(b"not a folder")
    return str(path / "x.jpg")


SPECIAL = {
    "directory named .jpg": (_directory, "is a directory, not an image file: "),
    "FIFO named .jpg": (_fifo, "not a regular file (FIFO): "),
    "symlink to a FIFO": (_symlink(_fifo), "not a regular file (FIFO): "),
    "socket named .jpg": (_socket, "not a regular file (socket): "),
    "character device": (lambda path: "/dev/null", "not a regular file (character device): "),
    "zero-byte file": (_zero_bytes, "empty file (0 bytes): "),
    "missing file": (_missing, "file not found: "),
    "dangling symlink": (_symlink(_missing), "file not found: "),
    "symlink loop": (_symlink_loop, "cannot read the file (Too many levels of symbolic links): "),
    "path through a file": (_under_a_file, "cannot read the file (Not a directory): "),
}


def _reason_within(path: str, seconds: float = 5.0) -> str:
    """The reason ``load_rgb`` gives for ``path``, failing the test if it takes longer (a FIFO's open blocks)."""
    reasons: list[str] = []

    def load() -> None:
        try:
            load_rgb(path, (64, 64))
        except ImageLoadError as e:
            reasons.append(str(e))

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():  # stuck opening a FIFO: let it go (a writer arrives), then fail
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
        pytest.fail(f"load_rgb blocked on {path}")
    assert len(reasons) == 1, "load_rgb did not raise ImageLoadError"
    return reasons[0]


@pytest.mark.parametrize("case", list(SPECIAL))
def test_a_path_that_is_no_image_file_gets_its_own_reason_promptly(case, tmp_path):
    make, reason = SPECIAL[case]
    path = make(tmp_path / "bad.jpg")
    assert _reason_within(path) == reason + path


def test_a_fifo_swapped_in_after_the_check_does_not_block(tmp_path, monkeypatch):
    """The path names a regular file when checked and a FIFO when opened: the open must not wait for a writer."""
    regular, fifo = tmp_path / "regular.jpg", _fifo(tmp_path / "fifo.jpg")
    regular.write_bytes(b"x" * 100)
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: real_stat(regular if str(p) == fifo else p, *a, **k))
    assert _reason_within(fifo) == "not a regular file (FIFO): " + fifo
