"""``florence2 calibrate``: a thin adapter over :func:`~fiftyone_florence2.autolabel.calibrate.calibrate`."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from fiftyone_florence2.core.calibration_options import CALIBRATE_OPTIONS
from fiftyone_florence2.core.errors import Florence2Error, for_route


def add_calibrate_parser(sub: argparse._SubParsersAction, add_option: Callable[..., None]) -> None:
    """The ``calibrate`` command's arguments, from the declared options (``add_option``: the CLI's own)."""
    parser = sub.add_parser(
        "calibrate",
        help="measure how far a field's confidences can be trusted on reviewed samples, and pick thresholds",
    )
    parser.add_argument("--dataset", required=True, metavar="NAME", help="the FiftyOne dataset")
    parser.add_argument("--view", metavar="NAME", help="a saved view of the reviewed samples (default: every sample)")
    for option in CALIBRATE_OPTIONS:
        add_option(parser, option)


def run_calibrate(samples, options: dict, usage_error: type[Florence2Error]) -> int:
    """Calibrates ``samples``, prints the report, the thresholds as --confidence-thresh takes them, and the
    plot's path. ``options``: the flags given; ``usage_error``: what the CLI prints as one line (status 2)."""
    from fiftyone_florence2.autolabel.calibrate import calibrate

    try:
        result = calibrate(samples, options.pop("pred_field", None), options.pop("gt_field", None), **options)
    except (TypeError, ValueError) as e:
        raise usage_error(for_route(e, "cli")) from None
    print(result.describe())
    text = ",".join(f"{name}={value:.4g}" for name, value in result.thresholds.items())
    print(f"Label with these thresholds:  --confidence-thresh '{text}'")
    if options.get("plot_path"):
        print(f"Diagram: {options['plot_path']}")
    return 0
