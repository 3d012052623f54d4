"""The shipped seeing model, fine-tuned through ``train()`` on a kind of image it never saw, learns it.

The new kind is a colour it was never shown (purple) on its three shapes: before fine-tuning it cannot name
those objects, so its mAP@0.5 on held-out purple scenes is near 0; a short fine-tune teaches it. The figures
measured with this recipe are in BENCHMARKS.md ("Fine-tuning the shipped seeing model").
"""

from __future__ import annotations

import pytest

from benchmarks.train_seeing import held_out_map, new_kind_datasets

STEPS = 150


@pytest.mark.slow
def test_the_shipped_model_learns_a_colour_it_never_saw(tmp_path):
    import fiftyone_florence2 as f2

    train, test = new_kind_datasets(tmp_path, train_images=STEPS * 8, test_images=32)
    before = held_out_map(test, f2.SEEING_NAME)
    result = f2.train(train, task="detection", output_dir=str(tmp_path / "run"), model=f2.SEEING_NAME,
                      max_steps=STEPS, batch_size=8, learning_rate=1e-3, lr_schedule="cosine", max_grad_norm=0,
                      save_steps=STEPS, device="cpu", progress=False)  # fmt: skip
    after = held_out_map(test, result.output_dir)
    assert before < 0.02 and after >= 0.4, (before, after)  # measured: 0.000 -> 0.737


@pytest.mark.parametrize(
    ("given", "expected"),
    [("florence2-seeing-tiny", "shipped"), (" florence2-seeing-tiny ", "shipped"), ("florence2-seeing", ValueError)],
)
def test_the_shipped_models_name_loads_its_package_folder(given, expected):
    from fiftyone_florence2.core.checkpoints import resolve_checkpoint
    from fiftyone_florence2.core.seeing import SEEING_DIR, seeing_checkpoint

    if expected is ValueError:
        with pytest.raises(ValueError, match="is not a directory that exists"):
            resolve_checkpoint(given)
        return
    assert resolve_checkpoint(given) == str(SEEING_DIR) == str(seeing_checkpoint())
    assert (SEEING_DIR / "model.safetensors").stat().st_size < 10_000_000


def test_a_missing_shipped_model_says_to_reinstall(tmp_path, monkeypatch):
    from fiftyone_florence2.core import seeing

    monkeypatch.setattr(seeing, "SEEING_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"florence2-seeing-tiny checkpoint is missing .* reinstall"):
        seeing.seeing_checkpoint()
