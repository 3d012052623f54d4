"""What a labelling run did: its counts, its reasons per sample, and the lines a person reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Samples a report lists by reason, per kind (failed, nothing to read, left out); the run record keeps all.
SHOWN_REASONS = 20


@dataclass
class Summary:
    """What a run did, one count per target sample.

    ``targeted`` = ``labelled`` + failed (``failures``) + skipped for want of
    input (``skips``) + ``deleted`` (gone before their labels were written).
    ``skipped`` counts the samples left out because they had every label already;
    ``embedded``, the embeddings stored in ``embeddings_field`` (and read back).
    On a video collection the targets are its frames, and each video that gave
    no frame to label (an unreadable file) is one failed target.
    """

    label_fields: dict[str, str]
    run_key: str | None = None
    targeted: int = 0
    labelled: int = 0
    skipped: int = 0
    deleted: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    skips: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    embeddings_field: str | None = None
    embedded: int = 0

    @property
    def images_per_second(self) -> float:
        done = self.labelled + len(self.failures) + len(self.skips)
        return done / self.seconds if self.seconds > 0 else 0.0

    def headline(self, label_types: dict[str, str], model_name: str | None = None) -> str:
        """One line: what was written where, how fast (with ``model_name``, the model the speed belongs to)."""
        fields = ", ".join(f"{name} ({label_types[task]})" for task, name in self.label_fields.items())
        speed = f"{self.images_per_second:.2f} images/s" + (f" with {model_name}" if model_name else "")
        return f"Labelled {self.labelled} of {self.targeted} sample(s) in {self.seconds:.1f} s ({speed}) into {fields}."

    def as_dict(self, shown: int | None = None) -> dict[str, Any]:
        """The counts and reasons as JSON, as the run record and the App's result keep them (``shown``:
        at most that many failure reasons)."""
        failures = dict(self.failures) if shown is None else dict(list(self.failures.items())[:shown])
        return {
            "label_fields": dict(self.label_fields),
            "run_key": self.run_key,
            "targeted": self.targeted,
            "labelled": self.labelled,
            "skipped": self.skipped,
            "failed": len(self.failures),
            "nothing_to_read": len(self.skips),
            "deleted": self.deleted,
            "embeddings_field": self.embeddings_field,
            "embedded": self.embedded,
            "seconds": round(self.seconds, 3),
            "failures": failures,
            "skips": dict(self.skips) if shown is None else dict(list(self.skips.items())[:shown]),
        }

    def report(self, paths: dict[str, str], label_types: dict[str, str], shown: int = SHOWN_REASONS,
               model_name: str | None = None) -> list[str]:  # fmt: skip
        """The lines a person reads after a run; ``paths`` maps sample ids to file paths."""
        lines = [self.headline(label_types, model_name)]
        if self.skipped:
            lines.append(f"Skipped {self.skipped} sample(s) that already had every label.")
        if self.deleted:
            lines.append(f"{self.deleted} sample(s) were deleted during the run.")
        if self.embeddings_field:
            hint = f" {similarity_hint(self.embeddings_field)}" if self.embedded else ""
            lines.append(f"Stored {self.embedded} embedding(s) in {self.embeddings_field}.{hint}")
        for title, reasons in (("could not be labelled", self.failures), ("had nothing to read", self.skips)):
            if reasons:
                lines.append(f"{len(reasons)} sample(s) {title}:")
                lines += reason_lines(reasons, paths, shown)
        return lines


def reason_lines(reasons: dict[str, str], paths: dict[str, str], shown: int = SHOWN_REASONS) -> list[str]:
    """A line per sample (by file path, where ``paths`` has it) and its reason: at most ``shown``, then how
    many more."""
    lines = [f"  {paths.get(i, i)}: {reason}" for i, reason in list(reasons.items())[:shown]]
    return lines + ([f"  ... and {len(reasons) - shown} more"] if len(reasons) > shown else [])


def sample_paths(dataset: Any, ids: Any) -> dict[str, str]:
    """``{sample id: file path}`` for the samples of ``dataset`` among ``ids``."""
    ids = list(ids)
    return dict(zip(*dataset.select(ids).values(["id", "filepath"]))) if ids else {}


def similarity_hint(embeddings_field: str) -> str:
    """The call that builds a similarity index on stored embeddings, to copy into Python."""
    return (
        "Build a similarity index on them with (import fiftyone.brain as fob) "
        f'fob.compute_similarity(dataset, embeddings="{embeddings_field}", brain_key="{embeddings_field}_sim").'
    )


def describe_run(dataset: Any, summary: Summary, label_types: dict[str, str], model_name: str | None = None) -> str:
    """What a run wrote where (and with ``model_name``, which model its speed belongs to), and what failed or was
    skipped and why, by file path."""
    paths = sample_paths(dataset, [*summary.failures, *summary.skips])
    return "\n".join(summary.report(paths, label_types, model_name=model_name))
