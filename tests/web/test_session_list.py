"""The session list page: filters, sorting, paging, counts, sessions still in the spool, escaping."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from harness import post_batch
from signin import sign_in_session

T0 = 1_700_000_000_000
HOSTILE_USER = '<img src=x onerror="alert(1)">mallory'
HOSTILE_URL = 'https://shop.example/search?q=<script>alert("x")</script>'


def meta(ts: int, href: str) -> dict:
    return {"type": 4, "timestamp": ts, "data": {"href": href, "width": 1280, "height": 720}}


def snapshot(ts: int) -> dict:
    return {"type": 2, "timestamp": ts, "data": {"node": {"type": 0, "id": 1, "childNodes": []},
                                                 "initialOffset": {"top": 0, "left": 0}}}


def click(ts: int) -> dict:
    return {"type": 3, "timestamp": ts, "data": {"source": 2, "type": 2, "id": 5, "x": 10, "y": 10}}


def console_error(ts: int) -> dict:
    return {"type": 6, "timestamp": ts, "data": {"plugin": "rrweb/console@1",
                                                 "payload": {"level": "error", "payload": ['"boom"'], "trace": []}}}


def session_events(start: int, seconds: int, clicks: int, urls: list[str], errors: int = 0) -> list[dict]:
    out = [meta(start, urls[0]), snapshot(start + 1)]
    out += [click(start + 100 + i) for i in range(clicks)]
    out += [meta(start + 200 + i, u) for i, u in enumerate(urls[1:])]
    out += [console_error(start + 300 + i) for i in range(errors)]
    out.append({"type": 3, "timestamp": start + seconds * 1000, "data": {"source": 3, "id": 1, "x": 0, "y": 5}})
    return out


class Tables(HTMLParser):
    """Rows of each <table class="sessions ..."> as lists of cell texts, keyed by the table's classes."""

    def __init__(self, html: str):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._head = False
        self.links: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("class", "")
            self.tables[self._table] = []
        elif tag == "thead":
            self._head = True
        elif tag == "tr" and self._table is not None and not self._head:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])
        elif tag == "img":
            raise AssertionError(f"an <img> element made it into the page: {attrs}")
        elif tag == "script" and a.get("type") != "application/json" and not a.get("src"):
            raise AssertionError("an inline script made it into the page")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            if len(self._row) > 1:  # not the "No sessions match." row
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "thead":
            self._head = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def rows(self, which: str = "indexed") -> list[list[str]]:
        return next((rows for cls, rows in self.tables.items() if which in cls.split()), [])


COLS = {"user": 0, "start": 1, "duration": 2, "active": 3, "clicks": 4, "pages": 5, "url": 6, "errors": 7}


@pytest.fixture
def listed(make_server):
    """Four sessions with known numbers, flushed; and a browser signed in."""
    server = make_server()
    p = server.create_project()
    specs = {
        "s-alice": ("alice", session_events(T0, 30, clicks=3, urls=["https://shop.example/", "https://shop.example/cart"])),
        "s-bob": ("bob", session_events(T0 + 60_000, 300, clicks=1, urls=["https://shop.example/help"], errors=2)),
        "s-carol": ("carol", session_events(T0 + 120_000, 5, clicks=7, urls=["https://blog.example/post"])),
        "s-mallory": (HOSTILE_USER, session_events(T0 + 180_000, 12, clicks=0, urls=[HOSTILE_URL])),
    }
    for sid, (user, events) in specs.items():
        assert post_batch(server.url, p.token, sid, events, batch_id="b1", distinct_id=user).status_code == 200
    server.flush()
    return server, p, sign_in_session(server.url, p.api_key)


def page(server, p, browser, **params) -> Tables:
    r = browser.get(f"{server.url}/projects/{p.id}/sessions", params=params)
    assert r.status_code == 200, r.text
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    return Tables(r.text)


def users(t: Tables, which: str = "indexed") -> list[str]:
    return [row[0].split()[0] for row in t.rows(which)]


def test_each_row_shows_user_start_duration_active_clicks_pages_url_and_errors(listed):
    server, p, browser = listed
    rows = {r[0].split()[0]: r for r in page(server, p, browser).rows()}
    alice, bob = rows["alice"], rows["bob"]
    assert alice[COLS["clicks"]] == "3" and alice[COLS["pages"]] == "2" and alice[COLS["errors"]] == "0"
    assert alice[COLS["url"]] == "https://shop.example/" and alice[COLS["duration"]] == "30.0s"
    assert alice[COLS["start"]] == "2023-11-14 22:13:20 UTC"
    assert bob[COLS["errors"]] == "2" and bob[COLS["duration"]] == "5m 00s"
    assert "s-alice" in alice[0]  # the session id under the user


def test_filters_select_sessions(listed):
    server, p, browser = listed
    assert users(page(server, p, browser)) == ["<img", "carol", "bob", "alice"]  # newest first
    assert users(page(server, p, browser, distinct_id="bob")) == ["bob"]
    assert users(page(server, p, browser, url="SHOP.example/c")) == ["alice"]
    assert users(page(server, p, browser, min_duration="20")) == ["bob", "alice"]
    assert users(page(server, p, browser, has_errors="1")) == ["bob"]
    assert users(page(server, p, browser, has_errors="0")) == ["<img", "carol", "alice"]
    # A time range keeps the sessions that overlap it (bob runs 22:14:20-22:19:20).
    assert users(page(server, p, browser, since="2023-11-14T22:15:00", until="2023-11-14T22:15:30")) == ["carol", "bob"]
    assert users(page(server, p, browser, since="2023-11-14T22:19:00")) == ["bob"]
    assert users(page(server, p, browser, until="2023-11-14T22:13:30")) == ["alice"]
    assert users(page(server, p, browser, distinct_id="nobody")) == []


def test_a_bad_filter_is_reported_on_the_page(listed):
    server, p, browser = listed
    r = browser.get(f"{server.url}/projects/{p.id}/sessions", params={"since": "yesterday"})
    assert r.status_code == 200 and "since must be milliseconds" in r.text
    assert len(Tables(r.text).rows()) == 4


def test_columns_sort_both_ways_and_pages_follow(listed):
    server, p, browser = listed
    assert users(page(server, p, browser, sort="clicks", order="desc")) == ["carol", "alice", "bob", "<img"]
    t = page(server, p, browser, sort="clicks", order="asc")
    assert users(t) == ["<img", "bob", "alice", "carol"]
    # The header link of the sorted column flips the order; the others start descending.
    assert any("sort=clicks" in link and "order=desc" in link for link in t.links)
    assert users(page(server, p, browser, sort="duration")) == ["bob", "alice", "<img", "carol"]
    first = page(server, p, browser, sort="user", order="asc", limit="3")
    assert users(first) == ["<img", "alice", "bob"]
    next_link = next(link for link in first.links if "offset=3" in link)
    r = browser.get(server.url + next_link.replace("&amp;", "&"))
    assert users(Tables(r.text)) == ["carol"]


def test_html_in_user_ids_and_urls_is_shown_as_text_in_the_list_and_player(listed):
    server, p, browser = listed
    r = browser.get(f"{server.url}/projects/{p.id}/sessions")
    assert HOSTILE_USER not in r.text and HOSTILE_URL not in r.text
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;mallory" in r.text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in r.text
    row = next(r for r in Tables(r.text).rows() if "mallory" in r[0])
    assert row[0].startswith(HOSTILE_USER) and row[COLS["url"]] == HOSTILE_URL  # shown, as text
    player = browser.get(f"{server.url}/projects/{p.id}/sessions/s-mallory")
    assert player.status_code == 200
    assert HOSTILE_USER not in player.text and HOSTILE_URL not in player.text
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;mallory" in player.text
    Tables(player.text)  # no <img>, no inline script


def test_a_session_still_in_the_spool_is_listed_as_recording_then_indexed(listed):
    server, p, browser = listed
    events = session_events(T0 + 240_000, 8, clicks=2, urls=["https://shop.example/new"])
    assert post_batch(server.url, p.token, "s-dave", events, batch_id="b1", distinct_id="dave").status_code == 200
    t = page(server, p, browser)
    assert users(t, "recording") == ["dave"] and "dave" not in users(t)
    assert t.rows("recording")[0][COLS["clicks"]] == "2"
    assert users(page(server, p, browser, distinct_id="alice"), "recording") == []  # filters apply to it too
    server.flush()
    t = page(server, p, browser)
    assert users(t, "recording") == [] and users(t)[0] == "dave"


def test_the_summary_of_a_session_still_recording_includes_what_is_not_flushed(listed):
    server, p, browser = listed
    more = [click(T0 + 40_000 + i) for i in range(4)] + [meta(T0 + 41_000, "https://shop.example/paid")]
    assert post_batch(server.url, p.token, "s-alice", more, batch_id="b2", distinct_id="alice").status_code == 200
    api = f"{server.url}/api/projects/{p.id}/sessions/s-alice"
    s = browser.get(api).json()
    assert s["clicks"] == 7 and s["urls"][-1] == "https://shop.example/paid" and s["duration_ms"] == 41_000
    server.flush()
    assert browser.get(api).json()["clicks"] == 7  # the same once flushed: nothing counted twice
    assert post_batch(server.url, p.token, "s-new", more, batch_id="b1").status_code == 200
    fresh = browser.get(f"{server.url}/api/projects/{p.id}/sessions/s-new")
    assert fresh.status_code == 200 and fresh.json()["clicks"] == 4
