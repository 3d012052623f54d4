"""A labelling run the interrupt tests start, watch and kill: ``python label_driver.py DATASET CHECKPOINT``.

Each sample's answer is forced from its ``name`` field (derived from the
image's file name), so that labels differ from sample to sample and a label
written to the wrong sample, twice, or differently after a resume shows.
Decoding is greedy, hence deterministic.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# The tests folder (helpers.force) and the repository root (support/, which helpers imports).
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2])]

FIELD = "grounded"


def name_for(filepath: str) -> str:
    """The phrase a sample is asked about: ``object <n>`` for ``img_<n>.png``."""
    return "object " + Path(filepath).stem.split("_")[-1]


def answer_for(phrase: str) -> str:
    """Two boxes for the phrase, placed by its number: one label followed by several boxes."""
    n = int(phrase.rsplit(" ", 1)[-1])
    x, y = (37 * n) % 500, (91 * n) % 500
    first = f"<loc_{x}><loc_{y}><loc_{x + 100 + n % 300}><loc_{y + 250}>"
    second = f"<loc_{600 + n % 300}><loc_{x // 2}><loc_999><loc_{x // 2 + 1 + n}>"
    return phrase + first + second


def build_model(checkpoint: str, delay: float = 0.0):
    """Phrase grounding on each sample's ``name``, answers forced; ``delay`` seconds per generate call."""
    from fiftyone_florence2 import load_model
    from helpers import force

    model = load_model("phrase_grounding", model=checkpoint, prompt_field="name", num_beams=1)
    forced = force(model.runner.tokenizer, lambda task, question: answer_for(question.split(": ", 1)[1]))

    def generate_kwargs(task, questions):
        time.sleep(delay)  # keeps the run long enough to be killed in the middle
        return forced(task, questions)

    model.config.generate_kwargs = generate_kwargs
    return model


def run(dataset_name: str, checkpoint: str, batch_size: int, skip_existing: bool, delay: float):
    import fiftyone as fo

    from fiftyone_florence2.runs.labelling import label_samples

    dataset = fo.load_dataset(dataset_name)
    model = build_model(checkpoint, delay)
    return label_samples(dataset, model, FIELD, batch_size=batch_size, skip_existing=skip_existing, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset")
    parser.add_argument("checkpoint")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--skip-existing", action="store_true")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    summary = run(args.dataset, args.checkpoint, args.batch_size, args.skip_existing, args.delay)
    print(json.dumps({"labelled": summary.labelled, "skipped": summary.skipped, "failures": summary.failures}))


if __name__ == "__main__":
    main()
