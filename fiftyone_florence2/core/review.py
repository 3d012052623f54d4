"""Review bands: which band a label's confidence falls in, given its class's threshold. Standard library only.

Bands tile the confidences from 0 to 1, each from its lower bound (included) to its upper bound (excluded;
the top band includes 1). They are written for one threshold, the top band's lower bound: with the default
bands that is 0.7, so a threshold of 0.7 gives the review bands themselves (0.7-1 accept, 0.5-0.7 careful
review, 0.3-0.5 only obvious cases, below 0.3 reject). A class whose threshold is ``t`` gets the same bands
scaled: its accept band starts at ``t``. Below a threshold of 0.7, every lower bound is multiplied by
``t / 0.7``; above it, the lower bounds stay where they are and the band under the accept band widens up
to ``t``: a stricter threshold sends more labels to a person, never more to rejection unseen (a target
no threshold reaches gives a threshold of 1, which then accepts nothing and rejects no more than usual).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fiftyone_florence2.core.thresholds import Thresholds


@dataclass(frozen=True)
class Band:
    """A named range of confidences, ``low <= confidence < high`` (the top band includes 1)."""

    name: str
    low: float
    high: float


DEFAULT_BANDS: tuple[Band, ...] = (
    Band("accepted", 0.7, 1.0),
    Band("review", 0.5, 0.7),
    Band("skim", 0.3, 0.5),
    Band("rejected", 0.0, 0.3),
)


def _bound(name: str, band: str, value: Any) -> float:
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: band {band!r} needs numbers from 0 to 1, got {value!r}.") from None
    if isinstance(value, bool) or not math.isfinite(number) or not 0 <= number <= 1:
        raise ValueError(f"{name}: band {band!r} needs numbers from 0 to 1, got {value!r}.")
    return number


def _pairs_from_text(name: str, text: str) -> dict[str, tuple[str, str]]:
    """``"accepted=0.7-1,review=0.5-0.7"`` as ``{band: (low, high)}`` texts."""
    pairs: dict[str, tuple[str, str]] = {}
    for part in (part.strip() for part in text.split(",")):
        if not part:
            continue
        band, sep, span = part.partition("=")
        low, dash, high = span.partition("-")
        if not sep or not dash or not band.strip():
            raise ValueError(f"{name}: write each band as NAME=LOW-HIGH (e.g. review=0.5-0.7), got {part!r}.")
        if band.strip() in pairs:
            raise ValueError(f"{name} gives band {band.strip()!r} more than once.")
        pairs[band.strip()] = (low, high)
    return pairs


def check_tiling(name: str, bands: list[Band]) -> tuple[Band, ...]:
    """The bands from the highest down; raises ``ValueError`` when they overlap, leave a gap, or are empty."""
    if len(bands) < 2:
        raise ValueError(f"{name} needs at least two bands (one to accept, one for the rest).")
    ordered = sorted(bands, key=lambda band: band.low)
    for band in ordered:
        if band.low >= band.high:
            raise ValueError(f"{name}: band {band.name!r} is empty ({band.low:g}-{band.high:g}); write LOW-HIGH.")
    if ordered[0].low != 0 or ordered[-1].high != 1:
        raise ValueError(f"{name} must cover every confidence from 0 to 1; they cover {_span(ordered)}.")
    for below, above in itertools.pairwise(ordered):
        if below.high > above.low:
            raise ValueError(f"{name}: bands {below.name!r} and {above.name!r} overlap ({_span([below, above])}).")
        if below.high < above.low:
            raise ValueError(f"{name} leave a gap between {below.name!r} and {above.name!r} ({_span([below, above])}).")
    if ordered[-1].low == 0:
        raise ValueError(f"{name}: the top band {ordered[-1].name!r} takes every confidence.")
    return tuple(reversed(ordered))


def _span(bands: list[Band]) -> str:
    return ", ".join(f"{band.name}={band.low:g}-{band.high:g}" for band in bands)


def read_bands(name: str, value: Any) -> tuple[Band, ...]:
    """``value`` as bands from the highest down: None (the default bands), ``{band: (low, high)}``, bands, or
    text ``"accepted=0.7-1,review=0.5-0.7,..."``; raises ``ValueError`` naming ``name`` for anything else."""
    if value is None:
        return DEFAULT_BANDS
    if isinstance(value, str):
        value = _pairs_from_text(name, value)
    if isinstance(value, Mapping):
        bands = []
        for band, span in value.items():
            if not isinstance(band, str) or not band.strip():
                raise ValueError(f"{name}: band names must be non-empty texts, got {band!r}.")
            if isinstance(span, str) or not isinstance(span, (list, tuple)) or len(span) != 2:
                raise ValueError(f"{name}: band {band!r} needs (low, high), got {span!r}.")
            bands.append(Band(band.strip(), _bound(name, band, span[0]), _bound(name, band, span[1])))
        return check_tiling(name, bands)
    if isinstance(value, Iterable) and all(isinstance(band, Band) for band in value):
        return check_tiling(name, list(value))
    raise ValueError(f"{name} must map band names to (low, high), or be text NAME=LOW-HIGH,..., got {value!r}.")


def bands_as_value(bands: tuple[Band, ...]) -> dict[str, list[float]]:
    """The JSON form of bands (passable back to :func:`read_bands`)."""
    return {band.name: [band.low, band.high] for band in bands}


def scaled_low(band: Band, bands: tuple[Band, ...], threshold: float) -> float:
    """``band``'s lower bound for a class whose accept threshold is ``threshold``."""
    top = bands[0]
    return threshold if band is top else band.low * min(1.0, threshold / top.low)


def band_of(confidence: float | None, threshold: float, bands: tuple[Band, ...]) -> str:
    """The name of the band ``confidence`` falls in, for a class whose threshold is ``threshold``. A label with
    no confidence (a person or another tool wrote it) falls in the second band from the top, the careful
    review: nothing says it is right, nor that it is wrong."""
    if confidence is None:
        return bands[1].name
    for band in bands:
        if confidence >= scaled_low(band, bands, threshold):
            return band.name
    return bands[-1].name


def label_band(confidence: float | None, label: str | None, thresholds: Thresholds, bands: tuple[Band, ...]) -> str:
    """The band of a label of class ``label``; raises ``ValueError`` for a class with no threshold."""
    return band_of(confidence, thresholds.for_class(label), bands)


def calibrated_band(raw: float | None, calibrated: float | None, raw_threshold: float, calibrated_threshold: float,
                    bands: tuple[Band, ...]) -> str:  # fmt: skip
    """The band of a label by its recalibrated confidence, the bands scaled to ``calibrated_threshold`` (the
    raw threshold through the same monotone mapping). The top band still takes exactly the labels whose raw
    confidence clears ``raw_threshold``, as ``confidence_thresh`` would: the threshold's precision was
    measured on raw confidences, and a flat stretch of the mapping must not let lower ones in."""
    if raw is not None and raw >= raw_threshold:
        return bands[0].name
    band = band_of(calibrated, calibrated_threshold, bands)
    return bands[1].name if band == bands[0].name else band


def uncertainty(confidences: Iterable[float | None]) -> float | None:
    """How uncertain the least certain of ``confidences`` is: 1 minus the lowest (a missing confidence counts
    as 0: nothing vouches for that label, so its sample comes first); None when there are none."""
    values = [0.0 if confidence is None else confidence for confidence in confidences]
    return round(1.0 - min(values), 6) if values else None
