"""``python -m benchmarks.autolabel``'s own arguments: the scenes' object count and the fine-tuning round's
options, with a one-line refusal for values that make no run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import autolabel  # noqa: E402
from benchmarks.autolabel_report import shapes  # noqa: E402


@pytest.mark.parametrize(
    ("argv", "name", "expected"),
    [
        ([], "max_objects", 3),
        (["--max-objects", "1"], "max_objects", 1),
        (["--max-objects", "5"], "max_objects", 5),
        ([], "finetune_val", 0.3),
        (["--finetune-val", "0"], "finetune_val", 0.0),
        (["--finetune-evals", "3"], "finetune_evals", 3),
        ([], "fractions", None),
        (["--fractions", "0.08,0.16"], "fractions", [0.08, 0.16]),
        (["--fractions", "0.1,0.1"], "fractions", [0.1, 0.1]),
    ],
)
def test_the_options_parse(argv, name, expected):
    assert getattr(autolabel.parse_args(argv), name) == expected


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--max-objects", "0"], "--max-objects must be at least 1"),
        (["--max-objects", "-2"], "--max-objects must be at least 1"),
        (["--finetune-target", "0.7"], "--finetune-target must be one of --targets"),
        (["--finetune-val", "1"], "--finetune-val must be from 0 to below 1"),
        (["--finetune-val", "-0.1"], "--finetune-val must be from 0 to below 1"),
        (["--finetune-evals", "0"], "--finetune-evals must be at least 1"),
        (["--fractions", "0.2,0.1"], "--fractions must be LOW,HIGH with 0 < LOW <= HIGH <= 1"),
        (["--fractions", "0,0.1"], "--fractions must be LOW,HIGH"),
        (["--fractions", "0.1"], "--fractions must be LOW,HIGH"),
        (["--fractions", "0.1,0.2,0.3"], "--fractions must be LOW,HIGH"),
        (["--fractions", "0.5,1.5"], "--fractions must be LOW,HIGH"),
        (["--fractions", "small,big"], "--fractions must be LOW,HIGH"),
    ],
)
def test_values_that_make_no_run_are_refused_in_one_line(argv, says, capsys):
    with pytest.raises(SystemExit):
        autolabel.parse_args(argv)
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert says in error


@pytest.mark.parametrize(("max_objects", "expected"), [(1, "1 shape"), (3, "1-3 shapes"), (10, "1-10 shapes")])
def test_the_report_names_the_scenes_object_count(max_objects, expected):
    assert shapes(max_objects) == expected


@pytest.mark.parametrize(("fractions", "key"), [(None, "autolabel"), ([0.08, 0.16], "autolabel-small-shapes")])
def test_each_kind_of_pool_has_its_own_section(fractions, key):
    assert autolabel.section_key(fractions) == key
