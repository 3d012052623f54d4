"""The training progress bar: steps, loss, samples per second, and each validation's score."""

from __future__ import annotations

import time
from typing import Any

from transformers import TrainerCallback
from transformers.utils import logging as hf_logging


class ProgressBar(TrainerCallback):
    """A tqdm bar over optimizer steps whose postfix shows the loss and samples/s (off: silent).

    While it shows, transformers' own bars (each checkpoint's "Writing model
    shards", the best checkpoint's "Loading weights") are off, so that they
    do not break into its line.
    """

    def __init__(self, enabled: bool, samples_per_step: int):
        self.enabled, self.samples_per_step = enabled, samples_per_step
        self.bar, self.started, self.first_step = None, None, 0
        self.library_bars_were_on = False
        self.postfix: dict[str, str] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if self.enabled and self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, unit="step", desc="florence2 train")
            self.library_bars_were_on = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
        self.started, self.first_step = time.monotonic(), state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)
            seconds = time.monotonic() - self.started
            if seconds > 0:
                rate = (state.global_step - self.first_step) * self.samples_per_step / seconds
                self.postfix["samples/s"] = f"{rate:.1f}"
            self.bar.set_postfix(self.postfix, refresh=False)

    def update(self, entry: dict[str, Any], state: Any) -> None:
        """Shows a logged step's loss, or a validation's score."""
        loss = entry.get("loss", entry.get("train_loss"))
        if loss is not None:
            self.postfix["loss"] = f"{loss:.4f}"
        if "eval_score" in entry:
            self.postfix["val score"] = f"{entry['eval_score']:.3f}"
        if self.bar is not None:
            self.bar.set_postfix(self.postfix)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            if self.library_bars_were_on:
                hf_logging.enable_progress_bar()
