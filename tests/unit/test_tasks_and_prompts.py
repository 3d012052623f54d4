"""The task table and prompt building: plain data, plain strings."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from fiftyone_florence2.core.prompts import build_question, check_prompt, region_tokens, rel_to_bin
from fiftyone_florence2.core.tasks import TASK_NAMES, TASKS, get_task, get_tasks

ISSUE_TABLE = {
    "caption": "<CAPTION>",
    "detailed_caption": "<DETAILED_CAPTION>",
    "more_detailed_caption": "<MORE_DETAILED_CAPTION>",
    "ocr": "<OCR>",
    "ocr_with_region": "<OCR_WITH_REGION>",
    "detection": "<OD>",
    "dense_region_caption": "<DENSE_REGION_CAPTION>",
    "region_proposal": "<REGION_PROPOSAL>",
    "phrase_grounding": "<CAPTION_TO_PHRASE_GROUNDING>",
    "segmentation": "<REFERRING_EXPRESSION_SEGMENTATION>",
    "open_vocabulary_detection": "<OPEN_VOCABULARY_DETECTION>",
    "region_to_segmentation": "<REGION_TO_SEGMENTATION>",
    "region_to_category": "<REGION_TO_CATEGORY>",
    "region_to_description": "<REGION_TO_DESCRIPTION>",
    "region_to_ocr": "<REGION_TO_OCR>",
    "free_prompt": "",
}


def test_the_fifteen_florence2_tasks_with_their_tokens_and_the_free_prompt():
    assert {t.name: t.token for t in TASKS} == ISSUE_TABLE
    assert tuple(ISSUE_TABLE) == TASK_NAMES


def test_task_table_matches_transformers_processor(tiny_checkpoint):
    """Our questions are exactly the ones Florence-2 was trained on."""
    from transformers import Florence2Processor

    processor = Florence2Processor.from_pretrained(tiny_checkpoint)
    for task in (task for task in TASKS if not task.free):
        if task.input == "none":
            assert processor.task_prompts_without_inputs[task.token] == task.question
        else:
            assert processor.task_prompts_with_input[task.token] == task.question


@pytest.mark.parametrize(
    ("key", "name"),
    [("detection", "detection"), ("<OD>", "detection"), (" <OCR> ", "ocr"), ("region_to_ocr", "region_to_ocr")],
)
def test_get_task_by_name_or_token(key, name):
    assert get_task(key).name == name


@pytest.mark.parametrize("key", ["", "od", "<od>", "Detection", None, 3, "<OD>x"])
def test_get_task_unknown(key):
    with pytest.raises(ValueError, match="Unknown Florence-2 task"):
        get_task(key)


@pytest.mark.parametrize(
    ("names", "expected", "error"),
    [
        ("caption", ("caption",), None),
        (["caption", "<OD>"], ("caption", "detection"), None),
        ([], None, "At least one task"),
        (["caption", "<CAPTION>"], None, "more than once"),
        (7, None, "Unknown Florence-2 task 7"),  # regression: was "'int' object is not iterable"
        (None, None, "Unknown Florence-2 task None"),
        ([["caption"]], None, "Unknown Florence-2 task"),
    ],
)
def test_get_tasks(names, expected, error):
    if error:
        with pytest.raises(ValueError, match=error):
            get_tasks(names)
    else:
        assert tuple(t.name for t in get_tasks(names)) == expected


@pytest.mark.parametrize(
    ("task", "text", "region", "expected", "error"),
    [
        ("caption", None, None, "What does the image describe?", None),
        ("detection", None, None, "Locate the objects with category name in the image.", None),
        ("phrase_grounding", "a red car", None, "Locate the phrases in the caption: a red car", None),
        ("segmentation", "  the   dog\n", None, "Locate the dog in the image with mask", None),
        ("open_vocabulary_detection", "voiture rouge é", None, "Locate voiture rouge é in the image.", None),
        (
            "region_to_category",
            None,
            [0.1, 0.2, 0.3, 0.4],
            "What is the region <loc_100><loc_200><loc_400><loc_600>?",
            None,
        ),
        (
            "region_to_ocr",
            None,
            [0.0, 0.0, 1.0, 1.0],
            "What text is in the region <loc_0><loc_0><loc_999><loc_999>?",
            None,
        ),
        ("caption", "hello", None, None, "takes no prompt"),
        ("phrase_grounding", None, None, None, "needs a prompt"),
        ("phrase_grounding", "   ", None, None, "empty"),
        ("phrase_grounding", "find <OD> now", None, None, "Florence-2 tokens"),
        ("phrase_grounding", "a<loc_5>b", None, None, "Florence-2 tokens"),
        ("phrase_grounding", "a </s> b", None, None, "Florence-2 tokens"),
        ("phrase_grounding", 42, None, None, "must be a string"),
        ("region_to_category", None, None, None, "needs a region"),
        ("region_to_category", None, [0.1, 0.1, 0.0, 0.3], None, "no area"),
        ("region_to_category", None, [0.1, 0.1, 0.3], None, "must be"),
        ("region_to_category", None, [math.nan, 0.1, 0.2, 0.3], None, "finite"),
        # a free prompt is sent exactly as written: a fine-tune's own tokens, locations and spacing kept
        ("free_prompt", "<DocVQA>What is the total?", None, "<DocVQA>What is the total?", None),
        ("free_prompt", "<GENERATE_TAGS>", None, "<GENERATE_TAGS>", None),
        ("free_prompt", " two  spaces <loc_5><od>", None, " two  spaces <loc_5><od>", None),
        ("free_prompt", "{input} {0}", None, "{input} {0}", None),
        ("free_prompt", None, None, None, "needs a prompt"),
        ("free_prompt", " \n ", None, None, "empty"),
        ("free_prompt", "", None, None, "empty"),
        ("free_prompt", ["<OD>"], None, None, "must be a string"),
        ("free_prompt", "<OD>", None, None, "task 'detection'"),
        ("free_prompt", "<CAPTION_TO_PHRASE_GROUNDING>a car", None, None, "task 'phrase_grounding'"),
    ],
)
def test_build_question(task, text, region, expected, error):
    if error:
        with pytest.raises(ValueError, match=error):
            build_question(get_task(task), text=text, rel_xywh=region)
    else:
        assert build_question(get_task(task), text=text, rel_xywh=region) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [(0.0, 0), (0.0005, 0), (0.5, 500), (0.9999, 999), (1.0, 999), (1.7, 999), (-0.2, 0)]
)
def test_rel_to_bin_clamps(value, expected):
    assert rel_to_bin(value) == expected


def test_region_tokens_partly_outside_the_image_are_clamped():
    assert region_tokens([-0.2, 0.5, 1.4, 1.4]) == "<loc_0><loc_500><loc_999><loc_999>"


@pytest.mark.parametrize(
    "box",
    [
        [100, 200, 50, 80],
        [1.2, 0.1, 0.1, 0.1],
        [0.1, -0.5, 0.1, 0.2],
        [0.0, 0.0, 1.0, 1e306],
        [0.1, 0.1, math.inf, 0.1],
    ],
)
def test_region_tokens_refuse_boxes_that_are_not_relative_boxes_on_the_image(box):
    with pytest.raises(ValueError, match=r"not a relative|not a finite"):
        region_tokens(box)


def test_check_prompt_keeps_angle_brackets_that_are_not_tokens():
    assert check_prompt("a <b> sign") == "a <b> sign"


def test_pure_layer_imports_no_framework():
    """The task table, options, prompts, parsing, answers and decoding import no fiftyone, torch or transformers."""
    code = (
        "import sys; import fiftyone_florence2, fiftyone_florence2.core.tasks, fiftyone_florence2.core.prompts, "
        "fiftyone_florence2.core.parsing, fiftyone_florence2.core.answers, fiftyone_florence2.core.checkpoints, "
        "fiftyone_florence2.core.options, fiftyone_florence2.core.decoding; "
        "heavy = [m for m in ('fiftyone', 'torch', 'transformers', 'numpy') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ([0.5, 0.5, 0.0001, 0.0001], "<loc_500><loc_500><loc_501><loc_501>"),
        ([0.9999, 0.9999, 0.00005, 0.00005], "<loc_998><loc_998><loc_999><loc_999>"),
    ],
)
def test_a_region_thinner_than_a_bin_is_still_one_bin_wide(box, expected):
    assert region_tokens(box) == expected
