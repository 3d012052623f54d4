"""The auto-labelling refusals in each route's words."""

from __future__ import annotations

import pytest

from fiftyone_florence2.autolabel.wording import in_route_words


@pytest.mark.parametrize(
    ("message", "route", "expected"),
    [
        ("Give thresholds= (e.g. 0.7) or calibration= (a calibration key).", "cli",
         "Give --thresholds (e.g. 0.7) or --calibration (a calibration key)."),
        ("Give thresholds= (e.g. 0.7) or calibration= (a calibration key).", "app",
         'Give "Thresholds" (e.g. 0.7) or "Calibration" (a calibration key).'),
        ("pred_field: no field 'x' here.", "cli", "--field: no field 'x' here."),
        ("reviewed_tags 'review' is also a band's name", "app", "\"Reviewed tag\" 'review' is also a band's name"),
        ("bands leave a gap between 'a' and 'b'", "cli", "--bands leave a gap between 'a' and 'b'"),
        ("thresholds['car'] must be from 0 to 1", "cli", "--thresholds['car'] must be from 0 to 1"),
        ("A run 'k' is taken: or pass overwrite=True.", "cli", "A run 'k' is taken: or pass --overwrite."),
        ("A run 'k' is taken: or pass overwrite=True.", "app", 'A run \'k\' is taken: or pass "Overwrite" ticked.'),
        ("the review queue keeps the key of a calibration", "cli", "the review queue keeps the key of a calibration"),
        ("Give thresholds= or calibration=.", "python", "Give thresholds= or calibration=."),
        ("", "cli", ""),
    ],
)  # fmt: skip
def test_arguments_are_named_as_the_route_shows_them(message, route, expected):
    assert in_route_words(message, route) == expected
