"""Option values as users send them: Python values, form values and text."""

from __future__ import annotations

import pytest

from fiftyone_florence2.core.options import boolean


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        (None, False),
        (1, True),
        (0, False),
        ("true", True),
        ("True", True),
        (" yes ", True),
        ("on", True),
        ("1", True),
        ("false", False),
        ("False", False),
        ("no", False),
        ("off", False),
        ("0", False),
        ("", False),
        ("maybe", ValueError),
        (2, ValueError),
        (0.5, ValueError),
        ([True], ValueError),
    ],
)
def test_boolean(value, expected):
    if expected is ValueError:
        with pytest.raises(ValueError, match="overwrite must be true or false"):
            boolean("overwrite", value)
    else:
        assert boolean("overwrite", value) is expected
