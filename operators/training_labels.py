"""``florence2_training_labels``: gather what a person vouches for into one field to fine-tune on, and open it.

The App's step between the review queue and **Florence-2: fine-tune**: the reviewed slice's checked labels
and the samples whose every prediction was accepted are copied into a new field (``training_labels``); the
App then opens the saved view of the samples that have some. From Python::

    import fiftyone.operators as foo

    foo.execute_operator(
        "@fiftyone-florence2/florence2/florence2_training_labels",
        ctx=dict(view=dataset.view(), params=dict(pred_field="predictions", into="train_labels")),
    )
"""

from __future__ import annotations

from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_florence2.autolabel.loop import ACCEPTED, gathered, gathered_lines, training_labels
from fiftyone_florence2.autolabel.queue import REVIEWED
from fiftyone_florence2.autolabel.wording import in_route_words

from .review import add_field_choice, form_label, tag_list

PARTIAL = "Partly accepted samples too"


class Florence2TrainingLabels(foo.Operator):
    @property
    def config(self) -> foo.OperatorConfig:
        return foo.OperatorConfig(
            name="florence2_training_labels",
            label="Florence-2: gather training labels",
            description="Copy the reviewed slice's checked labels and the fully accepted predictions into a "
            "new field to fine-tune on, and open them",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=False,
        )

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        inputs.view_target(ctx, action_description="Gather from")
        add_field_choice(inputs, ctx.dataset)
        inputs.str("into", label=form_label("into"), required=True, default="train_labels",
                   description="a new field for the labels to learn from (its saved view is named alike)")  # fmt: skip
        add_field_choice(inputs, ctx.dataset, "gt_field", required=False)
        inputs.str("accepted_tags", label=form_label("accepted_tags"), default=",".join(ACCEPTED))
        inputs.str("reviewed_tags", label=form_label("reviewed_tags"), default=",".join(REVIEWED))
        inputs.bool("partial", label=PARTIAL, default=False,
                    description="also learn from samples with only some labels accepted (left out by default: "
                    "their other objects would be learnt as nothing)")  # fmt: skip
        inputs.bool("overwrite", label="Overwrite", default=False,
                    description="replace a field this operator (or training_labels) wrote before")  # fmt: skip
        view = types.PromptView(label="Florence-2 training labels", submit_button_label="Gather")
        return types.Property(inputs, view=view)

    def execute(self, ctx: Any) -> dict[str, Any]:
        """Gathers the labels, opens their saved view, and returns what was copied and left out."""
        params = ctx.params
        into = params.get("into")
        try:
            view = training_labels(
                ctx.target_view(), params.get("pred_field"), into, gt_field=params.get("gt_field") or None,
                accepted_tags=tag_list(params.get("accepted_tags"), ACCEPTED),
                reviewed_tags=tag_list(params.get("reviewed_tags"), REVIEWED),
                overwrite=bool(params.get("overwrite")), partial=bool(params.get("partial")),
            )  # fmt: skip
        except ValueError as e:
            raise ValueError(in_route_words(str(e), "app")) from None
        found = gathered(view, into)
        lines = [in_route_words(line, "app") for line in gathered_lines(found, into)]
        message = " ".join([*lines, f"Fine-tune on them: Florence-2: fine-tune, with the label field {into!r}."])
        ctx.ops.reload_dataset()
        ctx.ops.set_view(view=ctx.dataset.load_saved_view(into))
        return {"field": into, **found, "message": message}

    def resolve_output(self, ctx: Any) -> types.Property | None:
        if not ctx.results:
            return None
        outputs = types.Object()
        outputs.str("message", label="Training labels")
        return types.Property(outputs, view=types.View(label="Florence-2 training labels"))
