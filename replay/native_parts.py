"""The optional C parts (setup.py): load one, or learn that its Python twin must do the work.

Built by the install where a C compiler and Python's headers are; each has a Python twin that
does the same work more slowly. ``REPLAY_NATIVE=0`` in the environment makes a process use the
Python twins even where the C parts are built (to rule them out when chasing a problem).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

ALLOWED = os.environ.get("REPLAY_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def load(module: str) -> ModuleType | None:
    """The compiled module ``module``, or None when it was not built or REPLAY_NATIVE=0."""
    if not ALLOWED:
        return None
    try:
        return importlib.import_module(module)
    except ImportError:  # no compiler where this was installed
        return None
