"""``python -m benchmarks.autolabel`` runs its whole loop on tiny sizes and reports every seed and target.

Figures are not checked (a few scenes say nothing); only that each step ran and each row is printed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import autolabel  # noqa: E402


def test_the_loop_runs_and_reports_every_target(tmp_path, capsys):
    argv = ["--pool", "20", "--test", "2", "--seeds", "3", "--finetune-steps", "1", "--batch-size", "2",
            "--workdir", str(tmp_path), "--output", ""]  # fmt: skip
    assert autolabel.main(argv) == 0
    printed = capsys.readouterr().out
    assert "## Auto-labelling loop" in printed and "**Reached:**" in printed
    for seed in (3,):
        for target in ("0.9", "0.95"):
            assert any(line.startswith(f"| {seed} | {target} |") for line in printed.splitlines()), (seed, target)
    summary = json.loads((tmp_path / "autolabel.json").read_text())
    for run in summary["runs"]:
        assert run["pool"] == 20 and run["reviewed_samples"] == 2 and run["unseen_samples"] == 18
        # One of the two reviewed samples validates the round; the start is kept unless the round beats it there.
        assert run["val_samples"] == 1
        for found in (run["round"], run["ceiling"]):
            assert found["kept"] == (found["val_round"] > found["val_start"])
        assert run["labelled"] == 20 and run["train_samples"] >= 1  # at least the reviewed slice trains
        assert all(0 <= run[key] <= 1 for key in ("map_before", "map_after", "map_ceiling"))
    # The saved figures render the same section again, into a file's own section, without running anything.
    out = tmp_path / "BENCH.md"
    assert autolabel.main(["--from-results", str(tmp_path / "autolabel.json"), "--output", str(out)]) == 0
    written = out.read_text()
    assert "<!-- benchmark-run: autolabel -->" in written and "**Why:**" in written
    assert written.count("| 3 | 0.95 |") == 1
    assert " kept |" in written  # the round's validation is shown
