"""The FiftyOne plugin entry, loaded next to ``fiftyone.yml``: registers the Florence-2 operators.

Where only the plugin directory was downloaded (``fiftyone plugins download``)
and the library was not pip-installed, the library is the
``fiftyone_florence2/`` folder beside this file, so that folder's parent goes
on ``sys.path``, after everything installed.
"""

import importlib.util
import os
import sys

if importlib.util.find_spec("fiftyone_florence2") is None:
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))

from .operators import register

__all__ = ["register"]
