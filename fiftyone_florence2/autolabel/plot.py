"""The calibration diagram: a reliability diagram (accuracy against mean confidence per bin, the
diagonal, the count in each bin, the recalibration mapping) beside precision and recall against the
threshold, with the chosen threshold and the target marked; beneath, a small reliability diagram per
class. A PNG (matplotlib), which the App's operator output shows too.

It draws a :class:`~fiftyone_florence2.autolabel.report.Calibration` (``calibration``), whose ``overall`` is
a ``ClassReport`` (``report``); they import this module, so it names them only in words.
"""

from __future__ import annotations

import base64
import io
import itertools
import math
import os
from typing import Any

_TITLE = "Reliability: accuracy per confidence bin"
# When one bin holds this share of the labels, the diagram shows that bin split in _ZOOM_BINS instead.
_CROWDED = 0.8
_ZOOM_BINS = 10
_CURVE_TITLE = "Accepting labels at or above a threshold"
# Per-class panels: beyond eight the panels grow too small to read; the rest are named under the figure.
MAX_CLASS_PANELS = 8
_PER_ROW = 4


def check_plot_path(path: Any, overwrite: bool) -> str:
    """The path a PNG may be written to; an existing file (unless ``overwrite``), a folder, a missing
    folder or a name not ending in .png raise ``ValueError``."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise ValueError(f"plot_path must be a file path ending in .png, got {path!r}.")
    path = os.path.abspath(os.path.expanduser(str(path)))
    if not path.lower().endswith(".png"):
        raise ValueError(f"plot_path must end in .png (the diagram is a PNG image), got {path!r}.")
    if os.path.isdir(path):
        raise ValueError(f"plot_path {path!r} is a folder; name a .png file in it.")
    if not os.path.isdir(os.path.dirname(path)):
        raise ValueError(f"The folder of plot_path {path!r} does not exist.")
    if os.path.exists(path) and not overwrite:
        raise ValueError(f"{path!r} exists already: choose another plot_path, or pass overwrite=True to replace it.")
    return path


def _bars(report: Any) -> tuple[list[float], list[float], list[int], float]:
    """Bin centres, accuracies (0 for an empty bin) and counts, and the bin width."""
    width = report.bins[0].upper - report.bins[0].lower if report.bins else 1.0
    centres = [(b.lower + b.upper) / 2 for b in report.bins]
    return centres, [b.accuracy or 0.0 for b in report.bins], [b.count for b in report.bins], width


def _crowded_bin(report: Any) -> Any:
    """The bin holding at least ``_CROWDED`` of the labels, where one bar would hide how accuracy varies, or
    None."""
    total = sum(b.count for b in report.bins)
    crowded = [b for b in report.bins if total >= 10 and b.count >= _CROWDED * total]
    return crowded[0] if crowded else None


def _zoomed_bars(report: Any, crowded: Any) -> tuple[list[float], list[float], list[int], float]:
    """Ten bins across ``crowded`` (what :func:`_bars` gives), counted from the report's curve: the labels
    between two confidences are those accepted at the lower one less those accepted at the upper one."""
    curve = sorted(report.curve, key=lambda p: p.threshold)

    def at_or_above(x: float) -> tuple[int, int]:
        point = next((p for p in curve if p.threshold >= x), None)
        return (point.accepted, point.right) if point else (0, 0)

    width = (crowded.upper - crowded.lower) / _ZOOM_BINS
    edges = [crowded.lower + i * width for i in range(_ZOOM_BINS)] + [math.nextafter(crowded.upper, 2.0)]
    counts, accuracy = [], []
    for low, high in itertools.pairwise(edges):
        (n_low, r_low), (n_high, r_high) = at_or_above(low), at_or_above(high)
        counts.append(n_low - n_high)
        accuracy.append((r_low - r_high) / (n_low - n_high) if n_low > n_high else 0.0)
    return [low + width / 2 for low in edges[:-1]], accuracy, counts, width


def _title(calibration: Any) -> str:
    s, overall = calibration.settings, calibration.overall
    ece = "-" if overall.ece is None else f"{overall.ece:.3f}"
    return (
        f"{s['pred_field']} vs {s['gt_field']}: {overall.predictions} labels, ECE {ece}, "
        f"threshold {overall.threshold:.3f} for precision {s['target_precision']}"
        + ("" if overall.reached else " (not reachable)")
    )


def save_png(calibration: Any, path: str, overwrite: bool = False) -> str:
    """Draws the overall diagram into a PNG at ``path`` (checked by :func:`check_plot_path`)."""
    path = check_plot_path(path, overwrite)
    data = png_bytes(calibration)
    with open(path, "wb") as file:
        file.write(data)
    return path


def png_data_uri(calibration: Any) -> str:
    """The diagram as a ``data:image/png;base64,...`` URI, as the App's operator output shows it."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(calibration)).decode("ascii")


def _reliability(axes: Any, report: Any, title: str, small: bool = False) -> None:
    """One reliability diagram: a bar per bin at its accuracy, the diagonal, the counts, and the recalibration
    mapping (when the calibration has one) as a line."""
    crowded = _crowded_bin(report)
    centres, accuracy, counts, width = _zoomed_bars(report, crowded) if crowded else _bars(report)
    low = crowded.lower if crowded else 0.0
    axes.bar(centres, accuracy, width=width * 0.92, color="#4c78a8", edgecolor="white", label="share right")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    if report.mapping:
        knots = [(0.0, report.mapping[0][1]), *report.mapping, (1.0, report.mapping[-1][1])]
        axes.plot([x for x, _ in knots], [y for _, y in knots], color="#e45756", label="recalibration (fitted)")
    if not small:
        for x, y, n in zip(centres, accuracy, counts):
            if n:
                axes.annotate(f"n={n}", (x, y), ha="center", va="bottom", fontsize=8, xytext=(0, 2),
                              textcoords="offset points")  # fmt: skip
    axes.set(xlim=(low, 1), ylim=(0, 1.08))
    if crowded and not small:  # most labels in one bin: that bin, in ten (a class panel's axis says so alone)
        total = sum(b.count for b in report.bins)
        title += f"\n{crowded.count} of {total} labels lie at {low:.1f}-{crowded.upper:.1f}: that bin, in ten"
    axes.set_title(title, fontsize=8 if small else 10)
    if small:
        axes.tick_params(labelsize=7)
    else:
        axes.set(xlabel="confidence", ylabel="share right")
        axes.legend(loc="best", fontsize=8)


def _class_title(report: Any) -> str:
    ece = "-" if report.ece is None else f"{report.ece:.2f}"
    own = "overall threshold" if report.fallback else f"threshold {report.threshold:.2f}"
    return f"{report.name}: n={report.predictions}\nECE {ece}, {own}"  # two lines: fits a quarter-width panel


def shown_classes(calibration: Any) -> tuple[list[Any], list[str]]:
    """The class reports drawn (the ``MAX_CLASS_PANELS`` with the most labels) and the names left out."""
    ordered = sorted(calibration.per_class.values(), key=lambda r: (-r.predictions, r.name))
    return ordered[:MAX_CLASS_PANELS], [r.name for r in ordered[MAX_CLASS_PANELS:]]


def _left_out_note(left_out: list[str]) -> str:
    named = ", ".join(left_out[:12]) + (f" and {len(left_out) - 12} more" if len(left_out) > 12 else "")
    return f"Not drawn ({len(left_out)} class(es) with fewer labels): {named}; the report lists every class."


def png_bytes(calibration: Any) -> bytes:
    """The diagram as PNG bytes: overall reliability and precision/recall on top, then a small reliability
    panel per class (the most labelled first, at most ``MAX_CLASS_PANELS``; the others named beneath)."""
    from matplotlib.figure import Figure

    report = calibration.overall
    shown, left_out = shown_classes(calibration)
    rows = -(-len(shown) // _PER_ROW)
    height = 4.6 + 2.6 * rows + (0.3 if left_out else 0)
    # not pyplot: no global state, safe in the App server's threads
    figure = Figure(figsize=(11, height), layout="constrained")
    grid = figure.add_gridspec(1 + rows, 2 * _PER_ROW, height_ratios=[4.2] + [2.4] * rows)
    left, right = figure.add_subplot(grid[0, :_PER_ROW]), figure.add_subplot(grid[0, _PER_ROW:])
    _reliability(left, report, _TITLE)
    thresholds = [p.threshold for p in report.curve]
    right.plot(thresholds, [p.precision for p in report.curve], color="#f58518", label="precision")
    right.plot(thresholds, [p.recall or 0 for p in report.curve], color="#54a24b", label="recall")
    right.axhline(calibration.settings["target_precision"], color="grey", linestyle=":", label="target")
    right.axvline(report.threshold, color="black", linestyle="--", label=f"threshold {report.threshold:.3f}")
    crowded = _crowded_bin(report)  # where the reliability panel zooms, and the chosen threshold always shown
    low = max(0.0, min(crowded.lower, report.threshold - 0.01)) if crowded else 0.0
    right.set(xlim=(low, 1), ylim=(0, 1.05), xlabel="threshold", ylabel="on the slice", title=_CURVE_TITLE)
    right.legend(loc="lower left", fontsize=8)
    for i, class_report in enumerate(shown):
        row, col = 1 + i // _PER_ROW, 2 * (i % _PER_ROW)
        _reliability(figure.add_subplot(grid[row, col : col + 2]), class_report, _class_title(class_report), True)
    figure.suptitle(_title(calibration), fontsize=10)
    if left_out:
        figure.supxlabel(_left_out_note(left_out), fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()
