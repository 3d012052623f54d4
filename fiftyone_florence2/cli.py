"""The ``florence2`` command: label a folder of images or a FiftyOne dataset, or fine-tune on one.

A thin adapter: it parses arguments, checks them against the task table and
the dataset before loading any model, and calls :func:`label_samples`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .checkpoints import DEFAULT_CHECKPOINT, CheckpointError
from .options import MODEL_OPTIONS, RUN_OPTIONS, Option, check_existing_policy, default_label_field
from .tasks import TASKS
from .train_options import TRAIN_OPTIONS

EXIT_USAGE = 2
EXIT_FAILED = 1
_TYPES = {"int": int, "float": float}


class UsageError(Exception):
    """Arguments that cannot work; printed as one line, exit status 2."""


def task_table() -> str:
    """The tasks, their tokens, inputs and label types, as aligned text."""
    rows = [("task", "token", "input", "label", "description")]
    rows += [(t.name, t.token, t.input, t.label_type, t.description) for t in TASKS]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4] for row in rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="florence2", description="Florence-2 labels for FiftyOne datasets.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{tasks,label,train,runs,demo}")
    sub.add_parser("tasks", help="list the tasks and the label type each writes")

    label = sub.add_parser("label", help="label a folder of images or a dataset")
    source = label.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", metavar="DIR", help="a folder of images (searched recursively)")
    source.add_argument("--dataset", metavar="NAME", help="an existing FiftyOne dataset")
    label.add_argument("--dataset-name", metavar="NAME", help="dataset to create for --images (default: folder name)")
    for option in (*MODEL_OPTIONS, *RUN_OPTIONS):
        if option.cli:
            add_option(label, option)

    train = sub.add_parser("train", help="fine-tune Florence-2 on a dataset's labels; writes a checkpoint")
    train.add_argument("--dataset", required=True, metavar="NAME", help="the FiftyOne dataset to learn from")
    train.add_argument("--view", metavar="NAME", help="a saved view of it to learn from (default: every sample)")
    for option in TRAIN_OPTIONS:
        if option.cli:
            add_option(train, option, task_required=False)

    runs = sub.add_parser("runs", help="list the recorded runs on a dataset, their failures, or delete one")
    runs.add_argument("--dataset", required=True, metavar="NAME")
    action = runs.add_mutually_exclusive_group()
    action.add_argument("--failures", metavar="RUN_KEY", help="print why each sample of a run failed")
    action.add_argument("--delete", metavar="RUN_KEY", help="delete a run's record (its labels stay)")

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
    return parser


def add_option(parser: argparse.ArgumentParser, option: Option, task_required: bool = True) -> None:
    """The flag of a declared option; a value not given stays None, so the declaration's default applies."""
    if option.kind == "bool":
        action = "store_false" if option.default else "store_true"
        parser.add_argument(option.cli_flag, dest=option.name, action=action, default=None, help=option.help)
        return
    # Choices are checked by the declaration's own check, which also takes forms such as cuda:1.
    extra = {"metavar": "|".join(option.choices)} if option.kind == "choice" else {}
    if option.kind == "task":
        extra = {"action": "append", "required": task_required, "metavar": "TASK"}
    default = "" if option.default is None else f" (default: {option.default})"
    parser.add_argument(
        option.cli_flag, dest=option.name, type=_TYPES.get(option.kind, str), help=option.help + default, **extra
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

    from .checks import check_embeddings_name, check_label_field, check_run, frames_to_label, labelled_ids
    from .folders import add_images, find_images, folder_dataset_name
    from .labeling import describe_run, label_samples
    from .model import Florence2Model, Florence2ModelConfig

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
        else:
            paths = find_images(args.images)
            name = args.dataset_name or folder_dataset_name(args.images)
        if fo.dataset_exists(name):
            checked = {key: value for key, value in run.items() if key not in ("fps", "frame_step")}
            check_run(frames_to_label(fo.load_dataset(name), run["fps"], run["frame_step"]), config, **checked)
        else:
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
        raise UsageError(str(e)) from None
    print(f"Model {config.model} on {model.runner.device} ({str(model.runner.dtype).replace('torch.', '')})")
    created = paths is not None and not fo.dataset_exists(name)
    dataset = add_images(name, paths) if paths is not None else fo.load_dataset(name)
    try:
        summary = label_samples(dataset, model, progress=True, **run)
        print(describe_run(dataset, summary, config.label_types))
    except ValueError as e:
        raise UsageError(str(e)) from None
    finally:
        if created and not labelled_ids(dataset, config.label_fields(run["label_field"]).values()):
            dataset.delete()  # a dataset this run made, and left without a single label, goes again
            print("Nothing was labelled, so the dataset made for this run was deleted again.")
    if not dataset.deleted:
        print(f"Open it in the App:  fiftyone app launch {dataset.name}")
    return EXIT_FAILED if (summary.failures or summary.skips) and not summary.labelled else 0


def run_train(args: argparse.Namespace) -> int:
    """Fine-tunes on a dataset (or one of its saved views); every check runs before any weights load."""
    import fiftyone as fo

    from .training import train

    if not fo.dataset_exists(args.dataset):
        raise UsageError(f"No FiftyOne dataset named {args.dataset!r}.")
    dataset = fo.load_dataset(args.dataset)
    if args.view is not None and not dataset.has_saved_view(args.view):
        views = ", ".join(dataset.list_saved_views()) or "none"
        raise UsageError(f"Dataset {args.dataset!r} has no saved view {args.view!r}; saved views: {views}.")
    samples = dataset.load_saved_view(args.view) if args.view else dataset
    try:
        result = train(samples, progress=True, **_options(args, TRAIN_OPTIONS))
    except ValueError as e:
        raise UsageError(str(e)) from None
    if result.run_key is None:  # another process of a torchrun job reports
        return 0
    best = result.best or {}
    score = f", best validation score {best['eval_score']:.4f} at step {best['step']}" if best else ""
    print(f"Trained {result.steps} steps on {result.train_samples} samples in {result.seconds:.0f} s{score}.")
    if result.skips:
        print(f"{len(result.skips)} sample(s) were left out; their reasons are in {result.output_dir}/training.json.")
    print(
        f"Checkpoint: {result.output_dir}\nLabel with it:  florence2 label --dataset {args.dataset} "
        f"--model {result.output_dir} --task ..."
    )
    return 0


def run_runs(args: argparse.Namespace) -> int:
    import fiftyone as fo

    from .provenance import delete_run, list_runs, run_failures
    from .train_record import list_training_runs

    if not fo.dataset_exists(args.dataset):
        raise UsageError(f"No FiftyOne dataset named {args.dataset!r}.")
    dataset = fo.load_dataset(args.dataset)
    keys = list_runs(dataset)
    key = args.failures or args.delete
    if key is not None and key not in keys:
        raise UsageError(f"No Florence-2 run {key!r} on {args.dataset!r}; runs: {', '.join(keys) or 'none'}.")
    if args.delete:
        delete_run(dataset, key)
        print(f"Deleted run {key} (its labels stay).")
    elif args.failures:
        failures = run_failures(dataset, key)
        paths = dict(zip(*dataset.select(list(failures)).values(["id", "filepath"]))) if failures else {}
        for sample_id, reason in failures.items():
            print(f"{sample_id}  {paths.get(sample_id, '(deleted sample)')}  {reason}")
        print(f"{len(failures)} failure(s) in run {key}.")
    else:
        for key in keys:
            config = dataset.get_run_info(key).config
            results = dataset.load_run_results(key, cache=False) if config.status != "running" else None
            counts = f"labelled {results.labelled}, failed {results.failed}" if results is not None else ""
            print(f"{key}  {config.status:<11} {','.join(config.tasks)} -> {config.label_field}  {counts}")
        for key in list_training_runs(dataset):
            config = dataset.get_run_info(key).config
            learnt = ", ".join(f"{task} from {field}" for task, field in config.label_field.items())
            print(f"{key}  {config.status:<11} trains {learnt} -> {config.output_dir}")
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
        if args.command == "demo":
            from .demo import run_demo

            try:
                return run_demo(args)
            except ValueError as e:
                raise UsageError(str(e)) from None
        return run_label(args)
    except (UsageError, CheckpointError) as e:
        print(f"florence2: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("florence2: interrupted; rerun with --skip-existing to finish.", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("FLORENCE2_DEBUG"):
            raise
        print(f"florence2: error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
