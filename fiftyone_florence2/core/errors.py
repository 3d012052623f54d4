"""The errors fiftyone-florence2 raises on purpose, under one base: ``except Florence2Error`` catches them all.

Each also derives from the built-in error it stands for (``ValueError`` for a refusal, ``RuntimeError``
for a failure), so code written against those keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


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


Route = Literal["python", "cli", "app"]


def named(name: str) -> str:
    """The :class:`OptionError` placeholder for an option's control alone (``{name:name}``)."""
    return "{" + name + ":name}"


def literal(text: Any) -> str:
    """``text`` as a part of an :class:`OptionError` template, its braces kept as they are."""
    return str(text).replace("{", "{{").replace("}", "}}")


class OptionError(Florence2Error, ValueError):
    """A refusal that names run options, worded for the route that shows it.

    ``template`` names each option as ``{name}`` (the control set: ``skip_existing=True``,
    ``--skip-existing``, ``"Skip existing" ticked``), ``{name:name}`` (the control alone) or
    ``{name:EXAMPLE}`` (with a value: ``prompt_field='<field>'``, ``--prompt-field <field>``;
    ``EXAMPLE`` may be ``PYTHON|CLI``). ``str()`` is the Python wording; :meth:`render` another route's.
    Text from elsewhere goes in through :func:`literal`.
    """

    def __init__(self, template: str, *options: Any):  # options.Option declarations
        self.template = template
        self.options = {option.name: option for option in options}
        super().__init__(self.render("python"))

    def render(self, route: Route) -> str:
        return self.template.format_map({name: _Control(o, route) for name, o in self.options.items()})


@dataclass(frozen=True)
class _Control:
    """An option as one route shows it, for :meth:`OptionError.render`."""

    option: Any  # an options.Option
    route: Route

    def __format__(self, spec: str) -> str:
        option, bool_ = self.option, self.option.kind == "bool"
        route = self.route if (option.cli, option.form)[self.route == "app"] else "python"  # a control it lacks
        if route == "app":
            ticked = "" if spec == "name" or not bool_ else " unticked" if option.default else " ticked"
            return f'"{option.form_label}"{ticked}'
        python, _, cli = spec.partition("|")
        if route == "cli":
            example = "" if spec == "name" or bool_ or not spec else " " + (cli or python.strip("'\""))
            return option.cli_flag + example
        if spec == "name":
            return option.name
        return f"{option.name}={not option.default}" if bool_ else f"{option.name}={python}" if python else option.name


def for_route(error: BaseException, route: Route) -> str:
    """An error's message as ``route`` shows it: an :class:`OptionError` names that route's controls."""
    return error.render(route) if isinstance(error, OptionError) else str(error)
