"""bootbox's version, in the bottom layer so every layer may show it.

The public API re-exports it as ``bootbox.__version__``; code inside the layers (the status page,
the API's status document, the plugin list) imports it from here, because importing the public
API from below it would point an arrow up (docs/architecture.md).
"""

from __future__ import annotations

__version__ = "0.1.0"
