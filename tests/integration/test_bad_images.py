"""Bad and unusual images, each in a batch with good ones: nothing lost, nothing else touched.

Every case goes through ``label_samples`` (what the CLI and the App run). A
bad file fails only its own sample, with a reason kept in the summary and in
the run record; an unusual but valid file (grayscale, alpha, palette, 16-bit,
CMYK, EXIF-rotated, 1x1, 12000x9000) is labelled. Every other field of every
sample stays byte-for-byte the same.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import bson
import cv2
import fiftyone as fo
import fiftyone.core.labels as fol
import numpy as np
import pytest
from helpers import force, write_image
from helpers.threads import one_torch_thread  # noqa: F401
from PIL import Image

from fiftyone_florence2 import load_model
from fiftyone_florence2.cli import main
from fiftyone_florence2.core.errors import SampleError
from fiftyone_florence2.engine.images import load_rgb
from fiftyone_florence2.engine.items import Item, load_item
from fiftyone_florence2.runs.labelling import label_samples
from fiftyone_florence2.runs.locks import list_locks
from fiftyone_florence2.runs.records import list_runs, run_failures

# The top-left quadrant of the image, in bins and in relative [x, y, w, h].
QUADRANT = "<loc_0><loc_0><loc_499><loc_499>"
QUADRANT_XYWH = [0.0005, 0.0005, 0.499, 0.499]
ANSWER = "car" + QUADRANT
SQUARE = "<loc_0><loc_0><loc_499><loc_0><loc_499><loc_499><loc_0><loc_499>"
BATCH = 4  # the bad sample shares its batch with three good ones

# ---------------------------------------------------------------- image makers


def _scene(width: int = 160, height: int = 96) -> np.ndarray:
    """An asymmetric upright scene: red top-left quadrant, blue bottom-right corner, white elsewhere."""
    scene = np.full((height, width, 3), 255, np.uint8)
    scene[: height // 2, : width // 2] = (255, 0, 0)
    scene[-height // 4 :, -width // 4 :] = (0, 0, 255)
    return scene


# For each EXIF orientation, the transpose that turns the upright scene into
# the stored pixels (the inverse of what a viewer applies).
_STORE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def exif_jpeg(path: Path, orientation: int, scene: np.ndarray | None = None) -> str:
    """A JPEG whose stored pixels are the scene transposed, with the EXIF tag that makes it upright again."""
    scene = _scene() if scene is None else scene
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(scene).transpose(_STORE[orientation]).save(path, exif=exif, quality=95)
    return str(path)


def _missing(path: Path) -> str:
    return str(path.with_name("never_written.jpg"))


def _zero_bytes(path: Path) -> str:
    path = path.with_suffix(".jpg")
    path.write_bytes(b"")
    return str(path)


def _truncated_jpeg(path: Path) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(7).integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(buffer, "JPEG")
    data = buffer.getvalue()
    path = path.with_suffix(".jpg")
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def _text_as_jpeg(path: Path) -> str:
    path = path.with_suffix(".jpg")
    path.write_text("Dear user, this is a text file with a .jpg name.\n")
    return str(path)


def _directory(path: Path) -> str:
    path = path.with_suffix(".jpg")
    path.mkdir()
    return str(path)


def _fifo(path: Path) -> str:
    path = path.with_suffix(".jpg")
    os.mkfifo(path)
    return str(path)


def _decompression_bomb(path: Path) -> str:
    """A PNG header that declares 30000x30000 pixels: refused at open, without decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    path = path.with_suffix(".png")
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    return str(path)


def _mode(mode: str, ext: str) -> Callable[[Path], str]:
    def make(path: Path) -> str:
        return write_image(path.with_suffix(ext), size=(96, 64), mode=mode, seed=3)

    return make


def _palette_with_transparency(path: Path) -> str:
    img = Image.fromarray(_scene()).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    path = path.with_suffix(".png")
    img.save(path, transparency=0)
    return str(path)


def _gray16(path: Path) -> str:
    ramp = np.linspace(0, 65535, 96 * 64).reshape(64, 96).astype(np.uint16)
    path = path.with_suffix(".png")
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I"), "the fixture must really be 16-bit"
    return str(path)


def _rgb16(path: Path) -> str:
    rgb = np.random.default_rng(5).integers(0, 65535, (64, 96, 3), dtype=np.uint16)
    path = path.with_suffix(".png")
    cv2.imwrite(str(path), rgb)
    return str(path)


def _one_pixel(path: Path) -> str:
    return write_image(path.with_suffix(".png"), size=(1, 1), seed=1)


def _exif6(path: Path) -> str:
    return exif_jpeg(path.with_suffix(".jpg"), 6)


@pytest.fixture(scope="module")
def huge_jpeg(tmp_path_factory) -> str:
    """12000x9000 pixels, mostly flat and saved at low quality: about 2 MB, made in well under a second."""
    img = Image.new("RGB", (12000, 9000), (40, 120, 200))
    img.paste((250, 20, 20), (0, 0, 6000, 4500))
    path = tmp_path_factory.mktemp("huge") / "huge.jpg"
    img.save(path, quality=10)
    return str(path)


BAD = {
    "missing file": (_missing, "file not found"),
    "zero-byte file": (_zero_bytes, "empty file"),
    "truncated JPEG": (_truncated_jpeg, "truncated"),
    "text file named .jpg": (_text_as_jpeg, "not an image file"),
    "directory named .jpg": (_directory, "is a directory, not an image file"),
    "FIFO named .jpg": (_fifo, "not a regular file (FIFO)"),
    "decompression bomb": (_decompression_bomb, "too large"),
}

UNUSUAL = {
    "grayscale JPEG": _mode("L", ".jpg"),
    "grayscale PNG": _mode("L", ".png"),
    "RGBA PNG": _mode("RGBA", ".png"),
    "LA PNG": _mode("LA", ".png"),
    "palette PNG": _mode("P", ".png"),
    "palette PNG with transparency": _palette_with_transparency,
    "16-bit grayscale PNG": _gray16,
    "16-bit RGB PNG": _rgb16,
    "CMYK JPEG": _mode("CMYK", ".jpg"),
    "bilevel PNG": _mode("1", ".png"),
    "EXIF-rotated JPEG": _exif6,
    "1x1 PNG": _one_pixel,
}

# ---------------------------------------------------------------- helpers


@pytest.fixture
def model(tiny_checkpoint, tokenizer):
    return load_model("detection", model=str(tiny_checkpoint), num_beams=1, generate_kwargs=force(tokenizer, ANSWER))


def _raw(dataset: fo.Dataset, skip: tuple[str, ...]) -> dict:
    """Each sample's stored document as BSON bytes, without the fields a run may change."""
    docs = dataset._sample_collection.find({}, sort=[("_id", 1)])
    return {doc["_id"]: bson.encode({k: v for k, v in doc.items() if k not in skip}) for doc in docs}


def _schema(dataset: fo.Dataset, skip: tuple[str, ...]) -> dict:
    return {name: str(field) for name, field in dataset.get_field_schema().items() if name not in skip}


def batch_with(tmp_path: Path, bad_path: str) -> tuple[fo.Dataset, str]:
    """Three good samples around ``bad_path``, each with fields of many kinds that no run may touch."""
    images = tmp_path / "good"
    images.mkdir(exist_ok=True)
    paths = [write_image(images / f"good_{i}.png", size=(72 + 8 * i, 56), seed=10 + i) for i in range(3)]
    paths.insert(1, bad_path)
    dataset = fo.Dataset()
    samples = []
    for i, path in enumerate(paths):
        samples.append(
            fo.Sample(
                filepath=path,
                tags=["keep", f"n{i}"],
                note=f"note {i} ✓",
                score=0.25 * i,
                flags=[True, False, i],
                extra={"a": i, "nested": {"b": [1, 2.5, "x"]}},
                gt=fol.Detections(detections=[fol.Detection(label="user", bounding_box=[0.1, 0.1, 0.2, 0.3])]),
                prev=fol.Classification(label=f"previous {i}", confidence=0.5),
            )
        )
    dataset.add_samples(samples)
    return dataset, samples[1].id


def assert_only_target_changed(before_docs, before_schema, dataset, targets):
    skip = (*targets, "last_modified_at")
    assert _raw(dataset, skip) == before_docs, "a field other than the target was rewritten or deleted"
    assert _schema(dataset, targets) == before_schema


# ---------------------------------------------------------------- the table


@pytest.mark.parametrize("case", list(BAD))
def test_bad_image_fails_only_itself_with_a_queryable_reason(case, model, tmp_path):
    make, reason = BAD[case]
    dataset, bad_id = batch_with(tmp_path, make(tmp_path / "bad"))
    before_docs, before_schema = _raw(dataset, ("last_modified_at",)), _schema(dataset, ())

    summary = label_samples(dataset, model, "det", batch_size=BATCH)

    assert (summary.targeted, summary.labelled) == (4, 3)
    assert list(summary.failures) == [bad_id]
    assert reason in summary.failures[bad_id]
    # Queryable after the run, from the dataset alone.
    dataset.reload()
    assert list_runs(dataset) == [summary.run_key]
    assert run_failures(dataset, summary.run_key) == summary.failures
    results = dataset.load_run_results(summary.run_key, cache=False)
    assert (results.labelled, results.failed, results.status) == (3, 1, "completed")
    # The bad sample has no label; every good one has exactly the answer.
    for sample in dataset:
        if sample.id == bad_id:
            assert sample["det"] is None
        else:
            assert [(d.label, d.bounding_box) for d in sample["det"].detections] == [("car", QUADRANT_XYWH)]
    assert_only_target_changed(before_docs, before_schema, dataset, ("det",))
    assert list_locks(dataset) == []
    dataset.delete()


@pytest.mark.parametrize("case", list(UNUSUAL))
def test_unusual_but_valid_image_is_labelled(case, model, tmp_path):
    dataset, odd_id = batch_with(tmp_path, UNUSUAL[case](tmp_path / "odd"))
    before_docs, before_schema = _raw(dataset, ("last_modified_at",)), _schema(dataset, ())

    summary = label_samples(dataset, model, "det", batch_size=BATCH)

    assert summary.failures == {} and summary.labelled == 4
    assert run_failures(dataset, summary.run_key) == {}
    odd = dataset[odd_id]
    assert [(d.label, d.bounding_box) for d in odd["det"].detections] == [("car", QUADRANT_XYWH)]
    assert_only_target_changed(before_docs, before_schema, dataset, ("det",))
    dataset.delete()


def test_very_large_image_is_labelled_at_its_full_size(huge_jpeg, tiny_checkpoint, tokenizer, tmp_path):
    loaded = load_rgb(huge_jpeg, draft_wh=(64, 64))
    assert (loaded.width, loaded.height) == (12000, 9000)  # the size the App shows
    assert max(loaded.image.size) <= 1500  # decoded at a reduced scale: fast and light
    dataset, big_id = batch_with(tmp_path, huge_jpeg)
    before_docs, before_schema = _raw(dataset, ("last_modified_at",)), _schema(dataset, ())
    model = load_model(
        "segmentation",
        model=str(tiny_checkpoint),
        prompt="the red block",
        num_beams=1,
        generate_kwargs=force(tokenizer, SQUARE),
    )
    summary = label_samples(dataset, model, "seg", batch_size=BATCH)
    assert summary.failures == {} and summary.labelled == 4
    (line,) = dataset[big_id]["seg"].polylines
    assert line.label == "the red block" and len(line.points[0]) == 4
    assert_only_target_changed(before_docs, before_schema, dataset, ("seg",))
    dataset.delete()


# ---------------------------------------------------------------- fail-fast


@pytest.mark.parametrize("case", ["missing file", "truncated JPEG", "text file named .jpg"])
def test_fail_fast_raises_names_the_sample_and_unlocks(case, tiny_checkpoint, tokenizer, tmp_path):
    make, reason = BAD[case]
    dataset, bad_id = batch_with(tmp_path, make(tmp_path / "bad"))
    model = load_model(
        "detection", model=str(tiny_checkpoint), skip_failures=False, generate_kwargs=force(tokenizer, ANSWER)
    )
    with pytest.raises(SampleError, match=reason) as raised:
        label_samples(dataset, model, "det", batch_size=BATCH)
    assert bad_id in str(raised.value)
    (key,) = list_runs(dataset)
    assert dataset.get_run_info(key).config.status == "failed"
    assert list_locks(dataset) == []
    dataset.delete()


def test_cli_records_reasons_and_fail_fast_exits_nonzero(tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(3):
        write_image(folder / f"good_{i}.png", seed=i)
    _text_as_jpeg(folder / "fake")
    _truncated_jpeg(folder / "cut")
    args = ["label", "--images", str(folder), "--task", "caption", "--model", str(tiny_checkpoint)]
    args += ["--num-beams", "1", "--max-new-tokens", "4", "--batch-size", "8"]
    try:
        assert main([*args, "--dataset-name", "bad-images-cli"]) == 0
        out = capsys.readouterr().out
        assert "Labelled 3 of 5 sample(s)" in out
        assert "fake.jpg: not an image file" in out and "cut.jpg: truncated" in out
        dataset = fo.load_dataset("bad-images-cli")
        (key,) = list_runs(dataset)
        assert len(run_failures(dataset, key)) == 2

        assert main([*args, "--dataset-name", "bad-images-cli-ff", "--fail-fast"]) == 1
        err = capsys.readouterr().err
        assert "florence2: error: Sample " in err and "Traceback" not in err
        # The batch failed before any label was written: the dataset this run made is gone again, locks and all.
        assert not fo.dataset_exists("bad-images-cli-ff")
    finally:
        for name in ("bad-images-cli", "bad-images-cli-ff"):
            if fo.dataset_exists(name):
                fo.delete_dataset(name)


# ---------------------------------------------------------------- EXIF orientation


@pytest.mark.parametrize("orientation", sorted(_STORE))
def test_exif_rotated_jpeg_reaches_the_model_upright(orientation, tmp_path):
    upright = _scene()
    stored = Image.open(exif_jpeg(tmp_path / "r.jpg", orientation))
    assert stored.getexif()[0x0112] == orientation
    loaded = load_rgb(stored.filename, draft_wh=(64, 64))
    pixels = np.asarray(loaded.image, dtype=np.int16)
    assert (loaded.width, loaded.height) == (160, 96) and loaded.image.size == (160, 96)
    assert np.abs(pixels - upright).mean() < 6  # JPEG noise only
    # ... and not the stored pixels, which a reader ignoring EXIF would give.
    raw = np.asarray(Image.open(stored.filename).convert("RGB"), dtype=np.int16)
    assert raw.shape != pixels.shape or np.abs(raw - upright).mean() > 60
    # The size labels are built against (masks are drawn at it) is the upright one.
    item = load_item(Item("x"), stored.filename, lambda image: image.size, draft_wh=(64, 64))
    assert item.error is None and item.image_wh == (160, 96) and item.pixel_values == (160, 96)


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_labels_line_up_with_the_upright_image(orientation, tiny_checkpoint, tokenizer, tmp_path):
    """Masks, boxes and the pixels the model saw match an upright copy of the same scene."""
    exif_path = exif_jpeg(tmp_path / "rotated.jpg", orientation)
    upright_path = str(tmp_path / "upright.png")
    Image.fromarray(_scene()).save(upright_path)
    dataset = fo.Dataset()
    paths = [write_image(tmp_path / "good.png", seed=1), exif_path, upright_path]
    dataset.add_samples([fo.Sample(filepath=p) for p in paths])
    model = load_model(
        "segmentation",
        model=str(tiny_checkpoint),
        prompt="the red block",
        masks=True,
        num_beams=1,
        generate_kwargs=force(tokenizer, SQUARE),
    )
    seen = []
    preprocess = model.runner.preprocess
    model.runner.preprocess = lambda image: seen.append(np.asarray(image, dtype=np.int16)) or preprocess(image)

    summary = label_samples(dataset, model, "seg", batch_size=3)
    dataset.apply_model(model, label_field="seg_apply", batch_size=3, num_workers=0)  # in-process: seen

    assert summary.failures == {} and model.failures == {}
    # The model's input: the upright scene, through both paths (2 runs x 1 EXIF image).
    scenes = [s for s in seen if s.shape == (96, 160, 3) and np.abs(s - _scene()).mean() < 6]
    assert len(scenes) == 4  # the EXIF image and its upright copy, in each run
    assert not [s for s in seen if s.shape == (160, 96, 3)]
    rotated, reference = dataset.select([dataset.skip(1).first().id, dataset.last().id], ordered=True)
    for field in ("seg", "seg_apply"):
        (mask,) = rotated[field].detections
        (ref,) = reference[field].detections
        assert mask.bounding_box == ref.bounding_box == QUADRANT_XYWH
        assert mask.mask.shape == ref.mask.shape == (48, 80)  # upright: 96 high, 160 wide
        # The box covers the red quadrant of the upright image, as the App shows it.
        box = _scene()[:48, :80]
        assert (box == (255, 0, 0)).all()
    dataset.delete()


# ---------------------------------------------------------------- apply_model


def test_apply_model_labels_every_unusual_image(model, huge_jpeg, tmp_path):
    paths = [make(tmp_path / name.replace(" ", "_")) for name, make in UNUSUAL.items()] + [huge_jpeg]
    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(filepath=p, note="keep") for p in paths])
    before = _raw(dataset, ("det", "last_modified_at"))
    dataset.apply_model(model, label_field="det", batch_size=4)
    assert model.failures == {}
    assert dataset.count("det") == len(paths)
    assert all([d.bounding_box for d in det.detections] == [QUADRANT_XYWH] for det in dataset.values("det"))
    assert _raw(dataset, ("det", "last_modified_at")) == before
    dataset.delete()


def test_several_tasks_touch_only_their_own_fields(tiny_checkpoint, tokenizer, tmp_path):
    dataset, bad_id = batch_with(tmp_path, _truncated_jpeg(tmp_path / "bad"))
    before_docs, before_schema = _raw(dataset, ("last_modified_at",)), _schema(dataset, ())

    def answer(task, question):
        return "a caption" if task == "caption" else ANSWER

    model = load_model(
        ["caption", "detection"], model=str(tiny_checkpoint), num_beams=1, generate_kwargs=force(tokenizer, answer)
    )
    summary = label_samples(dataset, model, "f2", batch_size=BATCH)
    assert summary.labelled == 3 and list(summary.failures) == [bad_id]
    assert dataset.count("f2_caption") == dataset.count("f2_detection") == 3
    assert dataset[bad_id]["f2_caption"] is None and dataset[bad_id]["f2_detection"] is None
    assert_only_target_changed(before_docs, before_schema, dataset, ("f2_caption", "f2_detection"))
    dataset.delete()


def test_apply_model_keeps_the_good_samples_of_a_batch_with_a_broken_file(model, tmp_path):
    # Regression (found by this test, fixed in e21accb): FiftyOne's batch path reads
    # every image itself before predict_all, so one unreadable file skipped its
    # whole batch, with no reason recorded. Florence2Model is always fed through
    # FiftyOne's data loader now (torchvision is a dependency), and each file fails alone.
    dataset, bad_id = batch_with(tmp_path, _text_as_jpeg(tmp_path / "bad"))
    dataset.apply_model(model, label_field="det", batch_size=BATCH)
    assert dataset.has_field("det"), "no sample of the batch was labelled"
    assert dataset.count("det") == 3
    assert list(model.failures) == [bad_id] and "not an image file" in model.failures[bad_id]
    dataset.delete()
