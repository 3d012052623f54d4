"""The FiftyOne entry, loaded next to ``fiftyone.yml`` and ``manifest.json``: the Florence-2 operators
(plugin) and the four native checkpoints (remote model zoo source, see ``docs/ZOO.md``).

FiftyOne's plugin loader calls ``register``; its model zoo calls
``download_model``, ``load_model``, ``resolve_input`` and ``parse_parameters``.
Both import this file as a package of their own naming, so the operators
are a relative import. Where only this directory was downloaded (``fiftyone
plugins download``, ``register_zoo_model_source``) and the library was not
pip-installed, the library is the ``fiftyone_florence2/`` folder beside this
file, so that folder's parent goes on ``sys.path``, after everything installed.
"""

import importlib.util
import os
import sys

if importlib.util.find_spec("fiftyone_florence2") is None:
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))

from fiftyone_florence2.runs.zoo import download_model, load_model

from .operators import register
from .operators.zoo_form import parse_parameters, resolve_input

__all__ = ["download_model", "load_model", "parse_parameters", "register", "resolve_input"]
