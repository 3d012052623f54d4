"""How long the ``apply_florence2`` form takes to resolve on a large image dataset.

FiftyOne resolves a dynamic operator's form on every change of its inputs: one
``resolve_type`` (which calls ``resolve_input``) and, because the operator is
dynamic, one ``resolve_execution_options`` (which calls ``resolve_delegation``),
each through a fresh ``ExecutionContext``. This times both through a real
context, and counts what each call reads from the database.

python -m benchmarks.form_latency                    # 100,000 samples, kept between runs
python -m benchmarks.form_latency --samples 200 --no-cache
python -m benchmarks.form_latency --delete           # drop the kept dataset (and exit)
"""

from __future__ import annotations

import copy
import functools
import os
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

from support import mongod

from . import report

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 20_000  # documents per bulk insert
CALLS = 5
VIEW_SIZE = 10_000


def dataset_name(samples: int) -> str:
    return f"florence2-form-latency-{samples}"


def build_dataset(name: str, samples: int, persistent: bool):
    """Images with fake paths; even samples have a ``florence2_caption`` Classification, all a ``gt`` box.

    Two samples go through ``add_samples``; the rest are copies of their raw
    documents (new ids), bulk-inserted: seconds rather than a minute for 100,000.
    """
    import fiftyone as fo
    from bson import ObjectId

    dataset = fo.Dataset(name, persistent=persistent)
    box = fo.Detection(label="thing", bounding_box=[0.1, 0.2, 0.5, 0.4])
    first = [
        fo.Sample(filepath=_path(i), gt=fo.Detections(detections=[box.copy()]))
        for i in range(min(2, samples))
    ]  # fmt: skip
    first[0]["florence2_caption"] = fo.Classification(label="a caption")
    dataset.add_samples(first, progress=False)
    collection = dataset._sample_collection
    templates = {doc["filepath"]: doc for doc in collection.find({})}
    templates = [templates[_path(0)], templates.get(_path(1))]

    def fresh(value):  # the template with a new ObjectId for every document in it
        if isinstance(value, dict):
            return {k: ObjectId() if k == "_id" else fresh(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fresh(v) for v in value]
        return copy.copy(value)

    for start in range(2, samples, CHUNK):
        docs = []
        for i in range(start, min(samples, start + CHUNK)):
            doc = fresh(templates[i % 2])
            doc["filepath"], doc["_rand"] = _path(i), random.random()
            docs.append(doc)
        collection.insert_many(docs, ordered=False)
    dataset.reload()
    labelled = dataset.count("florence2_caption")
    if len(dataset) != samples or labelled != (samples + 1) // 2:
        raise RuntimeError(f"built {len(dataset)} samples, {labelled} labelled; expected {samples}")
    return dataset


def _path(i: int) -> str:
    return f"/nonexistent/florence2-form-latency/{i:07d}.jpg"


def get_dataset(samples: int, cache: bool, rebuild: bool):
    """The kept dataset of this size if there is a sound one, else a new one; and its build seconds."""
    import fiftyone as fo

    name = dataset_name(samples) if cache else f"{dataset_name(samples)}-{time.time_ns()}"
    if name in fo.list_datasets():
        dataset = fo.load_dataset(name)
        if not rebuild and len(dataset) == samples and "gt" in dataset.get_field_schema():
            return dataset, None
        dataset.delete()
    start = time.perf_counter()
    dataset = build_dataset(name, samples, persistent=cache)
    return dataset, time.perf_counter() - start


def scenarios(dataset) -> list[tuple[str, dict]]:
    """(name, request parameters) for each form state timed."""
    from fiftyone import ViewField as F

    base = {"dataset_name": dataset.name}
    unlabelled = dataset.match(~F("florence2_caption").exists()).limit(VIEW_SIZE)
    return [
        ("defaults: caption → florence2_caption (exists)", {**base, "params": {}}),
        ("caption → new field", {**base, "params": {"task": "caption", "label_field": "caption_new"}}),
        ("caption → existing field, skip_existing=False",
         {**base, "params": {"task": "caption", "label_field": "florence2_caption", "skip_existing": False}}),
        ("caption → existing field, skip_existing=True",
         {**base, "params": {"task": "caption", "label_field": "florence2_caption", "skip_existing": True}}),
        (f"current view: unlabelled, limit {VIEW_SIZE}",
         {**base, "view": unlabelled._serialize(), "params": {"view_target": "CURRENT_VIEW"}}),
        ("region_to_category, regions gt",
         {**base, "params": {"task": "region_to_category", "regions_field": "gt"}}),
        ("tasks caption+detection+ocr → florence2_* (one exists)",
         {**base, "params": {"tasks": ["caption", "detection", "ocr"]}}),
    ]  # fmt: skip


class Probe:
    """Calls and inclusive seconds of the functions the form is suspected to spend its time in."""

    def __init__(self):
        self.calls: Counter = Counter()
        self.seconds: defaultdict = defaultdict(float)
        self.ids_read = 0
        self.plans: list = []

    def reset(self) -> None:
        self.calls.clear()
        self.seconds.clear()
        self.ids_read = 0
        self.plans.clear()

    def wrap(self, key, fn, when=None, after=None):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if when is not None and not when(*args, **kwargs):
                return fn(*args, **kwargs)
            start = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            finally:
                self.calls[key] += 1
                self.seconds[key] += time.perf_counter() - start
            if after is not None:
                after(result)
            return result

        return wrapper

    def install(self, operator) -> ExitStack:
        """Wraps the library, plugin and FiftyOne functions in place; undone when the stack closes."""
        import fiftyone.core.collections as focol
        import fiftyone.core.dataset as fod

        import fiftyone_florence2.runs.checks as checks

        apply = sys.modules[type(operator).__module__]
        plan = sys.modules[apply.__name__.rsplit(".", 1)[0] + ".plan"]
        if plan.check_run.__module__ != checks.__name__ or checks.__file__ != str(
            ROOT / "fiftyone_florence2" / "runs" / "checks.py"
        ):
            raise RuntimeError(f"the plugin does not use this checkout's library ({checks.__file__})")

        def reads_ids(collection, field_or_expr=None, *args, **kwargs):
            return field_or_expr == "id"

        def count_ids(result):
            self.ids_read += len(result)

        stack = ExitStack()
        patches = [
            (apply, "make_plan", self.wrap("make_plan", apply.make_plan, after=self.plans.append)),
            (apply, "build_form", self.wrap("build_form", apply.build_form)),
            (plan, "check_run", self.wrap("check_run", plan.check_run)),
            (plan, "check_fields", self.wrap("check_fields", plan.check_fields)),
            (plan, "Florence2ModelConfig", self.wrap("Florence2ModelConfig", plan.Florence2ModelConfig)),
            (checks, "labelled_ids", self.wrap("labelled_ids", checks.labelled_ids)),
            (fod, "load_dataset", self.wrap("load_dataset", fod.load_dataset)),
            (focol.SampleCollection, "count", self.wrap("count()", focol.SampleCollection.count)),
            (focol.SampleCollection, "values",
             self.wrap('values("id")', focol.SampleCollection.values, when=reads_ids, after=count_ids)),
        ]  # fmt: skip
        for owner, name, replacement in patches:
            stack.enter_context(mock.patch.object(owner, name, replacement))
        return stack


BREAKDOWN = ("make_plan", "load_dataset", "count()", 'values("id")', "labelled_ids", "check_run", "check_fields",
             "Florence2ModelConfig", "build_form")  # fmt: skip


def measure(operator, request: dict, probe: Probe, calls: int) -> dict:
    """Times ``resolve_input`` alone, then whole input changes, each on fresh contexts after one warm-up."""
    from fiftyone.operators.executor import ExecutionContext

    def context():
        return ExecutionContext(request_params=copy.deepcopy(request), operator_uri=operator.uri)

    operator.resolve_input(context())  # warm-up
    inputs, per_call = [], []
    for _ in range(calls):
        probe.reset()
        ctx = context()
        start = time.perf_counter()
        operator.resolve_input(ctx)
        inputs.append(time.perf_counter() - start)
        per_call.append((dict(probe.calls), dict(probe.seconds), probe.ids_read, probe.plans[-1]))
    changes, change_plans = [], []
    for _ in range(calls):
        probe.reset()
        start = time.perf_counter()
        operator.resolve_type(context(), "inputs")
        operator.resolve_execution_options(context())
        changes.append(time.perf_counter() - start)
        change_plans.append(probe.calls["make_plan"])
    calls_seen, _, ids_read, plan = per_call[-1]
    plan_text = plan.problem or f"{plan.count} sample(s), delegate={plan.delegate}"
    return {
        "median": statistics.median(inputs),
        "max": max(inputs),
        "calls": calls_seen,
        "ids_read": ids_read,
        "breakdown": {key: statistics.median(s.get(key, 0.0) for _, s, _, _ in per_call) for key in BREAKDOWN},
        "change_median": statistics.median(changes),
        "change_max": max(changes),
        "change_plans": max(change_plans),
        "form": plan_text if len(plan_text) <= 60 else plan_text[:57] + "...",
    }


def table(rows: list[tuple[str, dict]]) -> str:
    lines = [
        '| form state | resolve_input median s | max s | make_plan | values("id") | ids read | count() '
        "| input change median s | max s | make_plan per change | the form says |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in rows:
        c = r["calls"]
        ids = c.get('values("id")', 0)
        lines.append(
            f"| {name} | {r['median']:.3f} | {r['max']:.3f} | {c.get('make_plan', 0)} | {ids} "
            f"| {r['ids_read']:,} | {c.get('count()', 0)} | {r['change_median']:.3f} | {r['change_max']:.3f} "
            f"| {r['change_plans']} | {r['form']} |"
        )
    return "\n".join(lines)


def breakdown_table(rows: list[tuple[str, dict]]) -> str:
    lines = ["| form state | resolve_input | " + " | ".join(BREAKDOWN) + " |", "|---|---:|" + "---:|" * len(BREAKDOWN)]
    for name, r in rows:
        cells = [f"{r['breakdown'][key]:.3f} ({r['calls'].get(key, 0)}x)" for key in BREAKDOWN]
        lines.append(f"| {name} | {r['median']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv):
    p = report.parser("python -m benchmarks.form_latency", __doc__)
    p.add_argument("--samples", type=int, default=100_000, help="samples in the dataset (default 100000)")
    p.add_argument("--calls", type=int, default=CALLS, help=f"timed calls per form state (default {CALLS})")
    p.add_argument(
        "--workdir",
        default=str(ROOT / "benchmarks" / "out" / "form_latency"),
        help="where the benchmark's own mongod keeps its data (unless FIFTYONE_DATABASE_URI is set)",
    )
    p.add_argument(
        "--no-cache", dest="cache", action="store_false", help="build a throw-away dataset and delete it at the end"
    )
    p.add_argument("--rebuild", action="store_true", help="rebuild the kept dataset of this size")
    report.add_output_options(p)
    p.add_argument("--note", action="append", default=[], help="a line added to the section (repeatable)")
    p.add_argument("--delete", action="store_true", help="delete the kept dataset of this size and exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mongod.isolate(Path(args.workdir) / "mongod")
    import fiftyone as fo
    import fiftyone.operators as foo
    import yaml

    if args.delete:
        name = dataset_name(args.samples)
        if name in fo.list_datasets():
            fo.load_dataset(name).delete()
            print(f"deleted {name}")
        else:
            print(f"no dataset {name}")
        return 0

    dataset, built = get_dataset(args.samples, args.cache, args.rebuild)
    print(f"dataset {dataset.name}: {len(dataset):,} samples, " + (
        f"built in {built:.1f} s" if built is not None else "kept from an earlier run (--rebuild to rebuild)"
    ))  # fmt: skip
    load = os.getloadavg()[0]
    previous = fo.config.plugins_dir
    fo.config.plugins_dir = str(ROOT)
    try:
        plugin = yaml.safe_load((ROOT / "fiftyone.yml").read_text())["name"]
        operator = foo.get_operator(f"{plugin}/apply_florence2")
        probe = Probe()
        rows = []
        with probe.install(operator):
            for name, request in scenarios(dataset):
                rows.append((name, measure(operator, request, probe, args.calls)))
    finally:
        fo.config.plugins_dir = previous
        if not args.cache:
            dataset.delete()
    lines = [
        f"## Operator form latency, {args.samples:,} samples",
        "",
        f"`python -m benchmarks.form_latency --samples {args.samples}`, {args.calls} calls each after one warm-up. "
        f"{report.conditions(load)}",
        "",
        table(rows),
        "",
        "Columns 4-7 are counts per resolve_input call. An input change is what the App runs on each one: "
        "resolve_type (→ resolve_input) and resolve_execution_options (→ resolve_delegation), on fresh contexts.",
        "",
        "### Where resolve_input's time goes: median seconds per call (calls per call), inclusive",
        "",
        breakdown_table(rows),
        *(["", *[f"- {note}" for note in args.note]] if args.note else []),
    ]
    report.publish(lines, args.output, "form-latency")
    return 0


if __name__ == "__main__":
    sys.exit(main())
