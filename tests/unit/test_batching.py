"""The batch logic on a fake runner: features shared, failures kept to their own item. No torch, no weights."""

from __future__ import annotations

import fiftyone.core.labels as fol
import pytest
from helpers.fake_runner import FakeRunner

from fiftyone_florence2.core.errors import SampleError
from fiftyone_florence2.engine.items import Item
from fiftyone_florence2.runs.batching import label_items
from fiftyone_florence2.runs.config import Florence2ModelConfig


def config(task="detection", **options):
    return Florence2ModelConfig({"task": task, "model": "org/any-model", **options})


def items(*names, **fields):
    return [Item(name, pixel_values=name, image_wh=(10, 10), **fields) for name in names]


@pytest.mark.parametrize(
    ("broken", "labelled", "failed"),
    [
        ((), ["a", "b", "c"], []),
        (("b",), ["a", "c"], ["b"]),
        (("a", "b", "c"), [], ["a", "b", "c"]),
    ],
    ids=["none", "one", "all"],
)
def test_an_image_that_breaks_the_vision_pass_fails_alone(broken, labelled, failed):
    runner = FakeRunner(broken_images=broken)
    outcomes = label_items(config(), runner, items("a", "b", "c"))
    assert [o.labels["detection"].detections[0].label for o in outcomes if o.labels] == labelled
    assert [name for name, o in zip("abc", outcomes) if o.failed] == failed
    assert all("vision encoder failed (a broken image)" in o.reason for o in outcomes if o.failed)
    assert runner.vision_calls[0] == ["a", "b", "c"]  # one shared pass first


@pytest.mark.parametrize(
    ("embed", "broken", "tasks", "vectors"),
    [
        (False, (), None, [None, None, None]),
        (True, (), None, ["vector of a", "vector of b", "vector of c"]),
        (True, ("b",), None, ["vector of a", None, "vector of c"]),
        (True, ("a", "b", "c"), None, [None, None, None]),
        (True, (), frozenset(), ["vector of a", "vector of b", "vector of c"]),  # the vision pass alone
    ],
    ids=["not-asked", "all", "one-broken", "all-broken", "no-task"],
)
def test_embeddings_come_from_the_labelling_vision_pass(embed, broken, tasks, vectors):
    runner = FakeRunner(broken_images=broken)
    outcomes = label_items(config(), runner, items("a", "b", "c", tasks=tasks), embed=embed)
    assert [o.embedding for o in outcomes] == vectors
    assert runner.vision_calls[0] == ["a", "b", "c"] and len(runner.vision_calls) == (1 if not broken else 4)
    assert runner.generate_calls == ([] if tasks is not None or len(broken) == 3 else [3 - len(broken)])


def test_a_failing_generation_is_split_out_of_its_chunk():
    runner = FakeRunner(broken_questions={"Locate b in the image."})
    outcomes = label_items(
        config("open_vocabulary_detection", classes=["a", "b", "c"], batch_size=3), runner, items("x")
    )
    assert outcomes[0].failed == ["open_vocabulary_detection: generation failed (generation broke)"]
    assert runner.generate_calls == [3, 1, 2, 1, 1]  # halves until the failing question is alone


def test_each_item_runs_only_the_tasks_it_asks_for():
    runner = FakeRunner()
    batch = items("a", "b")
    batch[0].tasks = frozenset({"caption"})
    outcomes = label_items(config(["caption", "detection"]), runner, batch)
    assert sorted(outcomes[0].labels) == ["caption"] and sorted(outcomes[1].labels) == ["caption", "detection"]


@pytest.mark.parametrize(
    ("regions", "failed", "skipped"),
    [
        (None, [], ["region_to_category: no regions in field 'gt'"]),
        (fol.Detections(), [], ["region_to_category: no regions in field 'gt'"]),
        (fol.Classification(label="x"), ["region_to_category: regions field 'gt' holds Classification"], []),
        (fol.Detections(detections=[fol.Detection(bounding_box=[5, 5, 100, 100])]), ["unusable"], []),
        (fol.Detections(detections=[fol.Detection(bounding_box=[0.1, 0.1, 0.2, 0.2])]), [], []),
    ],
    ids=["none", "empty", "wrong-type", "pixels", "good"],
)
def test_regions_that_cannot_be_read(regions, failed, skipped):
    (outcome,) = label_items(
        config("region_to_category", regions_field="gt"), FakeRunner(), items("a", regions=regions)
    )
    assert len(outcome.failed) == len(failed) and all(f in got for f, got in zip(failed, outcome.failed))
    assert outcome.skipped == skipped
    assert bool(outcome.labels) == (not failed and not skipped)


def test_a_prompt_field_value_too_long_fails_its_item_only():
    runner = FakeRunner(room=60)
    batch = items("a", "b")
    batch[0].prompt, batch[1].prompt = "a red car " * 10, "a car"
    outcomes = label_items(config("phrase_grounding", prompt_field="caption"), runner, batch)
    assert outcomes[0].failed == ["phrase_grounding: the prompt is too long"] and outcomes[1].labels


def test_fail_fast_raises_for_the_first_failing_item():
    wrong = fol.Classification(label="x")
    options = {"regions_field": "gt", "skip_failures": False}
    with pytest.raises(SampleError, match="Sample b: region_to_category: regions field 'gt' holds"):
        label_items(config("region_to_category", **options), FakeRunner(), items("b", regions=wrong))
    with pytest.raises(RuntimeError, match="a broken image"):  # the runner's own error, unwrapped
        label_items(config(skip_failures=False), FakeRunner(broken_images={"b"}), items("b"))
