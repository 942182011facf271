"""Session statistics: folding per-batch stats must give what one pass over all events gives."""

from __future__ import annotations

import copy

from replay.catalog.summary import EventStats, summarize
from harness import load_fixture_events


def _with_extras(events):
    """The fixture recording plus a page change, a console error, a key press and a second viewport."""
    events = copy.deepcopy(events)
    t = events[-1]["timestamp"]
    events += [
        {"type": 4, "timestamp": t + 60_000, "data": {"href": "https://shop.example/cart", "width": 800, "height": 600}},
        {"type": 6, "timestamp": t + 60_001, "data": {"plugin": "rrweb/console@1", "payload": {"level": "error"}}},
        {"type": 3, "timestamp": t + 60_002, "data": {"source": 2, "type": 2, "id": 1, "x": 1, "y": 1}},
        {"type": 3, "timestamp": t + 60_003, "data": {"source": 5, "id": 1, "text": "a", "isChecked": False}},
    ]
    return events


def test_stats_folded_per_batch_equal_one_pass_over_the_session():
    events = _with_extras(load_fixture_events())
    whole = summarize(events)
    for size in (1, 7, 50):
        batches = [events[i:i + size] for i in range(0, len(events), size)]
        folded = EventStats.combine(summarize(b) for b in batches)
        assert folded == whole, size
    assert whole.clicks > 0 and whole.keypresses > 0 and whole.console_errors == 1
    assert len(whole.urls) == 2 and len(whole.activity) >= 2


def test_stats_fold_in_any_order_and_pairwise():
    events = _with_extras(load_fixture_events())
    parts = [summarize(events[i:i + 20]) for i in range(0, len(events), 20)]
    forward = EventStats.combine(parts)
    backward = EventStats.combine(reversed(parts))
    assert (forward.first_ts, forward.last_ts, forward.events, forward.clicks, forward.activity) == \
        (backward.first_ts, backward.last_ts, backward.events, backward.clicks, backward.activity)
    assert set(forward.urls) == set(backward.urls)
    pairwise = EventStats()
    for p in parts:
        pairwise = pairwise.merge(p)
    assert pairwise == forward


def test_no_stats_fold_to_empty():
    empty = EventStats.combine([])
    assert empty == EventStats() and empty.first_ts is None and empty.active_ms == 0
