"""``Florence2Runner`` at the import path earlier releases gave it; the model layer lives in
``fiftyone_florence2.engine`` (torch and transformers, no FiftyOne)."""

from fiftyone_florence2.engine.runner import Florence2Runner, GenerateKwargs, Timings

__all__ = ["Florence2Runner", "GenerateKwargs", "Timings"]
