"""The App side of fiftyone-florence2: FiftyOne operators, thin adapters over the library."""

from .apply import ApplyFlorence2
from .calibrate import Florence2Calibrate
from .dry_run import Florence2DryRun
from .review import Florence2ReviewQueue
from .status import Florence2Runs
from .train import Florence2Train
from .training_labels import Florence2TrainingLabels

OPERATORS = (
    ApplyFlorence2,
    Florence2DryRun,
    Florence2Runs,
    Florence2Train,
    Florence2Calibrate,
    Florence2ReviewQueue,
    Florence2TrainingLabels,
)


def register(plugin) -> None:
    """Registers the operators on a FiftyOne plugin context."""
    for operator in OPERATORS:
        plugin.register(operator)
