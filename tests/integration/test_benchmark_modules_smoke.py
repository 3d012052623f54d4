"""The standalone benchmarks (form latency, preprocessing, embeddings, tiles, training) run end to end on small sizes.

Timings are not checked; only that every row is measured and printed.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import embeddings, form_latency, preprocess, tiles, train_speed, train_tiny  # noqa: E402


def test_form_latency_prints_every_form_state(capsys):
    assert form_latency.main(["--samples", "200", "--calls", "1", "--no-cache", "--output", ""]) == 0
    printed = capsys.readouterr().out
    assert "## Operator form latency, 200 samples" in printed
    assert "### Where resolve_input's time goes" in printed
    tables = printed[printed.index("## Operator form latency") :]
    for name in ("defaults: caption", "caption → new field", "caption → existing field, skip_existing=False",
                 "caption → existing field, skip_existing=True", "current view", "region_to_category"):  # fmt: skip
        assert tables.count(f"| {name}") == 2, name
    # The cached-dataset flag deletes nothing it did not make.
    assert form_latency.main(["--samples", "200", "--delete"]) == 0
    assert "no dataset florence2-form-latency-200" in capsys.readouterr().out


def test_preprocess_times_both_backends(tmp_path, capsys):
    assert preprocess.main(["--calls", "1", "--warmup", "0", "--workdir", str(tmp_path), "--output", ""]) == 0
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith(("| 64x64", "| 768x768"))]
    assert len(rows) == 4
    assert "CLIPImageProcessorPil" in printed and "image_processing_clip.CLIPImageProcessor`" in printed


def test_embeddings_times_runs_with_and_without_the_field(tmp_path, capsys):
    argv = ["--images", "4", "--batch-size", "2", "--repeats", "2", "--new-tokens", "2", "--beams", "1",
            "--workdir", str(tmp_path), "--output", ""]  # fmt: skip
    assert embeddings.main(argv) == 0
    printed = capsys.readouterr().out
    assert "## Storing embeddings while labelling (tiny random model, cpu)" in printed
    assert [line[:4] for line in printed.splitlines() if line.startswith(("| 1 |", "| 2 |"))] == ["| 1 ", "| 2 "]
    assert "**Cost of storing embeddings:" in printed


def test_tiles_times_every_grid_and_the_merge(tmp_path, capsys):
    argv = ["--shapes", "tiny", "--grids", "1,2", "--images", "1", "--boxes-per-side", "2"]
    assert tiles.main([*argv, "--workdir", str(tmp_path), "--output", ""]) == 0
    printed = capsys.readouterr().out
    assert "## Tiles: vision time against the grid" in printed and "### tiny shape" in printed
    rows = [line for line in printed.splitlines() if line.startswith(("| 1 x 1 | 1 |", "| 2 x 2 | 4 |"))]
    assert len(rows) == 2
    assert rows[1].endswith("| 9 |")  # 4 boxes in each of 4 tiles, those that meet in the overlaps merged
    assert "The merge's largest share of a run" in printed


def test_train_tiny_trains_validates_and_scores(tmp_path, capsys):
    argv = ["--target", "multi", "--max-steps", "2", "--batch-size", "2", "--val-images", "2", "--test-images", "2",
            "--evaluations", "1", "--workdir", str(tmp_path), "--output", ""]  # fmt: skip
    assert train_tiny.main(argv) == 0
    printed = capsys.readouterr().out
    assert "## Fine-tuning learns: 1-4 shapes (square, disk, triangle) per image" in printed
    assert "**Target (mAP@0.5 >= 0.6): NOT met**" in printed  # two steps from random weights
    assert "| mean IoU of each object's best box |" in printed and "| step | lr | train loss |" in printed


def test_train_speed_runs_each_mode_in_its_own_process(tmp_path, capsys):
    argv = ["--shapes", "tiny", "--modes", "lora", "--steps", "1", "--batch-size", "2", "--workdir", str(tmp_path),
            "--output", ""]  # fmt: skip
    assert train_speed.main(argv) == 0
    printed = capsys.readouterr().out
    assert "## Training speed: full vs frozen vision vs LoRA (cpu)" in printed
    row = next(line for line in printed.splitlines() if line.startswith("| tiny | lora |"))
    assert "failed" not in row and row.endswith(" MiB |")
