from __future__ import annotations

import pytest

from harness import require_native_walk
from replay.privacy import walk


@pytest.fixture(params=["native", "python"])
def each_walk_loop(request):
    """Run the test once with the C loop of Walker._walk and once with the Python loop."""
    if request.param == "native":
        require_native_walk()
    else:
        walk.use_native_walk(False)
    yield request.param
    walk.use_native_walk(True)
