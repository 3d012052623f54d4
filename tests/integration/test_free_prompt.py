"""The free prompt: a fine-tune's own prompt sent as written, its answer written as text or as boxes."""

from __future__ import annotations

import fiftyone as fo
import fiftyone.core.labels as fol
import pytest
from helpers import force

from fiftyone_florence2 import load_model
from fiftyone_florence2.labels.convert import to_label
from fiftyone_florence2.runs.labelling import label_samples
from fiftyone_florence2.runs.model import Florence2ModelConfig
from fiftyone_florence2.training.options import read_train_options

BOX = "<loc_100><loc_200><loc_500><loc_900>"
REL = [0.1005, 0.2005, 0.4, 0.7]


def _model(tiny_checkpoint, tokenizer, answer, **options):
    options.setdefault("prompt", "<DocVQA>What is it?")
    return load_model(
        "free_prompt", model=str(tiny_checkpoint), num_beams=1, generate_kwargs=force(tokenizer, answer), **options
    )


def _boxes(label: fol.Detections) -> list[tuple[str, list[float]]]:
    return [(d.label, [round(v, 4) for v in d.bounding_box]) for d in label.detections]


@pytest.mark.parametrize(
    ("answer", "kind", "expected"),
    [
        ("The total is 42.", "Classification", "The total is 42."),
        ("tags: sky, <sep> sea", "Classification", "tags: sky, <sep> sea"),  # a token in text is kept as written
        (f"car{BOX}", "Detections", [("car", REL)]),
        (BOX, "Detections", [("object", REL)]),  # a box with no label before it
        (f"car{BOX}{BOX}dog{BOX}", "Detections", [("car", REL), ("car", REL), ("dog", REL)]),
        ("car<loc_100><loc_200>", "Detections", []),  # locations, but no whole box: the text stays in `answer`
    ],
)
def test_an_answer_is_text_or_boxes_with_confidences(dataset, tiny_checkpoint, tokenizer, answer, kind, expected):
    summary = label_samples(dataset, _model(tiny_checkpoint, tokenizer, answer), "free", batch_size=2)
    assert (summary.labelled, summary.failures, summary.skips) == (5, {}, {})
    assert dataset.get_field("free").document_type.__name__ == kind
    label = dataset.first().free
    if kind == "Classification":
        assert label.label == expected and 0 < label.confidence <= 1
    else:
        assert _boxes(label) == expected and label.answer == answer
        assert all(0 < d.confidence <= 1 for d in label.detections)


def test_an_empty_answer_is_a_skip_with_its_reason_and_types_no_field(dataset, tiny_checkpoint, tokenizer):
    summary = label_samples(dataset, _model(tiny_checkpoint, tokenizer, ""), "free")
    assert (summary.labelled, summary.failures) == (0, {})
    assert set(summary.skips.values()) == {"free_prompt: the answer is empty"}
    assert "free" not in dataset.get_field_schema()


def _by_prompt(answers: dict[str, str]):
    return lambda task, question: answers[question]


@pytest.mark.parametrize(
    ("answers", "kind", "first", "second"),
    [
        # the first answer types a new field; a box answer in a text field keeps its text, locations and all
        (["a cat", f"car{BOX}"], "Classification", "a cat", f"car{BOX}"),
        # a text answer in a box field: no boxes, and the text in the label's `answer`
        ([f"car{BOX}", "a cat"], "Detections", [("car", REL)], []),
        # an empty answer follows the field's type once it has one
        (["a cat", ""], "Classification", "a cat", ""),
        ([f"car{BOX}", ""], "Detections", [("car", REL)], []),
    ],
)
def test_a_mixed_run_follows_its_first_answer_and_loses_no_text(
    dataset, tiny_checkpoint, tokenizer, answers, kind, first, second
):
    samples = list(dataset)
    for i, sample in enumerate(samples):
        sample["q"] = f"<Q{min(i, 1)}>"
        sample.save()
    generate = force(tokenizer, _by_prompt({"<Q0>": answers[0], "<Q1>": answers[1]}))
    model = load_model("free_prompt", model=str(tiny_checkpoint), prompt_field="q", generate_kwargs=generate)
    summary = label_samples(dataset, model, "free", batch_size=2)
    assert (summary.labelled, summary.failures) == (5, {})
    assert dataset.get_field("free").document_type.__name__ == kind
    labels = [dataset[s.id].free for s in samples]
    read = (lambda x: x.label) if kind == "Classification" else _boxes
    assert [read(labels[0]), read(labels[-1])] == [first, second]
    if kind == "Detections":
        assert [labels[0].answer, labels[-1].answer] == answers


def test_an_existing_field_keeps_its_type(dataset, tiny_checkpoint, tokenizer):
    first = dataset.first()
    first["free"] = fol.Detections(detections=[fol.Detection(label="mine", bounding_box=[0, 0, 0.5, 0.5])])
    first.save()
    summary = label_samples(dataset, _model(tiny_checkpoint, tokenizer, "a cat"), "free", skip_existing=True)
    assert (summary.skipped, summary.labelled) == (1, 4)
    labels = dataset.values("free")
    assert labels[0].detections[0].label == "mine"
    assert [(len(x.detections), x.answer) for x in labels[1:]] == [(0, "a cat")] * 4


def test_a_field_of_another_label_type_is_refused_before_any_model_work(dataset):
    first = dataset.first()
    first["free"] = fol.Polylines(polylines=[])
    first.save()
    config = Florence2ModelConfig({"task": "free_prompt", "prompt": "x", "model": "org/any"})
    from fiftyone_florence2.runs.checks import check_run

    with pytest.raises(ValueError, match="already holds Polylines, but task 'free_prompt' writes Classification or"):
        check_run(dataset, config, "free", overwrite=True)


def test_a_known_token_in_the_prompt_stays_one_token(dataset, tiny_checkpoint, tokenizer):
    asked = []
    prompt = "<od>What  is\tit?"

    def answer(task, question):
        asked.append(question)
        return "a cat"

    model = _model(tiny_checkpoint, tokenizer, answer, prompt=prompt)
    label_samples(dataset, model, "free")
    assert set(asked) == {prompt}  # sent as written: no question around it, spacing kept
    ids = model.runner.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert ids.count(tokenizer.convert_tokens_to_ids("<od>")) == 1 and ids[0] == tokenizer.convert_tokens_to_ids("<od>")


def test_prompts_from_a_field_with_missing_values_fail_only_those_samples(dataset, tiny_checkpoint, tokenizer):
    samples = list(dataset)
    values = [["<A>"], None, ["<A>", "<B>"], [], ["<B>"]]
    for sample, value in zip(samples, values):
        sample["q"] = value
        sample.save()
    generate = force(tokenizer, _by_prompt({"<A>": "alpha", "<B>": "beta"}))
    model = load_model("free_prompt", model=str(tiny_checkpoint), prompt_field="q", generate_kwargs=generate)
    summary = label_samples(dataset, model, "free", batch_size=2)
    assert summary.labelled == 2
    assert summary.failures == {
        samples[1].id: "free_prompt: no prompt in field 'q'",
        samples[2].id: "free_prompt: field 'q' holds 2 prompts; task 'free_prompt' sends one",
        samples[3].id: "free_prompt: no prompt in field 'q'",
    }
    assert [dataset[s.id].free and dataset[s.id].free.label for s in samples] == ["alpha", None, None, None, "beta"]


def test_apply_model_types_the_field_by_the_first_answer(dataset, tiny_checkpoint, tokenizer):
    dataset.apply_model(_model(tiny_checkpoint, tokenizer, f"car{BOX}"), label_field="free")
    assert dataset.get_field("free").document_type is fol.Detections
    assert dataset.count("free.detections") == 5


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({}, "need text"),
        ({"prompt": "   "}, "The prompt is empty"),
        ({"prompt": "<OD>"}, "prompt: The prompt holds '<OD>', the token of task 'detection'"),
        ({"prompt": "x", "tiles": 2}, "none of the tasks"),
        ({"prompt": "x", "nms_iou": 0.5}, "none of the tasks"),
        ({"prompt": "x", "classes": ["a"]}, "none of the tasks"),
        ({"prompt": "x", "regions_field": "gt"}, "none of the tasks"),
    ],
)
def test_bad_options_are_refused_in_one_line(options, error):
    with pytest.raises(ValueError, match=error) as caught:
        Florence2ModelConfig({"task": "free_prompt", "model": "org/any", **options})
    assert "\n" not in str(caught.value)


def test_a_free_prompt_is_not_fine_tuned():
    with pytest.raises(ValueError, match="task free_prompt cannot be fine-tuned") as caught:
        read_train_options({"task": "free_prompt", "output_dir": "/tmp/x", "label_field": "gt"})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<s>a cat</s><pad><pad>", ("Classification", "a cat")),
        (f"</s><s>car{BOX}</s>", ("Detections", f"car{BOX}")),
        ("<s></s>", None),
    ],
)
def test_to_label_reads_a_free_answer_by_its_kind(text, expected):
    label = to_label("free_prompt", text)
    got = None if label is None else (type(label).__name__, getattr(label, "label", None) or label.answer)
    assert got == expected


def test_a_dataset_with_an_existing_classification_field_is_labelled_through_it(dataset, tiny_checkpoint, tokenizer):
    dataset.add_sample(fo.Sample(filepath=dataset.first().filepath, free=fol.Classification(label="mine")))
    model = _model(tiny_checkpoint, tokenizer, f"car{BOX}")
    summary = label_samples(dataset, model, "free", skip_existing=True)
    assert (summary.skipped, summary.labelled) == (1, 5)
    assert sorted(dataset.values("free.label")) == ["car" + BOX] * 5 + ["mine"]
