"""``florence2_review_queue``: band the current view's predicted labels for review, and open the queue.

Each unreviewed label of the chosen predictions field is tagged with its band
(accepted / review / skim / rejected by default) from typed thresholds or a
calibration's; a view per band is saved, least certain first, and the App
opens the band asked for. Labels or samples tagged ``reviewed`` are left alone.
From Python::

    import fiftyone.operators as foo

    foo.execute_operator(
        "@fiftyone-florence2/florence2/florence2_review_queue",
        ctx=dict(view=dataset.view(), params=dict(pred_field="predictions", thresholds="car=0.8,*=0.6")),
    )
"""

from __future__ import annotations

from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_florence2.autolabel.queue import review_queue
from fiftyone_florence2.autolabel.reading import label_path
from fiftyone_florence2.autolabel.wording import CONTROLS, in_route_words
from fiftyone_florence2.core.review import DEFAULT_BANDS, bands_as_value, read_bands

DEFAULT_BANDS_TEXT = ",".join(f"{name}={low:g}-{high:g}" for name, (low, high) in bands_as_value(DEFAULT_BANDS).items())


def form_label(name: str) -> str:
    """The App form's label for the Python argument ``name``."""
    return CONTROLS[name][1].strip('"')


def tag_list(text: Any, default: tuple[str, ...] | list[str]) -> list[str]:
    """The tags of a form's comma-separated text (``default`` when it is empty)."""
    return [tag.strip() for tag in (text or ",".join(default)).split(",") if tag.strip()]


def add_field_choice(inputs: Any, samples: Any, name: str = "pred_field", required: bool = True) -> list[str]:
    """A dropdown of the label fields of ``samples`` the auto-labelling steps read; returns them."""
    fields = prediction_fields(samples)
    choices = types.Dropdown()
    for field in fields:
        choices.add_choice(field, label=field)
    default = fields[0] if fields and required else None
    inputs.enum(name, choices.values(), label=form_label(name), view=choices, required=required, default=default)
    return fields


def prediction_fields(samples: Any) -> list[str]:
    """The fields of ``samples`` the queue can band."""
    found = []
    for name in samples.get_field_schema():
        try:
            label_path(samples, name)
        except ValueError:
            continue
        found.append(name)
    return found


def _open_band(params: dict[str, Any]) -> str:
    """The band to open: the one asked for, else the second from the top (the careful review)."""
    try:
        bands = read_bands("bands", params.get("bands") or DEFAULT_BANDS_TEXT)
    except ValueError:
        return "review"
    names = [band.name for band in bands]
    return params.get("open_band") if params.get("open_band") in names else names[1]


class Florence2ReviewQueue(foo.Operator):
    @property
    def config(self) -> foo.OperatorConfig:
        return foo.OperatorConfig(
            name="florence2_review_queue",
            label="Florence-2: review queue",
            description="Tag the current view's predicted labels accepted / to review / rejected by their "
            "confidence and open the queue, least certain first",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=False,
        )

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        inputs.view_target(ctx, action_description="Queue")
        add_field_choice(inputs, ctx.dataset)
        inputs.str("thresholds", label=form_label("thresholds"),
                   description="0.7, or per class: car=0.8,*=0.6 (where each class's accept band starts)")  # fmt: skip
        inputs.str("calibration", label=form_label("calibration"),
                   description="or the key of a calibration run, whose thresholds to use")  # fmt: skip
        inputs.bool("recalibrated", label=form_label("recalibrated"), default=False,
                    description="band and order by the calibration's recalibrated confidences instead of the raw "
                    "ones (a label is still accepted only when its raw confidence clears its threshold)")  # fmt: skip
        inputs.str("bands", label=form_label("bands"), default=DEFAULT_BANDS_TEXT,
                   description="NAME=LOW-HIGH bands tiling 0-1, for a threshold at the top band's low")  # fmt: skip
        inputs.str("reviewed_tags", label=form_label("reviewed_tags"), default="reviewed",
                   description="labels and samples with this tag are never re-tagged")  # fmt: skip
        inputs.str("open_band", label="Open band", default=_open_band(ctx.params))
        inputs.bool("overwrite", label="Overwrite", default=False,
                    description="replace calibrated confidences another calibration wrote on these labels")  # fmt: skip
        view = types.PromptView(label="Florence-2 review queue", submit_button_label="Queue")
        return types.Property(inputs, view=view)

    def execute(self, ctx: Any) -> dict[str, Any]:
        """Bands the target view's labels, opens the chosen band's view, and returns the counts."""
        params = ctx.params
        tags = tag_list(params.get("reviewed_tags"), ["reviewed"])
        try:
            queue = review_queue(
                ctx.target_view(), params.get("pred_field"), thresholds=params.get("thresholds") or None,
                bands=params.get("bands") or None, calibration=params.get("calibration") or None,
                reviewed_tags=tags, overwrite=bool(params.get("overwrite")),
                recalibrated=bool(params.get("recalibrated")),
            )  # fmt: skip
        except ValueError as e:
            raise ValueError(in_route_words(str(e), "app")) from None
        band = _open_band(params)
        ctx.ops.reload_dataset()
        ctx.ops.set_view(view=ctx.dataset.load_saved_view(queue.views[band]))
        return {"key": queue.key, "counts": queue.counts, "views": queue.views, "opened": queue.views[band],
                "left_alone": queue.left_alone, "message": queue.describe()}  # fmt: skip

    def resolve_output(self, ctx: Any) -> types.Property | None:
        if not ctx.results:
            return None
        outputs = types.Object()
        outputs.str("message", label="Review queue")
        outputs.str("opened", label="Opened (least certain first)")
        return types.Property(outputs, view=types.View(label="Florence-2 review queue"))
