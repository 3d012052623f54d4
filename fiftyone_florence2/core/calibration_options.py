"""The options of a calibration, declared once as the run options are. Standard library only.

``calibrate()``, ``florence2 calibrate``, the App's calibration form and ``docs/OPTIONS.md`` derive
from :data:`CALIBRATE_OPTIONS`.
"""

from __future__ import annotations

from typing import Any

from fiftyone_florence2.core.options import Option, boolean, field_name, finite_number, whole_number

# Below about 50 labels, a precision measured on the slice is ±0.03 or worse at the usual targets.
DEFAULT_MIN_PER_CLASS = 50
# A threshold that accepts fewer slice labels than this does not count as reaching a target.
DEFAULT_MIN_ACCEPTED = 20


def above_zero_to_one(name: str, value: Any) -> float:
    """A number in (0, 1]: an IoU to count a match, or a precision to reach."""
    number = finite_number(name, value, "a number above 0 and at most 1")
    if not 0 < number <= 1:
        raise ValueError(f"{name} must be above 0 and at most 1, got {value!r}.")
    return number


def run_key(name: str, value: Any) -> str:
    """A run key: letters, digits and underscores, starting with a letter."""
    return field_name(name, value, nested=False)


CALIBRATE_OPTIONS: tuple[Option, ...] = (
    Option("pred_field", None, "the field of predictions to calibrate (Detections, Polylines or Classification)",
           "field", field_name, group="run", label="Predictions field"),
    Option("gt_field", None, "the field of ground truth a person has checked, of the same type", "field",
           field_name, group="run", label="Ground truth field"),
    Option("iou", 0.5, "the intersection over union at which a box or polygon matches a ground-truth object "
           "(above 0, at most 1)", "float", above_zero_to_one, group="run", label="IoU"),
    Option("target_precision", 0.95, "the share of accepted labels that must be right (above 0, at most 1): "
           "the threshold reaching it with the most recall is picked, per class and overall", "float",
           above_zero_to_one, group="run", label="Target precision"),
    Option("bins", 10, "equal-width confidence bins of the reliability table", "int", whole_number, group="run",
           label="Bins"),
    Option("min_per_class", DEFAULT_MIN_PER_CLASS, "a class with fewer predictions on the slice takes the overall "
           "threshold", "int", whole_number, group="run", label="Fewest labels for a class threshold"),
    Option("min_accepted", DEFAULT_MIN_ACCEPTED, "a threshold must accept at least this many of the slice's "
           "labels to count as reaching the target (a precision measured on a few labels says little)", "int",
           whole_number, group="run", label="Fewest labels a threshold accepts"),
    Option("key", None, "the run key to record the calibration under (default: florence2_calibrate_<time>_<field>)",
           "text", run_key, group="run", label="Run key"),
    Option("plot_path", None, "save the reliability diagram as a PNG here", "text", group="run", flag="--plot",
           form=False),
    Option("overwrite", False, "replace a calibration recorded under the same key, and the plot file", "bool",
           boolean, group="run"),
)  # fmt: skip

CALIBRATE: dict[str, Option] = {option.name: option for option in CALIBRATE_OPTIONS}
