"""The calibration diagram: a reliability panel per class beneath the overall one, the most labelled first,
at most MAX_CLASS_PANELS, the others named under the figure."""

from __future__ import annotations

import struct

import pytest

from fiftyone_florence2.autolabel.plot import MAX_CLASS_PANELS, _left_out_note, png_bytes, shown_classes
from fiftyone_florence2.autolabel.report import Calibration, class_report


def _calibration(sizes: dict[str, int]) -> Calibration:
    """Classes of the given sizes, confidences spread over 0-1, every other label right."""
    per_class = {
        name: class_report(name, [(i / max(n, 1), i % 2 == 0) for i in range(n)], 0, n, 0.9, 10)
        for name, n in sizes.items()
    }
    everything = [(i / 20, i % 2 == 0) for i in range(20)]
    settings = {"pred_field": "pred", "gt_field": "gt", "target_precision": 0.9}
    return Calibration("k", settings, class_report("*", everything, 0, 20, 0.9, 10), per_class)


def _png_size(data: bytes) -> tuple[int, int]:
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize(
    ("sizes", "drawn", "left_out"),
    [
        ({}, [], []),
        ({"car": 5}, ["car"], []),
        ({"b": 3, "a": 3, "c": 9}, ["c", "a", "b"], []),  # most labels first; ties by name
        ({f"c{i:02d}": 100 - i for i in range(11)}, [f"c{i:02d}" for i in range(8)], ["c08", "c09", "c10"]),
    ],
)
def test_the_most_labelled_classes_are_drawn_and_the_rest_named(sizes, drawn, left_out):
    shown, rest = shown_classes(_calibration(sizes))
    assert ([r.name for r in shown], rest) == (drawn, left_out)
    assert len(shown) <= MAX_CLASS_PANELS


def test_the_figure_grows_a_row_per_four_classes_and_names_what_it_leaves_out():
    heights = [_png_size(png_bytes(_calibration({f"c{i}": 20 for i in range(n)})))[1] for n in (0, 1, 4, 5, 12)]
    assert heights[0] < heights[1] == heights[2] < heights[3] <= heights[4]
    assert (
        _left_out_note(["a", "b"]) == "Not drawn (2 class(es) with fewer labels): a, b; the report lists every class."
    )
    assert _left_out_note([str(i) for i in range(15)]).endswith("10, 11 and 3 more; the report lists every class.")


def _scored(confidences: list[float]) -> list[tuple[float, bool]]:
    """Labels at ``confidences``, every third one wrong."""
    return [(c, i % 3 != 0) for i, c in enumerate(confidences)]


@pytest.mark.parametrize(
    ("case", "confidences", "crowded"),
    [
        ("spread over 0-1", [i / 40 for i in range(40)], None),
        ("most at 0.9-1, one at exactly 1", [0.9 + i / 400 for i in range(39)] + [1.0] + [0.3, 0.5], (0.9, 1.0)),
        ("most at 0.5-0.6", [0.5 + i / 500 for i in range(45)] + [0.1, 0.95], (0.5, 0.6)),
        ("too few labels to zoom", [0.95] * 9, None),
        ("none", [], None),
    ],
)
def test_a_crowded_bin_is_shown_in_ten_counted_exactly(case, confidences, crowded):
    from fiftyone_florence2.autolabel.plot import _crowded_bin, _zoomed_bars

    scored = _scored(confidences)
    report = class_report("*", scored, 0, len(scored), 0.9, 10)
    found = _crowded_bin(report)
    if crowded is None:
        assert found is None
        return
    assert (round(found.lower, 6), round(found.upper, 6)) == crowded
    centres, accuracy, counts, width = _zoomed_bars(report, found)
    assert len(centres) == 10 and width == pytest.approx((crowded[1] - crowded[0]) / 10)
    for centre, share, count in zip(centres, accuracy, counts):
        low, high = centre - width / 2, centre + width / 2
        inside = [right for c, right in scored if low - 1e-9 <= c < high - 1e-9 or (c == 1.0 and high >= 1.0 - 1e-9)]
        assert count == len(inside), (case, low)
        assert share == pytest.approx(sum(inside) / len(inside) if inside else 0.0)
    assert sum(counts) == found.count
    png_bytes(Calibration("k", {"pred_field": "p", "gt_field": "g", "target_precision": 0.9}, report, {}))
