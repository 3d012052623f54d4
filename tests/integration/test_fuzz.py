"""Fuzzed decoder output and prompts: the parser never raises and never writes impossible geometry.

Hypothesis builds decoded strings from what Florence-2 really emits (labels
followed by location tokens, quads, ``<poly>`` blocks, ``<sep>``), what it
emits when it goes wrong (out-of-range bins, lone locations, special tokens
anywhere, tokens cut in half at the token limit) and unicode junk, for every
task. Each label must be the task's type, every coordinate in [0, 1], every
box with width and height, every polygon with at least three points.
"""

from __future__ import annotations

import math

import fiftyone.core.labels as fol
import pytest
from helpers import force
from helpers.threads import one_torch_thread  # noqa: F401
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fiftyone_florence2 import load_model, to_label
from fiftyone_florence2.core.parsing import Generation, tokenize
from fiftyone_florence2.core.prompts import build_question, check_prompt, region_tokens
from fiftyone_florence2.core.tasks import TASKS
from fiftyone_florence2.labels.convert import Result, build_label
from fiftyone_florence2.runs.labelling import label_samples

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PER_TASK = settings(FUZZ, max_examples=120)  # for each of the fifteen tasks

SPECIALS = [
    "<s>", "</s>", "<pad>", "<unk>", "<sep>", "<poly>", "</poly>", "<mask>", "<image>", "<and>",
    "<od>", "</od>", "<ocr>", "</ocr>", "<cap>", "</cap>", "<grounding>", "</grounding>", "<seg>",
    "</seg>", "<region_cap>", "</region_cap>", "<region_to_desciption>", "<proposal>", "</proposal>",
]  # fmt: skip
FRAGMENTS = [
    "<loc_", "<loc_12", "loc_5>", "<loc_>", "<loc_-3>", "<loc_1e3>", "<", ">", "</", "<poly", "<s",
    "No object detected.", "no object detected.", " ", "\n", "\t", "\x00", "\u200b", "…", "🚗", "車", "é",
    "<LOC_5>", "<<loc_5>>",
]  # fmt: skip

# Mostly real bins, so that many boxes survive; sometimes past the end (1000 is emitted) or absurd.
bins = st.one_of(*[st.integers(0, 999)] * 6, st.integers(1000, 1100), st.integers(0, 10**25))
loc = bins.map("<loc_{}>".format)
words = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
label_text = st.one_of(words, st.sampled_from(["car", "a red car", " big  dog ", "STOP", "東京 タワー", "it", "the"]))
junk = st.one_of(loc, st.sampled_from(SPECIALS), st.sampled_from(FRAGMENTS), words)


def _locs(n: int):
    return st.lists(loc, min_size=n, max_size=n).map("".join)


# Shapes Florence-2 answers in: a label and its boxes, a text and its quad, polygon blocks.
boxes = st.tuples(label_text, st.lists(_locs(4), min_size=1, max_size=3)).map(lambda t: t[0] + "".join(t[1]))
quads = st.tuples(label_text, _locs(8)).map("".join)
rings = st.lists(st.integers(0, 12).flatmap(lambda n: _locs(n)), min_size=1, max_size=3).map("<sep>".join)
polys = st.tuples(st.sampled_from(["", "<poly>"]), rings, st.sampled_from(["", "</poly>"])).map("".join)
pieces = st.one_of(boxes, quads, polys, junk, junk)


@st.composite
def decoded(draw) -> str:
    """A decoder output: optional start tokens, answer pieces, end and padding, maybe cut off anywhere."""
    text = draw(st.sampled_from(["", "</s>", "<s>", "</s><s><s>"]))
    text += "".join(draw(st.lists(pieces, max_size=12)))
    text += draw(st.sampled_from(["", "</s>", "</s><pad><pad><pad>"]))
    if draw(st.booleans()):
        text = text[: draw(st.integers(0, len(text)))]
    return text


def check_box(xywh) -> None:
    assert xywh is not None and len(xywh) == 4
    x, y, w, h = xywh
    assert all(isinstance(v, float) and math.isfinite(v) for v in xywh)
    assert 0 <= x <= 1 and 0 <= y <= 1, xywh
    assert w > 0 and h > 0, f"degenerate box {xywh}"
    assert x + w <= 1 + 1e-9 and y + h <= 1 + 1e-9, xywh


def check_point(point) -> None:
    assert len(point) == 2 and all(0 <= v <= 1 for v in point), point


def check_label(task, label, text_without_box: bool = False) -> None:
    """``text_without_box``: a region answer that echoed no usable box may come back as its text."""
    if text_without_box and isinstance(label, fol.Classification):
        assert isinstance(label.label, str) and label.label
        return
    if task.free and label is None:  # an empty free answer, with no field type to follow: a skip
        return
    assert type(label).__name__ in task.label_types
    if isinstance(label, fol.Classification):
        assert isinstance(label.label, str)
        return
    if isinstance(label, fol.Polylines):
        for polyline in label.polylines:
            assert polyline.closed and polyline.filled and polyline.points
            for ring in polyline.points:
                assert len(ring) >= 3, f"a polygon needs three points, got {ring}"
                for point in ring:
                    check_point(point)
            assert polyline.label is None or polyline.label.strip()
        return
    for detection in label.detections:
        check_box(detection.bounding_box)
        assert detection.label is None or (isinstance(detection.label, str) and detection.label.strip())
        if detection.mask is not None:  # open-vocabulary polygons: their shape over their box
            assert detection.mask.ndim == 2 and detection.mask.size and detection.mask.dtype == bool
        if task.answer == "quads":
            assert len(detection.quad) == 4
            for point in detection.quad:
                check_point(point)


@pytest.mark.parametrize("task", TASKS, ids=[t.name for t in TASKS])
@PER_TASK
@given(text=decoded())
@example(text="")
@example(text="<loc_1000>" * 8)
@example(text="car<loc_0><loc_0><loc_0><loc_0>")
@example(text="<poly><loc_1><loc_1><loc_1><loc_1><loc_1><loc_1></poly>")
@example(text="a" + "<loc_999999999999999999999999999>" * 4)
def test_any_decoded_text_gives_a_valid_label(task, text):
    check_label(task, to_label(task, text), text_without_box=task.input == "region" and task.answer == "text")


@FUZZ
@given(
    task=st.sampled_from(TASKS),
    text=decoded(),
    logprobs=st.lists(st.floats(-100, 0), min_size=1, max_size=200),
)
def test_confidence_is_a_probability(task, text, logprobs):
    """Token scores arrive per token; whatever they are, every confidence lies in [0, 1]."""
    spans = tuple((p.start, p.end) for p in tokenize(text))
    scores = tuple(logprobs[i % len(logprobs)] for i in range(len(spans)))
    region = fol.Detection(label="input", bounding_box=[0.1, 0.1, 0.5, 0.5]) if task.input == "region" else None
    label = build_label(task, [Result(Generation(text, spans, scores), prompt="car", region=region)])
    check_label(task, label)
    items = (
        [] if label is None else [label] if isinstance(label, fol.Classification) else label[label._LABEL_LIST_FIELD]
    )
    for item in items:
        assert item.confidence is None or 0 <= item.confidence <= 1


def test_region_answer_without_an_echoed_region_has_a_box_or_is_text():
    # Regression (found by the fuzz property, fixed in 4a7c06c): an answer that
    # echoes no usable region, turned into a label with no input region, came
    # back as a Detection with an empty bounding_box ([]). Such an answer now
    # comes back as a Classification holding its text.
    for task in ("region_to_category", "region_to_description", "region_to_ocr"):
        for text in ("</s>car</s>", "car<loc_5><loc_5><loc_5><loc_5>"):
            label = to_label(task, text)
            assert isinstance(label, fol.Classification) and label.label == "car"


# ---------------------------------------------------------------- prompts

PROMPT_PIECES = st.one_of(words, st.sampled_from(SPECIALS + FRAGMENTS), loc, st.sampled_from([t.token for t in TASKS]))


@pytest.fixture(scope="module")
def special_ids(tokenizer) -> set[int]:
    return set(tokenizer.get_added_vocab().values()) | set(tokenizer.all_special_ids)


@FUZZ
@given(parts=st.lists(PROMPT_PIECES, max_size=8))
def test_accepted_prompts_carry_no_florence_tokens(parts, tokenizer, special_ids):
    text = "".join(parts)
    try:
        prompt = check_prompt(text)
    except ValueError:
        return
    assert prompt == prompt.strip() and prompt and "  " not in prompt
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    assert not special_ids & set(ids), f"{prompt!r} smuggles a special token into the question"
    for task in TASKS:
        if task.input == "text":
            assert prompt in build_question(task, text=prompt)


@FUZZ
@given(value=st.one_of(st.none(), st.integers(), st.floats(), st.binary(max_size=4), st.lists(st.text(max_size=3))))
def test_check_prompt_refuses_non_text_with_value_error(value):
    with pytest.raises(ValueError):
        check_prompt(value)


def test_every_added_token_is_refused_in_a_prompt(tokenizer):
    for token in tokenizer.get_added_vocab():
        with pytest.raises(ValueError, match="Florence-2 tokens"):
            check_prompt(f"a {token} b")


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-2, 2),
    st.integers(-(10**6), 10**6),
    st.sampled_from([0, 0.0, -0.0, 1, 1e-12, 1 - 1e-12, 1e308]),
)


@FUZZ
@given(rel_xywh=st.lists(numbers, min_size=0, max_size=6))
def test_region_tokens_are_valid_bins_or_a_value_error(rel_xywh):
    try:
        tokens = region_tokens(rel_xywh)
    except ValueError:
        return
    assert len(rel_xywh) == 4
    x, y, w, h = rel_xywh
    assert w > 0 and h > 0 and all(math.isfinite(v) for v in (x, y, x + w, y + h))
    assert x < 1 and y < 1 and x + w > 0 and y + h > 0, "an accepted region lies on the image"
    pieces = tokenize(tokens)
    assert [p.kind for p in pieces] == ["loc"] * 4
    x1, y1, x2, y2 = (p.bin for p in pieces)
    assert all(0 <= b <= 999 for b in (x1, y1, x2, y2))
    assert x1 <= x2 and y1 <= y2


def test_an_absurd_region_fails_only_its_own_sample(dataset, tiny_checkpoint, tokenizer):
    # Regression (found by the region_tokens property, fixed in 4a7c06c): a finite
    # but huge coordinate overflowed in `value * BINS` and raised OverflowError,
    # which nothing caught: the whole run stopped instead of skipping the region.
    good = fol.Detections(detections=[fol.Detection(label="ok", bounding_box=[0.1, 0.1, 0.5, 0.5])])
    absurd = fol.Detections(detections=[fol.Detection(label="bad", bounding_box=[0.0, 0.0, 1.0, 1e306])])
    dataset.set_values("gt", [good, absurd, good, good, good])
    model = load_model(
        "region_to_category", model=str(tiny_checkpoint), regions_field="gt", generate_kwargs=force(tokenizer, "cat")
    )
    summary = label_samples(dataset, model, "cat", batch_size=5)
    # Since "Nothing lost, round two" the sample with the unusable box fails with a reason instead of
    # getting an empty label that counted as labelled.
    bad = dataset.values("id")[1]
    assert summary.labelled == 4 and list(summary.failures) == [bad] and "unusable" in summary.failures[bad]
    assert [None if d is None else len(d.detections) for d in dataset.values("cat")] == [1, None, 1, 1, 1]
