"""The Florence-2 task table: the single source of truth for every task.

Prompts, parsing, label types, CLI choices and operator choices all derive
from :data:`TASKS`. This module imports nothing outside the standard library.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

# What a task reads besides the image.
Input = Literal["none", "text", "region"]
# How the generated text is parsed (see ``parsing.py``): text; labelled boxes; boxes with no
# names (proposals); boxes named by caption phrases (pronouns and generic words dropped);
# text with a quad; polygons; boxes, or polygons in ``<poly>`` groups; free: a fine-tune's own answer,
# text or labelled boxes, whichever it holds.
Answer = Literal["text", "boxes", "unnamed_boxes", "phrase_boxes", "quads", "polygons", "boxes_or_polygons", "free"]
# The FiftyOne label type a task writes; a free prompt's field is typed by its existing type, else its first
# answer (see ``labels.convert``).
LabelType = Literal["Classification", "Detections", "Polylines", "Classification or Detections"]


@dataclass(frozen=True)
class Task:
    """One Florence-2 task.

    Attributes:
        name: the name users type (``detection``)
        token: Florence-2's task token (``<OD>``); empty for the free prompt,
            which has none
        question: the text the model was trained on; ``{input}`` marks where
            the prompt or region goes (the free prompt's is ``{input}`` alone)
        input: what the task needs besides the image: ``none``, ``text``
            (a prompt) or ``region`` (one box per generation)
        answer: the shape of the generated text
        label_type: the FiftyOne label written for one sample
        max_new_tokens: the default generation budget
        description: one line for help texts and dropdowns
        takes_classes: whether a list of classes may stand for the prompt,
            one generation per class
        labelled_by_prompt: whether each output is labelled by the prompt
            (or class) that asked for it, rather than by the model's text
        can_mask: whether the output can be written as instance masks
        unnamed_label: the label of an output the model gives no name
        empty_text_ok: whether an empty text answer means something (an
            image with no text), so that an empty label can train it
    """

    name: str
    token: str
    question: str
    input: Input
    answer: Answer
    label_type: LabelType
    max_new_tokens: int
    description: str
    takes_classes: bool = False
    labelled_by_prompt: bool = False
    can_mask: bool = False
    unnamed_label: str | None = None
    empty_text_ok: bool = False

    @property
    def structured(self) -> bool:
        """Whether the answer holds locations (region tasks echo theirs), or may (a free prompt's): no n-gram
        blocking then."""
        return self.answer != "text" or self.input == "region"

    @property
    def shown_token(self) -> str:
        """The token as tables show it: the free prompt's is the user's own prompt."""
        return self.token or "(your prompt)"

    @property
    def free(self) -> bool:
        """Whether the task sends the user's prompt as given, and reads whatever the answer holds."""
        return self.answer == "free"

    @property
    def label_types(self) -> tuple[str, ...]:
        """The FiftyOne label types the task's field may hold (two for the free prompt)."""
        return tuple(self.label_type.split(" or "))

    @property
    def finds_instances(self) -> bool:
        """Whether the model finds the boxes or polygons itself (from the image, or the image and a text):
        these can be tiled and suppressed; region tasks answer about boxes they are given (and a free
        prompt's answer may be text)."""
        return self.answer not in ("text", "free") and self.input != "region"

    @property
    def boxes_per_region(self) -> bool:
        """Whether each input region gets a text answer, written on that region's box."""
        return self.input == "region" and self.answer == "text"

    @property
    def echoes_region(self) -> bool:
        """Whether the answer repeats its input region after the text (``car<loc_52>...<loc_774>``)."""
        return self.boxes_per_region


TASKS: tuple[Task, ...] = (
    Task("caption", "<CAPTION>", "What does the image describe?",
         "none", "text", "Classification", 64, "short caption"),
    Task("detailed_caption", "<DETAILED_CAPTION>",
         "Describe in detail what is shown in the image.",
         "none", "text", "Classification", 256, "detailed caption"),
    Task("more_detailed_caption", "<MORE_DETAILED_CAPTION>",
         "Describe with a paragraph what is shown in the image.",
         "none", "text", "Classification", 512, "paragraph caption"),
    Task("ocr", "<OCR>", "What is the text in the image?",
         "none", "text", "Classification", 512, "all text in the image",
         empty_text_ok=True),
    Task("ocr_with_region", "<OCR_WITH_REGION>",
         "What is the text in the image, with regions?",
         "none", "quads", "Detections", 1023, "text lines with their quads"),
    Task("detection", "<OD>", "Locate the objects with category name in the image.",
         "none", "boxes", "Detections", 1023, "object detection"),
    Task("dense_region_caption", "<DENSE_REGION_CAPTION>",
         "Locate the objects in the image, with their descriptions.",
         "none", "boxes", "Detections", 1023, "boxes with short captions"),
    Task("region_proposal", "<REGION_PROPOSAL>",
         "Locate the region proposals in the image.",
         "none", "unnamed_boxes", "Detections", 1023, "unlabeled object proposals",
         unnamed_label="roi"),
    Task("phrase_grounding", "<CAPTION_TO_PHRASE_GROUNDING>",
         "Locate the phrases in the caption: {input}",
         "text", "phrase_boxes", "Detections", 512, "boxes for the phrases of a caption"),
    Task("segmentation", "<REFERRING_EXPRESSION_SEGMENTATION>",
         "Locate {input} in the image with mask",
         "text", "polygons", "Polylines", 1023, "polygon for a referring expression",
         takes_classes=True, labelled_by_prompt=True, can_mask=True),
    Task("open_vocabulary_detection", "<OPEN_VOCABULARY_DETECTION>",
         "Locate {input} in the image.",
         "text", "boxes_or_polygons", "Detections", 512, "boxes for given classes",
         takes_classes=True, labelled_by_prompt=True),
    Task("region_to_segmentation", "<REGION_TO_SEGMENTATION>",
         "What is the polygon mask of region {input}",
         "region", "polygons", "Polylines", 1023, "polygon inside each input box",
         can_mask=True),
    Task("region_to_category", "<REGION_TO_CATEGORY>", "What is the region {input}?",
         "region", "text", "Detections", 32, "category of each input box"),
    Task("region_to_description", "<REGION_TO_DESCRIPTION>",
         "What does the region {input} describe?",
         "region", "text", "Detections", 64, "description of each input box"),
    Task("region_to_ocr", "<REGION_TO_OCR>", "What text is in the region {input}?",
         "region", "text", "Detections", 256, "text inside each input box"),
    Task("free_prompt", "", "{input}", "text", "free", "Classification or Detections", 1023,
         "a fine-tune's own prompt, sent as given: text, or labelled boxes", unnamed_label="object"),
)  # fmt: skip

TASK_NAMES: tuple[str, ...] = tuple(task.name for task in TASKS)
DEFAULT_TASK: str = TASK_NAMES[0]
# Fine-tuning starts from the labels teams correct most: boxes.
DEFAULT_TRAIN_TASK: str = "detection"

# Florence-2's location bins: ``<loc_0>`` .. ``<loc_999>``, relative to the full image.
BINS = 1000
# The tokens Florence-2's vocabulary adds besides the task tokens and location bins, without
# their angle brackets; each also has a closing form (``</od>``). The tokenizer matches them
# anywhere in a text, so a prompt holding one would change the task.
VOCABULARY_TOKENS: tuple[str, ...] = (
    "s", "pad", "unk", "mask", "image", "od", "ocr", "cap", "ncap", "dcap", "grounding", "seg", "sep",
    "region_cap", "region_to_desciption", "proposal", "poly", "and",
)  # fmt: skip

_BY_KEY = {task.name: task for task in TASKS} | {task.token: task for task in TASKS if task.token}


def get_task(name_or_token: str | Task) -> Task:
    """Returns the task for a name (``detection``) or a token (``<OD>``)."""
    if isinstance(name_or_token, Task):
        return name_or_token
    key = name_or_token.strip() if isinstance(name_or_token, str) else name_or_token
    try:
        return _BY_KEY[key]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown Florence-2 task {name_or_token!r}. Choose one of: {', '.join(TASK_NAMES)} (or their tokens)."
        ) from None


def get_tasks(names: str | Task | list[str | Task] | tuple[str | Task, ...]) -> tuple[Task, ...]:
    """Returns the tasks for one name or a list of names, refusing repeats."""
    one = isinstance(names, (str, Task)) or not isinstance(names, Iterable)  # 7 or None: unknown, not "not iterable"
    items = [names] if one else list(names)
    if not items:
        raise ValueError("At least one task is required.")
    tasks = tuple(get_task(item) for item in items)
    names_seen = [task.name for task in tasks]
    repeated = sorted({name for name in names_seen if names_seen.count(name) > 1})
    if repeated:
        raise ValueError(f"Task(s) given more than once: {', '.join(repeated)}.")
    return tasks
