"""The App side of fiftyone-florence2: FiftyOne operators, thin adapters over the library."""

from .apply import ApplyFlorence2

OPERATORS = (ApplyFlorence2,)


def register(plugin) -> None:
    """Registers the operators on a FiftyOne plugin context."""
    for operator in OPERATORS:
        plugin.register(operator)
