"""``florence2 review``, ``florence2 recalibrate`` and ``florence2 training-labels``: the review queue, the
recalibrated confidences and the labels to fine-tune on.

Thin adapters over :func:`~fiftyone_florence2.autolabel.queue.review_queue`,
:func:`~fiftyone_florence2.autolabel.recalibrate.recalibrate` and
:func:`~fiftyone_florence2.autolabel.loop.training_labels`; refusals name the
flags.
"""

from __future__ import annotations

import argparse
import json
import shlex
from typing import Any

from fiftyone_florence2.core.errors import Florence2Error


class AutolabelUsageError(Florence2Error, ValueError):
    """Arguments that cannot work; printed as one line, exit status 2."""


def add_parsers(sub: Any) -> None:
    """Adds the ``review`` and ``training-labels`` commands to the ``florence2`` parser's subcommands."""
    review = sub.add_parser("review", help="tag predicted labels accepted / review / rejected and save a view per band")
    _common(review)
    given = review.add_mutually_exclusive_group()
    given.add_argument("--thresholds", metavar="T", help="0.7, or per class: car=0.8,*=0.6 (a class's accept bound)")
    given.add_argument("--calibration", metavar="KEY", help="use the thresholds of this calibration run")
    review.add_argument(
        "--bands", metavar="NAME=LOW-HIGH,...",
        help="bands tiling 0-1, for a threshold equal to the top band's low bound "
        "(default: accepted=0.7-1,review=0.5-0.7,skim=0.3-0.5,rejected=0-0.3)",
    )  # fmt: skip
    review.add_argument("--reviewed-field", metavar="FIELD", help="a sample field or label attribute marking reviewed")
    review.add_argument("--key", metavar="RUN_KEY", help="the run key to record the queue under (default: a new one)")
    review.add_argument("--overwrite", action="store_true", help="replace the review queue recorded under --key, "
                        "and calibrated confidences another calibration wrote")  # fmt: skip
    review.add_argument("--recalibrated", action="store_true", help="band and order by the --calibration's "
                        "recalibrated confidences instead of the raw ones (acceptance still needs the raw "
                        "threshold)")  # fmt: skip

    recalibrate = sub.add_parser(
        "recalibrate", help="write each label's recalibrated confidence (calibrated_confidence) from a calibration"
    )
    _common(recalibrate, reviewed=False)
    recalibrate.add_argument("--calibration", required=True, metavar="KEY", help="the calibration whose mapping to use")
    recalibrate.add_argument("--overwrite", action="store_true", help="replace calibrated confidences another "
                             "calibration wrote")  # fmt: skip

    labels = sub.add_parser("training-labels", help="copy reviewed and accepted labels into a new field to train on")
    _common(labels)
    labels.add_argument("--into", required=True, metavar="FIELD", help="the new field to copy them into")
    labels.add_argument("--gt-field", metavar="FIELD", help="the checked labels of the samples tagged reviewed")
    labels.add_argument("--accepted-tag", action="append", metavar="TAG", help="label tag to learn from (accepted)")
    labels.add_argument("--overwrite", action="store_true", help="replace a field this command wrote before")
    labels.add_argument("--partial", action="store_true", help="also learn from samples with only some labels "
                        "accepted or reviewed (left out by default: their other objects would be learnt as "
                        "nothing)")  # fmt: skip


def _common(parser: argparse.ArgumentParser, reviewed: bool = True) -> None:
    parser.add_argument("--dataset", required=True, metavar="NAME", help="the FiftyOne dataset")
    parser.add_argument("--field", required=True, metavar="FIELD", help="the predictions field (e.g. predictions)")
    parser.add_argument("--view", metavar="NAME", help="a saved view of the dataset to work on (default: all of it)")
    if reviewed:
        parser.add_argument("--reviewed-tag", action="append", metavar="TAG",
                            help="tag marking what a person reviewed (default: reviewed)")  # fmt: skip


def samples_of(args: argparse.Namespace, error: type[Exception] = AutolabelUsageError) -> Any:
    """The dataset ``--dataset`` names, or its saved view ``--view``; ``error`` for either that is missing."""
    import fiftyone as fo

    if not fo.dataset_exists(args.dataset):
        raise error(f"No FiftyOne dataset named {args.dataset!r}.")
    dataset = fo.load_dataset(args.dataset)
    if getattr(args, "view", None) is not None and not dataset.has_saved_view(args.view):
        views = ", ".join(dataset.list_saved_views()) or "none"
        raise error(f"Dataset {args.dataset!r} has no saved view {args.view!r}; saved views: {views}.")
    return dataset.load_saved_view(args.view) if getattr(args, "view", None) else dataset


def run(args: argparse.Namespace) -> int:
    """Runs ``review``, ``recalibrate`` or ``training-labels``; a refusal is raised as one line in the flags' words."""
    from fiftyone_florence2.autolabel.wording import in_route_words

    samples = samples_of(args)
    commands = {"review": _review, "recalibrate": _recalibrate, "training-labels": _training_labels}
    try:
        return commands[args.command](samples, args)
    except ValueError as e:
        raise AutolabelUsageError(in_route_words(str(e), "cli")) from None


def _review(samples: Any, args: argparse.Namespace) -> int:
    from fiftyone_florence2.autolabel.queue import REVIEWED, review_queue

    queue = review_queue(
        samples, args.field, thresholds=args.thresholds, bands=args.bands, calibration=args.calibration,
        reviewed_tags=args.reviewed_tag or REVIEWED, reviewed_field=args.reviewed_field, key=args.key,
        overwrite=args.overwrite, recalibrated=args.recalibrated,
    )  # fmt: skip
    print(queue.describe())
    for band, name in queue.views.items():
        print(f"  {band:<10} {queue.counts[band]:>6} label(s)  saved view {name!r} (least certain first)")
    print(f"Least certain first over the whole dataset: sort by {queue.uncertainty_field!r}, highest first.")
    return 0


def _recalibrate(samples: Any, args: argparse.Namespace) -> int:
    from fiftyone_florence2.autolabel.recalibrate import CALIBRATED, recalibrate

    written = recalibrate(samples, args.field, args.calibration, overwrite=args.overwrite)
    print(f"Wrote {CALIBRATED} on {written} label(s) of {args.field!r} from calibration {args.calibration!r} "
          "(confidence kept as it was).")  # fmt: skip
    return 0


def _training_labels(samples: Any, args: argparse.Namespace) -> int:
    from fiftyone_florence2.autolabel.loop import ACCEPTED, gathered, gathered_lines, training_labels
    from fiftyone_florence2.autolabel.queue import REVIEWED
    from fiftyone_florence2.autolabel.wording import in_route_words

    view = training_labels(
        samples, args.field, args.into, gt_field=args.gt_field, accepted_tags=args.accepted_tag or ACCEPTED,
        reviewed_tags=args.reviewed_tag or REVIEWED, overwrite=args.overwrite, partial=args.partial,
    )  # fmt: skip
    for line in gathered_lines(gathered(view, args.into), args.into):
        print(in_route_words(line, "cli"))
    words = ["florence2 train --dataset", shlex.quote(args.dataset), "--view", shlex.quote(args.into)]
    print("Fine-tune on them:  " + " ".join([*words, "--label-field", shlex.quote(args.into), "--output-dir DIR"]))
    return 0


def autolabel_run_lines(dataset: Any) -> list[str]:
    """One line per review queue recorded on ``dataset``, oldest first: thresholds, calibration and counts."""
    from fiftyone_florence2.autolabel.queue import REVIEW_METHOD
    from fiftyone_florence2.runs.records import list_runs, load_results

    lines = []
    for key in list_runs(dataset, REVIEW_METHOD):
        config = dataset.get_run_info(key).config
        results = load_results(dataset, key) if config.status != "running" else None
        counts = ", ".join(f"{band} {n}" for band, n in (getattr(results, "counts", None) or {}).items())
        source = f"calibration {config.calibration_key}" if config.calibration_key else "typed thresholds"
        if getattr(config, "confidence", None) == "calibrated_confidence":
            source += " (recalibrated confidences)"
        started = (config.started_at or "-")[:19].replace("T", " ")
        lines.append(
            f"{key}  {started}  {config.status:<11} queues {config.pred_field} with {source} "
            f"({json.dumps(config.thresholds)})  {counts}"
        )
    return lines
