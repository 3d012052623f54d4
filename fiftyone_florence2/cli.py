"""The ``florence2`` command: label a folder of images or a FiftyOne dataset.

A thin adapter: it parses arguments, checks them against the task table and
the dataset before loading any model, and calls :func:`label_samples`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .checkpoints import DEFAULT_CHECKPOINT, NATIVE_CHECKPOINTS, CheckpointError
from .tasks import TASKS

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
EXIT_USAGE = 2
EXIT_FAILED = 1


class UsageError(Exception):
    """Arguments that cannot work; printed as one line, exit status 2."""


def task_table() -> str:
    """The tasks, their tokens, inputs and label types, as aligned text."""
    rows = [("task", "token", "input", "label", "description")]
    rows += [(t.name, t.token, t.input, t.label_type, t.description) for t in TASKS]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4] for row in rows)


def _shard(value: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected INDEX/COUNT such as 0/4, got {value!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"shard index must be in [0, {count}), got {index}")
    return index, count


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="florence2", description="Florence-2 labels for FiftyOne datasets.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{tasks,label,runs,demo}")
    sub.add_parser("tasks", help="list the tasks and the label type each writes")

    label = sub.add_parser("label", help="label a folder of images or a dataset")
    source = label.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", metavar="DIR", help="a folder of images (searched recursively)")
    source.add_argument("--dataset", metavar="NAME", help="an existing FiftyOne dataset")
    label.add_argument("--dataset-name", metavar="NAME", help="dataset to create for --images (default: folder name)")
    _add_run_arguments(label)

    runs = sub.add_parser("runs", help="list the recorded runs on a dataset, their failures, or delete one")
    runs.add_argument("--dataset", required=True, metavar="NAME")
    action = runs.add_mutually_exclusive_group()
    action.add_argument("--failures", metavar="RUN_KEY", help="print why each sample of a run failed")
    action.add_argument("--delete", metavar="RUN_KEY", help="delete a run's record (its labels stay)")

    demo = sub.add_parser("demo", help="label a few generated images offline and show how to open them")
    demo.add_argument("--model", default=DEFAULT_CHECKPOINT, help="a Hub id or a local checkpoint directory")
    demo.add_argument("--dataset-name", default="florence2-demo", metavar="NAME")
    demo.add_argument("--images-dir", default="florence2-demo-images", metavar="DIR")
    demo.add_argument("--device", default=None)
    return parser


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    names = [t.name for t in TASKS]
    parser.add_argument(
        "--task", action="append", required=True, metavar="TASK",
        help=f"repeat for several tasks; one of: {', '.join(names)} (or a token such as '<OD>')",
    )  # fmt: skip
    parser.add_argument("--label-field", default="florence2", help="field to write, or prefix for several tasks")
    parser.add_argument(
        "--model", default=DEFAULT_CHECKPOINT,
        help=f"Hub id or local checkpoint directory (native format: {', '.join(NATIVE_CHECKPOINTS)})",
    )  # fmt: skip
    parser.add_argument("--revision", help="Hub branch, tag or commit")
    text = parser.add_mutually_exclusive_group()
    text.add_argument("--prompt", help="text for text tasks (grounding, segmentation, open-vocabulary detection)")
    text.add_argument("--prompt-field", help="field holding each sample's text")
    text.add_argument("--classes", help="comma-separated classes for open_vocabulary_detection and segmentation")
    parser.add_argument("--regions-field", help="Detections field whose boxes region tasks describe")
    parser.add_argument("--masks", action="store_true", help="segmentation as Detections with instance masks")
    parser.add_argument("--batch-size", type=_positive_int, default=8, help="images per batch (default 8)")
    parser.add_argument("--num-beams", type=_positive_int, default=3, help="beam width; 1 is greedy (default 3)")
    parser.add_argument("--max-new-tokens", type=_positive_int, help="token budget instead of each task's own")
    parser.add_argument("--device", help="cuda, cuda:N, mps or cpu (default: best available)")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto")
    parser.add_argument("--confidence-thresh", type=float, help="drop detections below this confidence")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--skip-existing", action="store_true", help="leave samples that already have labels")
    existing.add_argument("--overwrite", action="store_true", help="replace existing labels")
    parser.add_argument("--shard", type=_shard, metavar="INDEX/COUNT", help="label one of COUNT disjoint parts")
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first sample that fails")


def find_images(folder: str) -> list[str]:
    """Image files below ``folder``, by extension, sorted."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UsageError(f"--images {folder!r} is not a folder.")
    paths = sorted(str(p.resolve()) for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not paths:
        raise UsageError(f"No images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found in {folder!r}.")
    return paths


def dataset_for_images(folder: str, name: str | None):
    """A persistent dataset holding every image of ``folder``; only new files are added to an existing one."""
    return add_images(name or folder_dataset_name(folder), find_images(folder))


def folder_dataset_name(folder: str) -> str:
    """The default dataset name for a folder: its own name."""
    return Path(folder).expanduser().resolve().name


def add_images(name: str, paths: list[str]):
    """Creates the persistent dataset ``name`` if needed, and adds the paths it does not hold yet."""
    import fiftyone as fo

    if fo.dataset_exists(name):
        dataset = fo.load_dataset(name)
        known = set(dataset.values("filepath"))
        paths = [p for p in paths if p not in known]
    else:
        dataset = fo.Dataset(name, persistent=True)
    if paths:
        dataset.add_samples([fo.Sample(filepath=p) for p in paths], progress=False)
    return dataset


def _model_options(args: argparse.Namespace) -> dict:
    options = {
        "task": args.task if len(args.task) > 1 else args.task[0],
        "model": args.model,
        "revision": args.revision,
        "prompt": args.prompt,
        "prompt_field": args.prompt_field,
        "classes": args.classes,
        "regions_field": args.regions_field,
        "masks": args.masks,
        "batch_size": args.batch_size,
        "num_beams": args.num_beams,
        "max_new_tokens": args.max_new_tokens,
        "device": args.device,
        "dtype": None if args.dtype == "auto" else args.dtype,
        "confidence_thresh": args.confidence_thresh,
        "skip_failures": not args.fail_fast,
    }
    return {key: value for key, value in options.items() if value is not None}


def run_label(args: argparse.Namespace) -> int:
    """Checks everything it can, loads the model, and only then creates or changes a dataset."""
    import fiftyone as fo

    from .labeling import check_label_field, label_samples
    from .model import Florence2Model, Florence2ModelConfig

    try:
        config = Florence2ModelConfig(_model_options(args))
    except ValueError as e:
        raise UsageError(str(e)) from None
    paths = None
    if args.dataset:
        if not fo.dataset_exists(args.dataset):
            raise UsageError(f"No FiftyOne dataset named {args.dataset!r}.")
        name = args.dataset
    else:
        paths = find_images(args.images)
        name = args.dataset_name or folder_dataset_name(args.images)
    if fo.dataset_exists(name):
        _check(fo.load_dataset(name), config, args)
    else:
        try:
            for field in config.label_fields(args.label_field).values():
                check_label_field(field)
        except ValueError as e:
            raise UsageError(str(e)) from None
        missing = config.prompt_field or config.regions_field
        if missing:
            raise UsageError(
                f"Field {missing!r} does not exist: a dataset made from --images holds only the images. "
                "Add the field, then label with --dataset."
            )
    model = Florence2Model(config)
    print(f"Model {config.model} on {model.runner.device} ({str(model.runner.dtype).replace('torch.', '')})")
    dataset = add_images(name, paths) if paths is not None else fo.load_dataset(name)
    _check(dataset, config, args)
    summary = label_samples(
        dataset,
        model,
        label_field=args.label_field,
        batch_size=args.batch_size,
        skip_existing=args.skip_existing,
        overwrite=args.overwrite,
        shard=args.shard,
        progress=True,
    )
    print_summary(dataset, summary, config.label_types)
    return EXIT_FAILED if summary.failures and not summary.labelled else 0


def _check(dataset, config, args: argparse.Namespace) -> None:
    from .labeling import check_run

    try:
        check_run(dataset, config, args.label_field, args.skip_existing, args.overwrite, args.shard)
    except ValueError as e:
        raise UsageError(str(e)) from None


def print_summary(dataset, summary, label_types: dict[str, str]) -> None:
    """What was written where, what failed and why, and how to look at it."""
    fields = ", ".join(f"{name} ({label_types[task]})" for task, name in summary.label_fields.items())
    print(
        f"Labelled {summary.labelled} of {summary.targeted} sample(s) in {summary.seconds:.1f} s "
        f"({summary.images_per_second:.2f} images/s) into {fields}."
    )
    if summary.skipped:
        print(f"Skipped {summary.skipped} sample(s) that already had labels.")
    if summary.failures:
        print(f"{len(summary.failures)} sample(s) could not be labelled:")
        paths = dict(zip(*dataset.select(list(summary.failures)).values(["id", "filepath"])))
        for sample_id, reason in list(summary.failures.items())[:20]:
            print(f"  {paths.get(sample_id, sample_id)}: {reason}")
        if len(summary.failures) > 20:
            print(f"  ... and {len(summary.failures) - 20} more")
    print(f"Open it in the App:  fiftyone app launch {dataset.name}")


def run_runs(args: argparse.Namespace) -> int:
    import fiftyone as fo

    from .provenance import delete_run, list_runs, run_failures

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
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(args)
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
