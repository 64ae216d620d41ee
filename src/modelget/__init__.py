"""modelget: get a model's files onto this machine fast, intact and ready to load.

The public API is re-exported here; heavy imports happen only where they are used, so
``import modelget`` stays fast.
"""

from __future__ import annotations

from modelget.catalogue import load_catalogue
from modelget.datatypes import Catalogue, Mirror
from modelget.errors import ConfigError, ModelgetError

__version__ = "0.1.0.dev0"

__all__ = [
    "Catalogue",
    "ConfigError",
    "Mirror",
    "ModelgetError",
    "__version__",
    "load_catalogue",
]
