"""The auto-labelling refusals in each route's words: Python argument names become CLI flags or App form labels."""

from __future__ import annotations

import re

# Python argument -> (CLI flag, App form label).
CONTROLS = {
    "pred_field": ("--field", '"Predictions field"'),
    "gt_field": ("--gt-field", '"Checked labels field"'),
    "thresholds": ("--thresholds", '"Thresholds"'),
    "calibration": ("--calibration", '"Calibration"'),
    "bands": ("--bands", '"Bands"'),
    "reviewed_tags": ("--reviewed-tag", '"Reviewed tag"'),
    "reviewed_field": ("--reviewed-field", '"Reviewed field"'),
    "accepted_tags": ("--accepted-tag", '"Accepted tag"'),
    "key": ("--key", '"Run key"'),
    "recalibrated": ("--recalibrated", '"Band by recalibrated confidence"'),
    "into": ("--into", '"Into field"'),
}
# Python's ``name=True`` -> (CLI flag, App checkbox ticked).
_TICKED = {
    "overwrite": ("--overwrite", '"Overwrite" ticked'),
    "partial": ("--partial", '"Partly accepted samples too" ticked'),
}
# A plain word is an argument only where it is used as one: before "=", ":", "[" or a verb about it.
_AFTER = r"(?==|:|\[| must| needs| leave| gives)"


def in_route_words(message: str, route: str) -> str:
    """``message`` (Python's wording) with each argument named as ``route`` (``"cli"`` or ``"app"``) shows it."""
    if route not in ("cli", "app"):
        return message
    for name, ticked in _TICKED.items():
        message = message.replace(f"{name}=True", ticked[route == "app"])
    for name, controls in CONTROLS.items():
        control = controls[route == "app"]
        pattern = rf"\b{name}\b" if "_" in name else rf"\b{name}{_AFTER}"
        message = re.sub(pattern + r"=?", control, message)
    return message
