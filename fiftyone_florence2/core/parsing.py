"""Generated text to relative geometry. Standard library only.

Florence-2 writes locations as ``<loc_b>`` tokens, with ``b`` in ``0..999``
relative to the full image (the processor resizes without crop or padding).
Bin ``b`` maps to the relative coordinate ``(b + 0.5) / 1000``, so no image
size is needed and no precision is lost.

Every parser walks the same token stream and keeps, for each instance, the
character spans it was read from, so that token probabilities can later be
turned into a confidence per instance.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from fiftyone_florence2.core.tasks import BINS, VOCABULARY_TOKENS, Task

Span = tuple[int, int]
Point = tuple[float, float]
XYWH = tuple[float, float, float, float]

# Tags that are not in Florence-2's vocabulary but that fine-tuned checkpoints have been seen to
# write; they are read as tokens so that they never end up inside a label.
_STRAY_TAGS = ("ground", "obj", "box", "bbox")
_TOKEN = re.compile(
    r"<loc_(\d+)>|</?(?:" + "|".join(re.escape(name) for name in (*VOCABULARY_TOKENS, *_STRAY_TAGS)) + ")>"
)
# Tokens that carry no structure: decoder start/end, batch padding.
_FILLER = frozenset({"<s>", "</s>", "<pad>", "<unk>", "<ground>", "<obj>"})
# What region tasks answer for an empty region (compared case-insensitively): an empty answer.
NO_ANSWER = "no object detected."

# Pronouns and generic words that Florence-2's processor configuration bans
# as grounded phrases.
BANNED_GROUNDING_PHRASES = frozenset([
    "it", "I", "me", "mine", "you", "your", "yours", "he", "him", "his", "she", "her", "hers", "they", "them",
    "their", "theirs", "one", "oneself", "we", "us", "our", "ours", "its", "myself", "yourself", "himself",
    "herself", "itself", "ourselves", "yourselves", "themselves", "this", "that", "these", "those", "who",
    "whom", "whose", "which", "what", "all", "another", "any", "anybody", "anyone", "anything", "each",
    "everybody", "everyone", "everything", "few", "many", "nobody", "none", "several", "some", "somebody",
    "someone", "something", "each other", "one another", "the image", "image", "images", "the", "a", "an",
    "a group", "other objects", "lots", "a set",
])  # fmt: skip


@dataclass(frozen=True)
class Piece:
    """One token of decoded text: a text run, a location bin or a special token."""

    kind: Literal["text", "loc", "special"]
    value: str
    start: int
    end: int
    bin: int = -1


@dataclass(frozen=True)
class TextAnswer:
    """A text answer; ``rel_xywh`` is the region a region task echoed, if any."""

    text: str
    spans: tuple[Span, ...] = ()
    rel_xywh: XYWH | None = None


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in relative ``[x, y, w, h]``; ``points`` holds a quad or polygon rings."""

    label: str | None
    rel_xywh: XYWH
    spans: tuple[Span, ...] = ()
    points: tuple[tuple[Point, ...], ...] = ()


@dataclass(frozen=True)
class Polygon:
    """One instance made of closed rings of relative ``(x, y)`` points."""

    label: str | None
    rings: tuple[tuple[Point, ...], ...]
    spans: tuple[Span, ...] = ()

    @property
    def rel_xywh(self) -> XYWH:
        """The box that encloses every ring."""
        return points_to_rel_xywh([p for ring in self.rings for p in ring])


Answer = TextAnswer | list[Box] | list[Polygon]


@dataclass(frozen=True)
class Generation:
    """One decoded generation with, optionally, each token's span and log-probability."""

    text: str
    token_spans: tuple[Span, ...] = field(default=(), repr=False)
    token_logprobs: tuple[float, ...] = field(default=(), repr=False)


def tokenize(text: str) -> list[Piece]:
    """Splits decoded text into text runs, location bins and special tokens."""
    pieces: list[Piece] = []
    pos = 0
    for match in _TOKEN.finditer(text):
        if match.start() > pos:
            pieces.append(Piece("text", text[pos : match.start()], pos, match.start()))
        if match.group(1) is not None:
            pieces.append(Piece("loc", match.group(), match.start(), match.end(), int(match.group(1))))
        else:
            pieces.append(Piece("special", match.group(), match.start(), match.end()))
        pos = match.end()
    if pos < len(text):
        pieces.append(Piece("text", text[pos:], pos, len(text)))
    return pieces


def bin_to_rel(b: int) -> float:
    """Maps a location bin to a relative coordinate in [0, 1]."""
    return min(max((b + 0.5) / BINS, 0.0), 1.0)


def points_to_rel_xywh(points: Sequence[Point]) -> XYWH:
    """Returns the relative ``[x, y, w, h]`` box enclosing ``points``."""
    if not points:
        return (0.0, 0.0, 0.0, 0.0)
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))


def bins_to_points(bins: Sequence[int]) -> tuple[Point, ...]:
    """Pairs up location bins into relative ``(x, y)`` points; an odd last bin is dropped."""
    return tuple((bin_to_rel(bins[i]), bin_to_rel(bins[i + 1])) for i in range(0, len(bins) - 1, 2))


def is_degenerate(rel_xywh: XYWH) -> bool:
    """Whether a box has no area."""
    return not (rel_xywh[2] > 0 and rel_xywh[3] > 0)


def on_one_line(points: Sequence[tuple[int, int]]) -> bool:
    """Whether every point lies on the line through the first two distinct ones (exact on integers)."""
    distinct = list(dict.fromkeys(points))
    if len(distinct) < 3:
        return True
    (x0, y0), (x1, y1) = distinct[0], distinct[1]
    return all((x1 - x0) * (y - y0) == (y1 - y0) * (x - x0) for x, y in distinct[2:])


def bin_to_grid(b: int) -> int:
    """The bin's centre doubled (``2b + 1``), clamped like :func:`bin_to_rel`: ``2 * BINS * bin_to_rel(b)``."""
    return min(max(2 * b + 1, 0), 2 * BINS)


def ring_has_area(bins: Sequence[int]) -> bool:
    """Whether a ring of location bins (``x, y`` pairs) has three distinct points, not all on one line.

    A self-crossing ring (a bow-tie) has real lobes even where its signed area
    nets to zero, so the shoelace sum does not decide. Decided on integers,
    where the test is exact: on relative floats, rounding bends a line by chance.
    """
    grid = [(bin_to_grid(bins[i]), bin_to_grid(bins[i + 1])) for i in range(0, len(bins) - 1, 2)]
    return len(set(grid)) >= 3 and not on_one_line(grid)


def _label(piece: Piece) -> str | None:
    stripped = " ".join(piece.value.split())
    return stripped or None


def parse_text(pieces: list[Piece]) -> TextAnswer:
    """Text with every special and location token removed.

    "No object detected." (what region tasks say about an empty region) is
    an empty answer.
    """
    texts = [p for p in pieces if p.kind == "text"]
    text = "".join(p.value for p in texts).strip()
    if text.lower() == NO_ANSWER:
        text = ""
    locs = [p.bin for p in pieces if p.kind == "loc"][:4]
    region = None
    if len(locs) == 4:
        box = _box_from_bins(locs)
        region = None if is_degenerate(box) else box
    return TextAnswer(text, tuple((p.start, p.end) for p in texts) if text else (), region)


def _box_from_bins(bins: Sequence[int]) -> XYWH:
    (x1, y1), (x2, y2) = bins_to_points(bins)
    return points_to_rel_xywh([(x1, y1), (x2, y2)])


def parse_boxes(
    pieces: list[Piece], labelled: bool = True, banned: frozenset[str] = frozenset(), keep_unnamed: bool = False
) -> list[Box]:
    """Boxes from ``label<loc><loc><loc><loc>...`` runs.

    A label applies to every box that follows it until the next text. With
    ``labelled``, boxes before any label are dropped (as Florence-2's own
    parser does) unless ``keep_unnamed`` (their label is then ``None``);
    without it every label is ``None``. Lone trailing locations, degenerate
    boxes and boxes whose label is in ``banned`` are dropped.
    """
    boxes: list[Box] = []
    label: str | None = None
    label_span: tuple[Span, ...] = ()
    run: list[Piece] = []
    for piece in pieces:
        if piece.kind == "text":
            if labelled and _label(piece):
                label, label_span = _label(piece), ((piece.start, piece.end),)
            run = []
        elif piece.kind == "loc":
            run.append(piece)
            if len(run) == 4:
                box = _box_from_bins([p.bin for p in run])
                named = label is not None or not labelled or keep_unnamed
                keep = not is_degenerate(box) and named and label not in banned
                if keep:
                    boxes.append(Box(label, box, label_span + tuple((p.start, p.end) for p in run)))
                run = []
        elif piece.value not in _FILLER:
            label, label_span, run = None, (), []
    return boxes


def parse_raw_text(pieces: list[Piece]) -> TextAnswer:
    """The answer as written, locations and other tokens included, without the decoder's start, end and
    padding tokens: a free prompt's text, which nothing is dropped from."""
    kept = [p for p in pieces if p.value not in _FILLER]
    text = "".join(p.value for p in kept)
    return TextAnswer(text.strip(), tuple((p.start, p.end) for p in kept if p.value.strip()))


def parse_free(pieces: list[Piece]) -> TextAnswer | list[Box]:
    """A free prompt's answer: labelled boxes if it holds locations (a box with no label before it is
    kept, unnamed), else its text as written."""
    if any(p.kind == "loc" for p in pieces):
        return parse_boxes(pieces, labelled=True, keep_unnamed=True)
    return parse_raw_text(pieces)


def parse_quads(pieces: list[Piece]) -> list[Box]:
    """Text regions from ``text`` followed by eight locations (four corners).

    Each text is used by one quad, as in Florence-2's own parser; a quad with
    no text of its own is dropped.
    """
    boxes: list[Box] = []
    label: str | None = None
    label_span: tuple[Span, ...] = ()
    run: list[Piece] = []
    for piece in pieces:
        if piece.kind == "text" and _label(piece):
            label, label_span, run = _label(piece), ((piece.start, piece.end),), []
        elif piece.kind == "loc":
            run.append(piece)
            if len(run) == 8:
                quad = bins_to_points([p.bin for p in run])
                box = points_to_rel_xywh(quad)
                if label is not None and not is_degenerate(box):
                    spans = label_span + tuple((p.start, p.end) for p in run)
                    boxes.append(Box(label, box, spans, (quad,)))
                label, label_span, run = None, (), []
    return boxes


def parse_polygons(pieces: list[Piece], labelled: bool = True) -> list[Polygon]:
    """Polygons from runs of locations; ``<sep>`` splits rings, ``<poly>..</poly>`` instances.

    Odd trailing bins (a polygon cut at the token limit) and rings with fewer
    than three distinct points, or all on one line, are dropped; an instance needs one ring.
    """
    polygons: list[Polygon] = []
    label: str | None = None
    label_span: tuple[Span, ...] = ()
    rings: list[tuple[Point, ...]] = []
    ring: list[Piece] = []
    spans: list[Span] = []

    def close_ring() -> None:
        bins = [p.bin for p in ring]
        if ring_has_area(bins):
            rings.append(bins_to_points(bins))
            spans.extend((p.start, p.end) for p in ring)
        ring.clear()

    def close_instance() -> None:
        close_ring()
        if rings:
            polygons.append(Polygon(label, tuple(rings), label_span + tuple(spans)))
        rings.clear()
        spans.clear()

    for piece in pieces:
        if piece.kind == "loc":
            ring.append(piece)
        elif piece.kind == "text":
            close_instance()
            if labelled and _label(piece):
                label, label_span = _label(piece), ((piece.start, piece.end),)
        elif piece.value == "<sep>":
            close_ring()
        elif piece.value in ("<poly>", "</poly>"):
            close_instance()
        elif piece.value not in _FILLER:
            close_instance()
            label, label_span = None, ()
    close_instance()
    return polygons


def parse(task: Task, text: str) -> Answer:
    """Parses one decoded generation for ``task`` into relative geometry.

    Never raises on model output: malformed parts are dropped.
    """
    if not isinstance(text, str):
        raise TypeError(f"Expected decoded text as a string, got {type(text).__name__}.")
    pieces = tokenize(text)
    if task.answer == "text":
        return parse_text(pieces)
    if task.answer == "free":
        return parse_free(pieces)
    if task.answer == "quads":
        return parse_quads(pieces)
    if task.answer == "polygons":
        return parse_polygons(pieces, labelled=True)
    if task.answer == "boxes_or_polygons" and any(p.value == "<poly>" for p in pieces):
        polygons = parse_polygons(pieces, labelled=True)
        return [Box(p.label, p.rel_xywh, p.spans, p.rings) for p in polygons if not is_degenerate(p.rel_xywh)]
    if task.answer == "unnamed_boxes":
        return parse_boxes(pieces, labelled=False)
    banned = BANNED_GROUNDING_PHRASES if task.answer == "phrase_boxes" else frozenset()
    return parse_boxes(pieces, labelled=True, banned=banned)


def span_confidence(spans: Sequence[Span], generation: Generation) -> float | None:
    """``exp`` of the mean log-probability of the tokens that overlap ``spans``.

    Returns ``None`` when the generation carries no token scores.
    """
    if not spans or not generation.token_logprobs:
        return None
    picked = [
        logprob
        for (start, end), logprob in zip(generation.token_spans, generation.token_logprobs)
        if any(start < s_end and s_start < end for s_start, s_end in spans)
    ]
    if not picked:
        return None
    return min(max(math.exp(sum(picked) / len(picked)), 0.0), 1.0)
