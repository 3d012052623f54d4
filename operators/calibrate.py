"""``florence2_calibrate``: calibrate a field's confidences on the current view (samples a person has
checked), record the calibration, and show the reliability diagram and the thresholds picked.

From Python::

    import fiftyone.operators as foo

    foo.execute_operator(
        "@fiftyone-florence2/florence2/florence2_calibrate",
        ctx=dict(view=dataset.match_tags("reviewed"), params=dict(pred_field="florence2_detection",
                                                                  gt_field="ground_truth")),
    ).result["thresholds"]  # passes straight to confidence_thresh
"""

from __future__ import annotations

from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_florence2.autolabel.calibrate import LABEL_TYPES, calibrate, check_calibration, read_options
from fiftyone_florence2.core.calibration_options import CALIBRATE, CALIBRATE_OPTIONS
from fiftyone_florence2.core.errors import for_route

from .form import option_input

_FIELDS = ("pred_field", "gt_field")


def _params(ctx: Any) -> dict[str, Any]:
    """The form's values, a blank one read as not given."""
    names = {option.name for option in CALIBRATE_OPTIONS if option.form}
    return {name: value for name, value in (ctx.params or {}).items() if name in names and value not in (None, "")}


def _problem(ctx: Any, params: dict[str, Any]) -> str | None:
    """Why these values cannot calibrate the target view (checked as the run would, writing nothing)."""
    if ctx.dataset is None:
        return "Open a dataset first."
    try:
        check_calibration(ctx.target_view(), read_options(**params))
    except (TypeError, ValueError) as e:
        return for_route(e, "app")
    return None


def _label_fields(ctx: Any) -> list[str]:
    if ctx.dataset is None:
        return []
    return [name for kind in LABEL_TYPES for name in ctx.dataset.get_field_schema(embedded_doc_type=kind)]


class Florence2Calibrate(foo.Operator):
    @property
    def config(self) -> foo.OperatorConfig:
        return foo.OperatorConfig(
            name="florence2_calibrate",
            label="Florence-2: calibrate confidences",
            description="How often a label at each confidence is right, on reviewed samples; picks the thresholds "
            "that reach a target precision",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=False,
        )

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        inputs.view_target(ctx, action_description="Calibrate on")
        fields = _label_fields(ctx)
        for name in _FIELDS:
            option = CALIBRATE[name]
            view = types.DropdownView(label=option.form_label, description=option.description)
            for field in fields:
                view.add_choice(field, label=field)
            inputs.str(name, required=True, view=view)
        for option in CALIBRATE_OPTIONS:
            if option.form and option.name not in _FIELDS:
                option_input(inputs, option)
        params = _params(ctx)
        problem = _problem(ctx, params) if all(params.get(name) for name in _FIELDS) else None
        if problem:
            inputs.view("problem", types.Error(label="Cannot calibrate", description=problem), invalid=True,
                        error_message=problem)  # fmt: skip
        return types.Property(inputs, view=types.View(label="Florence-2: calibrate confidences"))

    def execute(self, ctx: Any) -> dict[str, Any]:
        """Calibrates the target view; the report, the thresholds and the diagram (a PNG data URI)."""
        params = _params(ctx)
        try:
            result = calibrate(ctx.target_view(), params.pop("pred_field", None), params.pop("gt_field", None),
                               **params)  # fmt: skip
        except (TypeError, ValueError) as e:
            raise ValueError(for_route(e, "app")) from None
        return {
            "key": result.key,
            "thresholds": result.thresholds,
            "report": "```\n" + result.describe() + "\n```",
            "diagram": result.png_data_uri(),
        }

    def resolve_output(self, ctx: Any) -> types.Property | None:
        result = ctx.results or {}
        if "diagram" not in result:
            return None
        outputs = types.Object()
        outputs.view("diagram", types.ImageView(label="Reliability diagram, and precision and recall by threshold",
                                                alt="reliability diagram", width="100%"))  # fmt: skip
        outputs.str("report", label=f"Calibration {result['key']} (recorded on the dataset)", view=types.MarkdownView())
        return types.Property(outputs, view=types.View(label="Florence-2 calibration"))
