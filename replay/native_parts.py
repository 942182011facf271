"""The optional C parts (setup.py): whether they may run.

Built by the install where a C compiler and Python's headers are; each has a Python twin that
does the same work more slowly. ``REPLAY_NATIVE=0`` in the environment makes a process use the
Python twins even where the C parts are built (to rule them out when chasing a problem).
"""

from __future__ import annotations

import os

ALLOWED = os.environ.get("REPLAY_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")
