"""The errors fiftyone-florence2 raises on purpose, under one base: ``except Florence2Error`` catches them all.

Each also derives from the built-in error it stands for (``ValueError`` for a refusal, ``RuntimeError``
for a failure), so code written against those keeps working.
"""

from __future__ import annotations


class Florence2Error(Exception):
    """Base of every error fiftyone-florence2 raises on purpose; ``str(error)`` is the reason a user reads."""


class SampleError(Florence2Error, RuntimeError):
    """A sample that could not be labelled, raised when ``skip_failures`` is off."""

    def __init__(self, sample_id: str | None, reason: str):
        super().__init__(f"Sample {sample_id or '(no id)'}: {reason}")
        self.sample_id = sample_id
        self.reason = reason


class NothingToRead(Florence2Error, ValueError):
    """A sample that gives a task nothing to read (no regions): skipped with this reason, not failed."""


class CheckpointError(Florence2Error, ValueError):
    """A checkpoint that cannot or must not be loaded."""


class ImageLoadError(Florence2Error):
    """An image that cannot be used; ``str(error)`` is the reason a user reads."""


class FieldLockedError(Florence2Error, RuntimeError):
    """Another live run is writing the field (or the output directory)."""
