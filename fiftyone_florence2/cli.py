"""The ``florence2`` command: label a folder of images or a FiftyOne dataset, or fine-tune on one.

A thin adapter: it parses arguments, checks them against the task table and
the dataset before loading any model, and calls :func:`label_samples`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence

from fiftyone_florence2.app import DEFAULT_PORT, AppError, app_command, run_app
from fiftyone_florence2.cli_autolabel import AutolabelUsageError, autolabel_run_lines
from fiftyone_florence2.cli_autolabel import add_parsers as add_autolabel_parsers
from fiftyone_florence2.cli_autolabel import samples_of as autolabel_samples_of
from fiftyone_florence2.cli_calibrate import add_calibrate_parser, run_calibrate
from fiftyone_florence2.core.calibration_options import CALIBRATE_OPTIONS
from fiftyone_florence2.core.checkpoints import DEFAULT_CHECKPOINT
from fiftyone_florence2.core.errors import CheckpointError, Florence2Error, for_route
from fiftyone_florence2.core.options import (
    MODEL_OPTIONS,
    OPTIONS,
    RUN_OPTIONS,
    Option,
    check_existing_policy,
    default_label_field,
)
from fiftyone_florence2.core.tasks import TASKS, get_tasks
from fiftyone_florence2.training.options import TRAIN, TRAIN_OPTIONS

EXIT_USAGE = 2
EXIT_FAILED = 1
_TYPES = {"int": int, "float": float}


class UsageError(Florence2Error):
    """Arguments that cannot work; printed as one line, exit status 2."""


def task_table() -> str:
    """The tasks, their tokens, inputs and label types, as aligned text."""
    rows = [("task", "token", "input", "label", "description")]
    rows += [(t.name, t.shown_token, t.input, t.label_type, t.description) for t in TASKS]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4] for row in rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="florence2", description="Florence-2 labels for FiftyOne datasets.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tasks", help="list the tasks and the label type each writes")

    label = sub.add_parser("label", help="label a folder of images or a dataset")
    source = label.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", metavar="DIR", help="a folder of images (searched recursively)")
    source.add_argument("--dataset", metavar="NAME", help="an existing FiftyOne dataset")
    label.add_argument("--dataset-name", metavar="NAME", help="dataset to create for --images (default: folder name)")
    label.add_argument(
        "--add-to-dataset", action="store_true",
        help="with --images: add the folder's images to an existing dataset that was made from another folder",
    )  # fmt: skip
    for option in (*MODEL_OPTIONS, *RUN_OPTIONS):
        if option.cli:
            add_option(label, option)

    train = sub.add_parser("train", help="fine-tune Florence-2 on a dataset's labels; writes a checkpoint")
    train.add_argument("--dataset", required=True, metavar="NAME", help="the FiftyOne dataset to learn from")
    train.add_argument("--view", metavar="NAME", help="a saved view of it to learn from (default: every sample)")
    for option in TRAIN_OPTIONS:
        if option.cli:
            add_option(train, option, task_required=False)

    convert = sub.add_parser(
        "convert", help="convert an original-format Florence-2 checkpoint (remote code) to the native format"
    )
    convert.add_argument("src", metavar="SRC", help="an original-format checkpoint: a local directory or a Hub id")
    convert.add_argument("dst", metavar="DST", help="the directory to write the native checkpoint to")
    convert.add_argument("--overwrite", action="store_true", help="replace an earlier conversion's output in DST")
    convert.add_argument("--revision", default=None, help="a Hub branch, tag or commit of SRC")

    add_calibrate_parser(sub, add_option)
    add_autolabel_parsers(sub)

    runs = sub.add_parser("runs", help="list the recorded runs on a dataset, their failures, or delete one")
    runs.add_argument("--dataset", required=True, metavar="NAME")
    action = runs.add_mutually_exclusive_group()
    action.add_argument("--failures", metavar="RUN_KEY", help="print why each sample of a run failed")
    action.add_argument("--delete", metavar="RUN_KEY", help="delete a run's record (its labels stay)")

    app = sub.add_parser("app", help="open the FiftyOne App on a dataset, with the Florence-2 operators loaded")
    app.add_argument("dataset", nargs="?", metavar="DATASET", help="the dataset to open (default: none)")
    app.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"the App's port (default: {DEFAULT_PORT})")

    demo = sub.add_parser("demo", help="label a few generated images offline and show how to open them")
    demo.add_argument("--model", default=DEFAULT_CHECKPOINT, help="a Hub id or a local checkpoint directory")
    demo.add_argument("--dataset-name", default="florence2-demo", metavar="NAME")
    demo.add_argument(
        "--images-dir",
        default=None,
        metavar="DIR",
        help="where to draw the images (default: florence2-demo/ in FiftyOne's dataset directory)",
    )
    demo.add_argument("--device", default=None)
    sub.metavar = "{" + ",".join(sub.choices) + "}"  # every command, in usage and in "required" errors
    return parser


def add_option(parser: argparse.ArgumentParser, option: Option, task_required: bool = True) -> None:
    """The flag of a declared option; a value not given stays None, so the declaration's default applies."""
    if option.kind == "bool":
        action = "store_false" if option.default else "store_true"
        parser.add_argument(option.cli_flag, dest=option.name, action=action, default=None, help=option.flag_help)
        return
    # Choices are checked by the declaration's own check, which also takes forms such as cuda:1.
    extra = {"metavar": "|".join(option.choices)} if option.kind == "choice" else {}
    if option.kind == "task":
        extra = {"action": "append", "required": task_required, "metavar": "TASK"}
    default = "" if option.default is None else f" (default: {option.default})"
    parser.add_argument(
        option.cli_flag, dest=option.name, type=_TYPES.get(option.kind, str), help=option.flag_help + default, **extra
    )


def _options(args: argparse.Namespace, declared: Sequence[Option]) -> dict:
    """The given values of the declared options; each check and default lives in the declaration."""
    options = {option.name: getattr(args, option.name, None) for option in declared if option.cli}
    if options.get("task") is not None and len(options["task"]) == 1:
        options["task"] = options["task"][0]
    return {key: value for key, value in options.items() if value is not None}


def run_label(args: argparse.Namespace) -> int:
    """Checks everything it can, loads the model, and only then creates or changes a dataset."""
    import fiftyone as fo

    from fiftyone_florence2.runs.checks import (
        check_embeddings_name,
        check_label_field,
        check_run,
        check_sampling,
        frames_to_label,
        labelled_ids,
    )
    from fiftyone_florence2.runs.folders import add_images, find_images, folder_conflict, folder_dataset_name
    from fiftyone_florence2.runs.labelling import label_samples
    from fiftyone_florence2.runs.model import Florence2Model, Florence2ModelConfig
    from fiftyone_florence2.runs.summary import describe_run

    try:
        config = Florence2ModelConfig(_options(args, MODEL_OPTIONS))
        run = {option.name: option.read(getattr(args, option.name)) for option in RUN_OPTIONS if option.cli}
        run["label_field"] = run["label_field"] or default_label_field(config.tasks)
        check_existing_policy(run["skip_existing"], run["overwrite"])
        paths = None
        if args.dataset:
            if not fo.dataset_exists(args.dataset):
                raise UsageError(f"No FiftyOne dataset named {args.dataset!r}.")
            name = args.dataset
            if args.add_to_dataset:
                raise UsageError("--add-to-dataset goes with --images; --dataset labels the dataset as it is.")
        else:
            paths = find_images(args.images)
            name = args.dataset_name or folder_dataset_name(args.images)
            conflict = None if args.add_to_dataset else folder_conflict(name, args.images)
            if conflict:
                raise UsageError(
                    f"{conflict}: name a new dataset with --dataset-name NAME, or pass --add-to-dataset to add "
                    "these images to it."
                )
        if fo.dataset_exists(name):
            checked = {key: value for key, value in run.items() if key not in ("fps", "frame_step")}
            check_run(frames_to_label(fo.load_dataset(name), run["fps"], run["frame_step"]), config, **checked)
        else:
            check_sampling("image", run["fps"], run["frame_step"])
            for field in config.label_fields(run["label_field"]).values():
                check_label_field(field)
            if run["embeddings_field"]:
                check_embeddings_name(run["embeddings_field"], config.label_fields(run["label_field"]).values())
            missing = config.prompt_field or config.regions_field
            if missing:
                raise UsageError(
                    f"Field {missing!r} does not exist: a dataset made from --images holds only the images. "
                    "Add the field, then label with --dataset."
                )
        model = Florence2Model(config)
    except ValueError as e:  # a CheckpointError, a device that is not there, a prompt too long
        raise UsageError(for_route(e, "cli")) from None
    print(f"Model {config.model} on {model.runner.device} ({str(model.runner.dtype).replace('torch.', '')})")
    created = paths is not None and not fo.dataset_exists(name)
    dataset = add_images(name, paths, args.images) if paths is not None else fo.load_dataset(name)
    try:
        summary = label_samples(dataset, model, progress=True, **run)
        print(describe_run(dataset, summary, config.label_types))
    except ValueError as e:
        raise UsageError(for_route(e, "cli")) from None
    finally:
        if created and not labelled_ids(dataset, config.label_fields(run["label_field"]).values()):
            dataset.delete()  # a dataset this run made, and left without a single label, goes again
            print("Nothing was labelled, so the dataset made for this run was deleted again.")
    if not dataset.deleted:
        print(f"Open it in the App:  {app_command(dataset.name)}")
    return EXIT_FAILED if (summary.failures or summary.skips) and not summary.labelled else 0


def samples_of(args: argparse.Namespace):
    """The dataset ``--dataset`` names, or its saved view ``--view``."""
    return autolabel_samples_of(args, UsageError)


def run_train(args: argparse.Namespace) -> int:
    """Fine-tunes on a dataset (or one of its saved views); every check runs before any weights load."""
    from fiftyone_florence2.runs.summary import reason_lines, sample_paths
    from fiftyone_florence2.training.trainer import train

    samples = samples_of(args)
    dataset = samples._root_dataset
    options = _options(args, TRAIN_OPTIONS)
    try:
        result = train(samples, progress=True, **options)
    except ValueError as e:
        raise UsageError(for_route(e, "cli")) from None
    if result.run_key is None:  # another process of a torchrun job reports
        return 0
    best = result.best or {}
    score = f", best validation score {best['eval_score']:.4f} at step {best['step']}" if best else ""
    print(f"Trained {result.steps} steps on {result.train_samples} samples in {result.seconds:.0f} s{score}.")
    if result.skips:
        print(f"{len(result.skips)} sample(s) were left out (all reasons: {result.output_dir}/training.json):")
        print("\n".join(reason_lines(result.skips, sample_paths(dataset, result.skips))))
    print(f"Checkpoint: {result.output_dir}\nLabel with it:  {label_command(args.dataset, result.output_dir, options)}")
    return 0


def label_command(dataset: str, checkpoint: str, options: dict) -> str:
    """The ``florence2 label`` command for a fine-tuned checkpoint: its tasks, and the text inputs it learnt
    with."""
    tasks = get_tasks(options.get("task", TRAIN["task"].default))
    words = ["florence2 label --dataset", shlex.quote(dataset), "--model", shlex.quote(checkpoint)]
    words += [f"--task {task.name}" for task in tasks]
    for name in ("prompt_field", "classes"):
        if options.get(name) is not None:
            value = options[name] if isinstance(options[name], str) else ",".join(options[name])
            words += [OPTIONS[name].cli_flag, shlex.quote(value)]
    return " ".join(words)


def run_runs(args: argparse.Namespace) -> int:
    """Lists, explains or deletes run records; it only reads records (no run's view is rebuilt)."""
    import fiftyone as fo

    from fiftyone_florence2.runs.records import (
        CALIBRATE_METHOD,
        TRAIN_METHOD,
        delete_run,
        list_runs,
        load_results,
        run_failures,
        short_weights,
    )

    if not fo.dataset_exists(args.dataset):
        raise UsageError(f"No FiftyOne dataset named {args.dataset!r}.")
    dataset = fo.load_dataset(args.dataset)
    key = args.failures if args.failures is not None else args.delete
    try:
        if args.delete is not None:
            delete_run(dataset, key)
            print(f"Deleted run {key} (its labels and checkpoints stay).")
        elif args.failures is not None:
            _print_failures(dataset, key, run_failures(dataset, key))
    except ValueError as e:  # not a Florence-2 run: the message lists those there are
        raise UsageError(str(e)) from None
    if key is not None:
        return 0
    for key in list_runs(dataset):
        config = dataset.get_run_info(key).config
        results = load_results(dataset, key) if config.status != "running" else None
        counts = (
            f"  labelled {results.labelled}, skipped {results.skipped}, failed {results.failed}"
            if results is not None
            else ""
        )
        tasks = ",".join(config.tasks)
        print(
            f"{key}  {started_at(config)}  {config.status:<11} {tasks} -> {config.label_field}  "
            f"{short_weights(config)}{counts}"
        )
    for key in list_runs(dataset, CALIBRATE_METHOD):
        config = dataset.get_run_info(key).config
        thresholds = ",".join(f"{name}={value:.4g}" for name, value in config.thresholds.items())
        print(f"{key}  {started_at(config)}  {config.status:<11} calibrates {config.pred_field} against "
              f"{config.gt_field} on {config.samples} sample(s) -> {thresholds}")  # fmt: skip
    for key in list_runs(dataset, TRAIN_METHOD):
        config = dataset.get_run_info(key).config
        learnt = ", ".join(f"{task} from {field}" for task, field in config.label_field.items())
        written = getattr(config, "checkpoint_sha256", None)
        wrote = f", wrote weights {written[:12]}" if written else ""
        print(
            f"{key}  {started_at(config)}  {config.status:<11} trains {learnt} -> {config.output_dir}  "
            f"from {short_weights(config)}{wrote}"
        )
    for line in autolabel_run_lines(dataset):
        print(line)
    return 0


def started_at(config: object) -> str:
    """A run's start, to the second, in UTC (``-`` for a record without one)."""
    stamp = getattr(config, "started_at", None)
    return stamp[:19].replace("T", " ") if isinstance(stamp, str) else "-"


def _print_failures(dataset, key: str, reasons: dict[str, str]) -> None:
    """One line per sample a run failed (or, for a training run, left out), with its path and reason."""
    from bson import ObjectId

    ids = [sample_id for sample_id in reasons if ObjectId.is_valid(sample_id)]  # not "(no id)"
    paths = dict(zip(*dataset.select(ids).values(["id", "filepath"]))) if ids else {}
    for sample_id, reason in reasons.items():
        print(f"{sample_id}  {paths.get(sample_id, '(deleted sample)')}  {reason}")
    print(f"{len(reasons)} failure(s) in run {key}.")


def run_convert(args: argparse.Namespace) -> int:
    """Converts SRC into DST; a refusal is one line naming this command's flags."""
    from fiftyone_florence2.engine.convert import convert_checkpoint

    try:
        path = convert_checkpoint(args.src, args.dst, overwrite=args.overwrite, revision=args.revision)
    except ValueError as e:  # a CheckpointError, or a destination that may not be written
        raise UsageError(for_route(e, "cli")) from None
    print(f"Converted {args.src} to {path}; load it with --model {shlex.quote(str(path))}.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "tasks":
            print(task_table())
            return 0
        if args.command == "runs":
            return run_runs(args)
        if args.command == "train":
            return run_train(args)
        if args.command == "calibrate":
            return run_calibrate(samples_of(args), _options(args, CALIBRATE_OPTIONS), UsageError)
        if args.command == "app":
            return run_app(args.dataset, args.port)
        if args.command == "convert":
            return run_convert(args)
        if args.command in ("review", "recalibrate", "training-labels"):
            from fiftyone_florence2.cli_autolabel import run as run_autolabel

            return run_autolabel(args)
        if args.command == "demo":
            from fiftyone_florence2.demo import run_demo

            try:
                return run_demo(args)
            except ValueError as e:
                raise UsageError(str(e)) from None
        return run_label(args)
    except (UsageError, CheckpointError, AppError, AutolabelUsageError) as e:
        print(f"florence2: error: {for_route(e, 'cli')}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("florence2: interrupted; rerun with --skip-existing to finish.", file=sys.stderr)
        return 130
    except Florence2Error as e:  # a run that failed for a reason of ours: the reason is the message
        print(f"florence2: error: {for_route(e, 'cli')}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as e:
        if os.environ.get("FLORENCE2_DEBUG"):
            raise
        print(f"florence2: error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
