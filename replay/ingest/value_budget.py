"""A ceiling on how many JSON values one body may hold, checked before parsing it.

Parsing is the expensive part of a hostile upload: ``[{},{},...]`` is 3 bytes per Python object
(~70 bytes each once parsed), and orjson holds the GIL, so a 100 KB gzip body inflating to 90 MB
of that blocks the event loop for ~10 s and takes ~2.7 GB. Counting ``,`` ``[`` ``{`` bytes is an
upper bound on the values a document holds (every value but the first in a container follows a
comma; every container opens with a bracket), costs a few ms per 100 MB in C, and real rrweb JSON
runs at 13-17 bytes per such byte (bench/corpus), so the default 2,000,000 admits ~30 MB of real
recording in one batch while capping a hostile body near 150 MB of objects and ~0.3 s of parsing.
"""

from __future__ import annotations

from replay.errors import PayloadTooLarge

DEFAULT_MAX_JSON_VALUES = 2_000_000


def json_values_upper_bound(data: bytes) -> int:
    return data.count(b",") + data.count(b"[") + data.count(b"{") + 1


def check_json_value_budget(data: bytes, max_values: int = DEFAULT_MAX_JSON_VALUES) -> None:
    """Raise 413 before parsing a JSON body that could hold more than ``max_values`` values."""
    if len(data) <= max_values:  # fewer bytes than the budget: cannot exceed it, skip the scan
        return
    bound = json_values_upper_bound(data)
    if bound > max_values:
        raise PayloadTooLarge(f"the body holds up to {bound} JSON values; the limit is {max_values} per upload "
                              "(send smaller batches)", code="too_many_values")
