"""Every run option, declared once: its name, default, check and help. Standard library only.

:class:`~fiftyone_florence2.runs.config.Florence2ModelConfig`, the ``florence2``
command line, the App's form, the run record and ``docs/OPTIONS.md`` all
derive from :data:`MODEL_OPTIONS` and :data:`RUN_OPTIONS`; nothing else
restates a default or a check.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fiftyone_florence2.core.checkpoints import DEFAULT_CHECKPOINT, resolve_checkpoint
from fiftyone_florence2.core.errors import OptionError, literal, named
from fiftyone_florence2.core.prompts import check_prompt
from fiftyone_florence2.core.tasks import DEFAULT_TASK, TASK_NAMES, Task, get_tasks
from fiftyone_florence2.core.thresholds import read_thresholds

Kind = Literal["task", "text", "int", "float", "bool", "choice", "texts", "field", "shard", "thresholds", "any"]
# Where an option is recorded in a run's settings: beside the tasks, or under "generation".
Group = Literal["model", "input", "generation", "run", "training"]

AUTO = "auto"
DEVICES = (AUTO, "cuda", "mps", "cpu")
DTYPES = (AUTO, "float32", "bfloat16", "float16")
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
# The released checkpoints' text encoder has 1024 positions; the image takes 577 and <s>, </s> two.
PROMPT_ROOM = 1024 - 577 - 2
_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*$")
_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
# Tiles per side: 8 is 64 tiles an image, each about 7 MB of pixel values at 768 x 768.
MAX_TILES = 8
MAX_TILE_OVERLAP = 0.9


def whole_number(name: str, value: Any, minimum: int = 1) -> int:
    """Returns ``value`` as an int, or raises ``ValueError`` unless it is a whole number >= ``minimum``."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(f"{name} must be a whole number of at least {minimum}, got {value!r}.")
    if value.__index__() < minimum:
        raise ValueError(f"{name} must be a whole number of at least {minimum}, got {value!r}.")
    return value.__index__()


def field_name(name: str, value: Any, nested: bool = True) -> str:
    """Returns ``value`` if it names a field (``ground_truth``, or ``meta.caption`` when ``nested``),
    else raises ``ValueError``."""
    if not isinstance(value, str) or not _FIELD_NAME.match(value) or (not nested and "." in value):
        raise ValueError(
            f"{name} must be a field name of letters, digits and underscores that starts with a letter "
            f"(dots for embedded fields), got {value!r}."
        )
    return value


def positive_number(name: str, value: Any) -> float:
    """Returns ``value`` as a float above 0, or raises ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a number above 0, got {value!r}.")
    return float(value)


_TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
_FALSE_WORDS = frozenset({"false", "no", "off", "0", ""})


def boolean(name: str, value: Any) -> bool:
    """``value`` as a bool: a bool, 0 or 1, or a word such as ``"true"``/``"false"`` (forms and
    environment variables send text); anything else raises ``ValueError``."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS | _FALSE_WORDS:
        return value.strip().lower() in _TRUE_WORDS
    raise ValueError(f"{name} must be true or false, got {value!r}.")


def finite_number(name: str, value: Any, what: str) -> float:
    """Returns ``value`` as a float, or raises ``ValueError`` (saying it must be ``what``) unless it is a
    finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be {what}, got {value!r}.")
    return float(value)


def fraction(name: str, value: Any) -> float:
    """Returns ``value`` as a float in [0, 1], or raises ``ValueError``."""
    number = finite_number(name, value, "a number from 0 to 1")
    if not 0 <= number <= 1:
        raise ValueError(f"{name} must be from 0 to 1 (confidences are probabilities), got {value!r}.")
    return number


def tile_grid(name: str, value: Any) -> int:
    """A whole number of tiles per side, from 1 (no tiles) to :data:`MAX_TILES`."""
    grid = whole_number(name, value)
    if grid > MAX_TILES:
        raise ValueError(f"{name} must be at most {MAX_TILES} ({MAX_TILES**2} tiles an image), got {value!r}.")
    return grid


def overlap_fraction(name: str, value: Any) -> float:
    """A fraction of a tile in [0, :data:`MAX_TILE_OVERLAP`)."""
    number = finite_number(name, value, f"a number from 0 to below {MAX_TILE_OVERLAP}")
    if not 0 <= number < MAX_TILE_OVERLAP:
        raise ValueError(f"{name} must be from 0 to below {MAX_TILE_OVERLAP} (a fraction of a tile), got {value!r}.")
    return number


def iou_fraction(name: str, value: Any) -> float:
    """An intersection over union in [0, 1]."""
    number = finite_number(name, value, "an intersection over union from 0 to 1")
    if not 0 <= number <= 1:
        raise ValueError(f"{name} must be an intersection over union from 0 to 1, got {value!r}.")
    return number


def device_name(name: str, value: Any) -> str | None:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps``; ``auto`` (or None) leaves the choice to the runner."""
    if value in (None, "", AUTO):
        return None
    if not isinstance(value, str) or not _DEVICE.match(value.strip()):
        raise ValueError(f"{name} must be one of auto, cpu, cuda, cuda:N or mps, got {value!r}.")
    return value.strip()


def dtype_name(name: str, value: Any) -> str | None:
    """A dtype name (or alias such as ``bf16``); ``auto`` (or None) leaves the choice to the runner."""
    key = _DTYPE_ALIASES.get(value.lower(), value.lower()) if isinstance(value, str) else value
    if key in (None, "", AUTO):
        return None
    if key not in DTYPES:
        raise ValueError(f"{name} must be one of {', '.join(DTYPES)}, got {value!r}.")
    return key


def task_names(name: str, value: Any) -> Any:
    """A task name or token, or a list of them, kept as given once each is known."""
    get_tasks(value)
    return value


def texts(name: str, value: Any) -> list[str]:
    """A non-empty list of prompts, from a list or a comma-separated string; repeats are dropped."""
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{name} must be a non-empty list of texts, got {value!r}.")
    return list(dict.fromkeys(check_prompt(text) for text in value))


def shard(name: str, value: Any) -> tuple[int, int]:
    """``(index, count)`` from a pair or ``"INDEX/COUNT"``, with ``0 <= index < count``."""
    if isinstance(value, str):
        value = value.split("/")
    try:
        index, count = (int(part) for part in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be INDEX/COUNT such as 0/4, got {value!r}.") from None
    if not (count >= 1 and 0 <= index < count):
        raise ValueError(f"{name} must have 0 <= INDEX < COUNT, got {index}/{count}.")
    return index, count


@dataclass(frozen=True)
class Option:
    """One run option.

    Attributes:
        name: the keyword (``batch_size``); the CLI flag is ``--batch-size``
        default: the value when not given
        help: one line for the CLI, the form and the docs
        kind: how text from the CLI or the form is read
        check (None): ``check(name, value) -> value`` normalises a given value
            or raises ``ValueError``; ``None`` is always accepted where the
            default is ``None``
        applies (None): the tasks that read the option (``None``: every run)
        requires (None): ``requires(values) -> reason`` says why the option
            cannot be given beside the run's other values (the options, and
            ``media``: ``image``, ``video`` or ``frames`` for a frames view),
            or None when it can
        choices: the values a ``choice`` offers
        group: where the run record keeps it
        flag (None): a CLI flag other than ``--<name>``; a boolean's flag
            stores the opposite of its default
        cli, form: whether the command line and the App's form offer it
        label (None): the App form's label where the name, capitalised, does not read well
        off (None): what a boolean that is on by default does when turned off; its CLI flag's help
    """

    name: str
    default: Any
    help: str
    kind: Kind = "any"
    check: Callable[[str, Any], Any] | None = None
    applies: Callable[[Task], bool] | None = None
    requires: Callable[[Mapping[str, Any]], str | None] | None = None
    choices: tuple[str, ...] = ()
    group: Group = "generation"
    flag: str | None = None
    cli: bool = True
    form: bool = True
    label: str | None = None
    off: str | None = None

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def form_label(self) -> str:
        """The App form's label: ``Skip existing`` for ``skip_existing``, unless declared."""
        return self.label or self.name.replace("_", " ").capitalize()

    @property
    def full_help(self) -> str:
        """The help, with what turning the option off does, if declared."""
        return f"{self.help} (off: {self.off})" if self.off else self.help

    @property
    def flag_help(self) -> str:
        """The CLI flag's help: a flag that turns a default-on option off says what it does."""
        return self.off if self.kind == "bool" and self.default and self.off else self.full_help

    @property
    def description(self) -> str:
        """The help as the form's sentence: capitalised, unless it starts with a value (``cuda, ...``)."""
        first = self.full_help.split(" ", 1)[0].strip(",;:")
        return self.full_help if first in self.choices else self.full_help[:1].upper() + self.full_help[1:]

    def read(self, value: Any) -> Any:
        """The checked value; ``None`` means the default."""
        if value is None:
            value = self.default
        if value is None or self.check is None:
            return value
        try:
            return self.check(self.name, value)
        except OptionError:
            raise
        except ValueError as e:  # "<name> must be ...": each route names the option its own way
            text = str(e)
            if type(e) is not ValueError or not re.match(re.escape(self.name) + r"[ \[:]", text):
                raise
            raise OptionError(named(self.name) + literal(text[len(self.name) :]), self) from None


def given(option: Option, value: Any) -> bool:
    """Whether ``value`` was given for ``option``: set, and not its default (0 is given; False is not)."""
    return value is not None and value is not False and value != option.default


def refuse_unmet(options: Sequence[Option], values: Mapping[str, Any]) -> None:
    """Raises :class:`OptionError` for the first option given in ``values`` whose ``requires`` is not met."""
    for option in options:
        reason = option.requires(values) if option.requires and given(option, values.get(option.name)) else None
        if reason:
            raise OptionError(f"{named(option.name)} was given, but {literal(reason)}.", option)


def _with_tiles(values: Mapping[str, Any]) -> str | None:
    if values.get("tiles") in (None, 1):
        return "tiles is 1 (off): pass tiles of 2 or more to tile the images, or leave tile_overlap out"
    return None


def _sampling_videos(values: Mapping[str, Any]) -> str | None:
    media = values.get("media")
    if media == "frames":
        return ("this is a frames view, whose frames are sampled already: pass it with the video dataset or "
                "view instead, or leave it out")  # fmt: skip
    if media != "video":
        return f"this collection holds {media} media, not videos: leave it out"
    return None


def _takes_text(task: Task) -> bool:
    return task.input == "text"


def _finds_instances(task: Task) -> bool:
    return task.finds_instances


MODEL_OPTIONS: tuple[Option, ...] = (
    Option("task", DEFAULT_TASK, "a task name or token, or a list of them (one field each)", "task", task_names,
           choices=TASK_NAMES, group="model"),
    Option("model", DEFAULT_CHECKPOINT, "a Hub id, or a local checkpoint directory in transformers' native format",
           "text", lambda name, value: resolve_checkpoint(value), group="model", label="Checkpoint"),
    Option("revision", None, "a Hub branch, tag or commit", "text", group="model"),
    Option("prompt", None, "the text every sample's generation reads; with the task's question it must fit in "
           f"{PROMPT_ROOM} tokens on the released checkpoints", "text",
           lambda name, value: check_prompt(value), _takes_text, group="input"),
    Option("prompt_field", None, "a field with each sample's text: text, a list of texts, or labels", "field",
           field_name, _takes_text, group="input"),
    Option("classes", None, "texts (or one comma-separated text), one generation each, labelled by its class",
           "texts", texts, lambda task: task.takes_classes, group="input"),
    Option("regions_field", None, "a Detections field whose boxes region tasks read, one generation per box",
           "field", field_name, lambda task: task.input == "region", group="input"),
    Option("masks", False, "write segmentation as Detections with instance masks instead of Polylines", "bool",
           boolean, lambda task: task.can_mask, group="input"),
    Option("batch_size", 8, "images per batch, and the most images (or tiles) a vision pass, and generations a "
           "generate call, read", "int", whole_number),
    Option("num_beams", 3, "beam search width; 1 (greedy) is fastest", "int", whole_number, label="Beams"),
    Option("max_new_tokens", None, "a token budget for every task instead of each task's own", "int", whole_number),
    Option("confidence_thresh", None, "drop labels whose confidence is lower: a number from 0 to 1 for every "
           "class, or CLASS=NUMBER pairs with a bare number (or *=NUMBER) for the other classes, e.g. 0.4,car=0.7",
           "thresholds", read_thresholds, label="Confidence threshold"),
    Option("tiles", 1, "split each image into an N x N grid of overlapping tiles, each seen at the model's full "
           "resolution, and merge their boxes: finds small objects in large images, for N x N the work (1: off)",
           "int", tile_grid, _finds_instances),
    Option("tile_overlap", 0.2, "how much neighbouring tiles overlap, as a fraction of a tile (0 to below "
           f"{MAX_TILE_OVERLAP}); with tiles of 2 or more",
           "float", overlap_fraction, _finds_instances, requires=_with_tiles),
    Option("nms_iou", None, "drop a box or polygon that overlaps a more confident one of the same label by more "
           "than this intersection over union (0 to 1), e.g. a repeated box", "float", iou_fraction,
           _finds_instances, label="Suppress overlaps above IoU"),
    Option("device", None, "cuda, cuda:N, mps or cpu; auto picks the best available", "choice", device_name,
           choices=DEVICES),
    Option("dtype", None, "float32, bfloat16 or float16; auto is bf16/fp16 on GPUs and fp32 on CPU", "choice",
           dtype_name, choices=DTYPES, label="Precision"),
    Option("attn_implementation", "sdpa", "the attention kernel", "text", cli=False, form=False),
    Option("scores", True, "compute confidences from token probabilities", "bool",
           boolean, cli=False, form=False),
    Option("skip_failures", True, "record a failing sample and go on", "bool", boolean, flag="--fail-fast",
           form=False, off="stop at the first failing sample"),
    Option("generate_kwargs", None, "extra generate() arguments, or a function (task, questions) -> dict",
           cli=False, form=False),
)  # fmt: skip

RUN_OPTIONS: tuple[Option, ...] = (
    Option("label_field", None, "the field to write, or the prefix of one field per task (default florence2_<task>)",
           "text", group="run", label="Output field"),
    Option("skip_existing", False, "fill only the fields a sample lacks; touch nothing else", "bool",
           boolean, group="run"),
    Option("overwrite", False, "replace existing labels", "bool", boolean, group="run"),
    Option("embeddings_field", None, "also store each image's embedding (its vision features, mean-pooled and "
           "L2-normalised) in this vector field, from the labelling's own vision pass", "field",
           lambda name, value: field_name(name, value, nested=False), group="run"),
    Option("shard", None, "label one of COUNT disjoint parts (INDEX/COUNT)", "shard", shard, group="run",
           form=False),
    Option("fps", None, "for video datasets and views: frames per second to sample and label (default: every "
           "frame)", "float",
           positive_number, group="run", requires=_sampling_videos, label="Frames per second"),
    Option("frame_step", 1, "for video datasets and views: label every Nth sampled frame", "int", whole_number,
           group="run",
           requires=_sampling_videos),
)  # fmt: skip

OPTIONS: dict[str, Option] = {option.name: option for option in (*MODEL_OPTIONS, *RUN_OPTIONS)}
DEFAULT_LABEL_PREFIX = "florence2"


def check_existing_policy(skip_existing: bool, overwrite: bool) -> None:
    """What to do with existing labels: skip them, replace them, or (neither) refuse them; not both."""
    if skip_existing and overwrite:
        raise OptionError(
            "{skip_existing:name} and {overwrite:name} exclude each other: choose one.",
            OPTIONS["skip_existing"],
            OPTIONS["overwrite"],
        )


def default_label_field(tasks: Sequence[Task]) -> str:
    """``florence2_<task>`` for one task, and the prefix ``florence2`` for several, which gives each
    task the same ``florence2_<task>`` field."""
    return f"{DEFAULT_LABEL_PREFIX}_{tasks[0].name}" if len(tasks) == 1 else DEFAULT_LABEL_PREFIX


def options_table(options: Sequence[Option] | None = None) -> str:
    """The options (default: the labelling ones) as a markdown table (``docs/OPTIONS.md`` holds it)."""
    rows = ["| option | default | CLI | App form | what it does |", "|---|---|---|---|---|"]
    for option in OPTIONS.values() if options is None else options:
        cli = f"`{option.cli_flag}`" if option.cli else ""
        rows.append(
            f"| `{option.name}` | `{option.default!r}` | {cli} | {'yes' if option.form else ''} | {option.full_help} |"
        )
    return "\n".join(rows)
