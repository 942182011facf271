#!/usr/bin/env python3
"""Record a corpus of real rrweb sessions for the storage benchmarks (issue 7).

Each "site" is a real multi-page documentation tree that is available offline
(the Rust toolchain's std docs and book, the Node.js API docs Debian ships),
served by a static HTTP server on 127.0.0.1. Chromium (Playwright, sync API)
browses it like a person: wheel scrolling in steps, mouse paths, text
selection, clicks on same-origin links and on page widgets, typing into the
search box and waiting for results, going back, now and then a second tab.

rrweb 2.2.2 is injected into every page with ``context.add_init_script`` and
records with ``rrweb.record({emit, maskAllInputs: true})`` (default sampling).
Every emitted event is shipped to Python at once through an exposed binding,
so a navigation never loses buffered events. Each page load is a new rrweb
recording (Meta + FullSnapshot, then incrementals); a page restored from the
back/forward cache takes a fresh full snapshot on ``pageshow``. All page loads
of one site form one session, in emit order, each event tagged with the window
id of its tab (one id per tab, like posthog-js's ``$window_id``).

Output (``bench/corpus/`` is gitignored; this script regenerates it):
  <site>.json          JSON array of the session's rrweb events (plays in stock rrweb-player)
  <site>.windows.json  run-length window ids: [[window_id, n_events], ...] in event order
  MANIFEST.json        per session: events, raw JSON bytes, duration, pages, full snapshots, ...

The rrweb-player demo recording (``tests/fixtures/rrweb-player-events.json``,
or ``dist/events.js`` of rrweb-player 2.1.7 from npm) is added as one more
session so there is a recording of a small app next to the doc sites.

The browsing choices come from an RNG seeded with --seed and the site name, so a
rerun visits the same kind of path; timings (and hence the exact events) still
vary run to run. Links to HTML files over --max-page-bytes (2 MB: std's
num::Wrapping, simd::Simd, Node's all.html) are not followed. Every request that
is not to the local docs server is aborted, and Chromium resolves no other host.

Usage:
  python bench/make_corpus.py --quick              # ~20 s per site, smoke run
  python bench/make_corpus.py                      # ~3 min per site
  python bench/make_corpus.py --minutes 5 --sites rust-std,nodejs-api --seed 7
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench" / "corpus"
NPM_CACHE = REPO / "bench" / "corpus" / ".npm"
RRWEB_VERSION = "2.2.2"
PLAYER_VERSION = "2.1.7"
VENDORED_RRWEB = [REPO / "player_assets" / "vendor" / f"rrweb-{RRWEB_VERSION}" / sub / "rrweb.umd.min.cjs"
                  for sub in ("dist", ".")]
PLAYER_FIXTURE = REPO / "tests" / "fixtures" / "rrweb-player-events.json"

sys.path.insert(0, str(REPO / "tests"))
from chromium import CHROMIUM_ARGS as _BASE_ARGS  # noqa: E402

CHROMIUM_ARGS = [
    *_BASE_ARGS,
    # Defence in depth next to the request route below: nothing but loopback resolves.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- assets


def npm_package(name: str, version: str) -> Path:
    """Unpack ``npm pack name@version`` under bench/corpus/.npm and return its package/ dir."""
    dest = NPM_CACHE / f"{name}-{version}"
    pkg = dest / "package"
    if (pkg / "package.json").exists():
        return pkg
    dest.mkdir(parents=True, exist_ok=True)
    log(f"npm pack {name}@{version}")
    out = subprocess.run(
        ["npm", "pack", f"{name}@{version}", "--pack-destination", str(dest), "--silent"],
        check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]
    with tarfile.open(dest / out) as tar:
        tar.extractall(dest, filter="data")
    return pkg


def rrweb_source() -> tuple[str, str]:
    for path in VENDORED_RRWEB:
        if path.exists():
            return path.read_text(), str(path.resolve().relative_to(REPO))
    path = npm_package("rrweb", RRWEB_VERSION) / "dist" / "rrweb.umd.min.cjs"
    return path.read_text(), f"npm rrweb@{RRWEB_VERSION} dist/rrweb.umd.min.cjs"


def player_fixture_events() -> tuple[list, str]:
    if PLAYER_FIXTURE.exists():
        return orjson.loads(PLAYER_FIXTURE.read_bytes()), str(PLAYER_FIXTURE.relative_to(REPO))
    text = (npm_package("rrweb-player", PLAYER_VERSION) / "dist" / "events.js").read_text()
    start = text.index("[", text.index("const events"))
    end = text.rindex("]") + 1
    return orjson.loads(text[start:end]), f"npm rrweb-player@{PLAYER_VERSION} dist/events.js"


def init_script(rrweb_js: str) -> str:
    # The UMD bundle assigns window.rrweb when exports/module/define are not in scope.
    return (
        "(function () {\n"
        "  if (window.top !== window) return; // rrweb records same-origin iframes from the top\n"
        "  if (!/^https?:$/.test(location.protocol)) return; // not the new tab's about:blank\n"
        "  (function () { var define, exports, module;\n" + rrweb_js + "\n  }).call(window);\n"
        "  var rr = window.rrweb;\n"
        "  function emit(e) { try { window.__replayEmit(JSON.stringify(e)); } catch (err) {} }\n"
        "  function start() {\n"
        "    if (window.__replayRec) return;\n"
        "    window.__replayRec = true;\n"
        "    window.__replayStop = rr.record({ emit: emit, maskAllInputs: true });\n"
        "  }\n"
        "  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start, { once: true });\n"
        "  else start();\n"
        "  window.addEventListener('pageshow', function (ev) {\n"
        "    if (ev.persisted && window.__replayRec) {\n"
        "      window.__replayRestores = (window.__replayRestores || 0) + 1;\n"
        "      rr.record.takeFullSnapshot(true);\n"
        "    }\n"
        "  });\n"
        "})();\n"
    )


# --------------------------------------------------------------------------- sites


@dataclass
class Search:
    open_selector: str  # clicked to reveal/focus the search box
    input_selector: str
    results_selector: str
    queries: list[str]


@dataclass
class Site:
    name: str
    root: Path
    start: str  # path below root
    scopes: tuple[str, ...]  # allowed path prefixes below root for link clicks
    widgets: tuple[str, ...]  # clickable non-link controls
    search: Search | None = None


def rust_doc_root() -> Path | None:
    try:
        out = subprocess.run(["rustup", "doc", "--path"], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    root = Path(out.strip()).parent
    return root if (root / "std" / "index.html").exists() else None


def node_doc_root() -> Path | None:
    for cand in ("/usr/share/doc/nodejs/api", "/usr/share/nodejs/doc/api", "/usr/share/doc/nodejs-doc/api"):
        if Path(cand, "index.html").exists():
            return Path(cand)
    return None


def discover_sites() -> dict[str, Site]:
    sites: dict[str, Site] = {}
    rust = rust_doc_root()
    if rust:
        sites["rust-std"] = Site(
            "rust-std", rust, "std/index.html",
            scopes=("std/", "core/", "alloc/", "proc_macro/", "src/std/", "src/core/", "src/alloc/"),
            widgets=("#toggle-all-docs", "details.toggle > summary", "details.rustdoc-toggle > summary",
                     "#settings-menu a", "#help-button a"),
            search=Search(
                "#search-button a", "input.search-input", ".search-results a",
                ["hashmap", "vec push", "iter map", "string from", "arc", "mutex", "read_to_string",
                 "option unwrap", "btreemap", "path join", "tcpstream", "thread spawn", "fmt display",
                 "slice sort", "duration", "file open", "hashset", "cow", "rc refcell", "channel"],
            ),
        )
        sites["rust-book"] = Site(
            "rust-book", rust, "book/index.html",
            scopes=("book/",),
            widgets=("#mdbook-theme-toggle", "#mdbook-theme-list button", "#mdbook-sidebar-toggle",
                     "#mdbook-sidebar-toggle-anchor + * label"),
            search=Search(
                "#mdbook-search-toggle", "#mdbook-searchbar", "#mdbook-searchresults a",
                ["ownership", "borrow", "lifetime", "trait object", "closure", "iterator",
                 "smart pointer", "async", "match", "struct", "enum", "cargo", "error handling",
                 "generic", "macro", "test"],
            ),
        )
    else:
        log("no Rust docs (rustup doc --path failed): skipping rust-std, rust-book")
    node = node_doc_root()
    if node:
        sites["nodejs-api"] = Site(
            "nodejs-api", node, "index.html", scopes=("",),
            widgets=("#theme-toggle-btn", ".js-flavor-toggle", ".picker-header > a"),
            search=None,  # the Node.js API docs have no search box
        )
    else:
        log("no Node.js API docs (apt-get install -y nodejs-doc): skipping nodejs-api")
    return sites


class QuietHandler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map,
                      ".js": "text/javascript", ".mjs": "text/javascript", ".woff2": "font/woff2",
                      ".woff": "font/woff", ".svg": "image/svg+xml", ".json": "application/json"}

    def log_message(self, *args):  # noqa: D401 - silence per-request logging
        pass


class StaticServer:
    """A docs tree served on 127.0.0.1:<ephemeral port> in a daemon thread."""

    def __init__(self, root: Path):
        self.root = root
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
        self.httpd.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------- recording

LINKS_JS = """
(args) => {
  const [scopes, origin] = args;
  const vw = innerWidth, vh = innerHeight;
  const out = [];
  const all = document.querySelectorAll('a[href]');
  for (let i = 0; i < all.length; i++) {
    const a = all[i];
    if (a.target && a.target !== '_self') continue;
    if (a.hasAttribute('download')) continue;
    let u; try { u = new URL(a.href, location.href); } catch (e) { continue; }
    if (u.origin !== origin) continue;
    const path = u.pathname.replace(/^\\//, '');
    if (!scopes.some(s => path.startsWith(s))) continue;
    const r = a.getBoundingClientRect();
    if (r.width < 2 || r.height < 2) continue;
    const st = getComputedStyle(a);
    if (st.visibility === 'hidden' || st.display === 'none') continue;
    const samePage = u.pathname === location.pathname && u.search === location.search;
    out.push({i, href: u.href, path: u.pathname, samePage,
              inView: r.top >= 40 && r.bottom <= vh - 10 && r.left >= 0 && r.right <= vw});
  }
  return out;
}
"""

RECT_JS = """
(args) => {
  const [sel, i] = args;
  const el = document.querySelectorAll(sel)[i];
  if (!el) return null;
  const r = el.getBoundingClientRect();
  const x = r.left + Math.min(r.width / 2, 30), y = r.top + r.height / 2;
  const top = document.elementFromPoint(x, y);
  const hit = !!top && (top === el || el.contains(top) || top.contains(el));
  return {x, y, w: r.width, h: r.height, top: r.top, hit, vw: innerWidth, vh: innerHeight};
}
"""

VISIBLE_JS = """
(sels) => {
  const out = [];
  for (const sel of sels) {
    let els; try { els = document.querySelectorAll(sel); } catch (e) { continue; }
    els.forEach((el, i) => {
      const r = el.getBoundingClientRect();
      if (r.width < 2 || r.height < 2) return;
      if (r.bottom < 0 || r.top > innerHeight || r.right < 0 || r.left > innerWidth) return;
      const st = getComputedStyle(el);
      if (st.visibility === 'hidden' || st.display === 'none') return;
      out.push([sel, i]);
    });
  }
  return out;
}
"""

TEXT_BLOCKS_JS = """
() => {
  const out = [];
  document.querySelectorAll('p, li, .docblock, td').forEach((el) => {
    const r = el.getBoundingClientRect();
    if (r.width > 120 && r.height > 14 && r.top > 40 && r.bottom < innerHeight - 10 && el.textContent.length > 40)
      out.push([r.left, r.top, r.width, r.height]);
  });
  return out.slice(0, 50);
}
"""


class BrokenPage(Exception):
    pass


@dataclass
class SessionRecorder:
    site: Site
    origin: str
    rng: random.Random
    max_page_bytes: int
    events: list = field(default_factory=list)  # [(window_id, event)]
    window_ids: dict = field(default_factory=dict)  # Page -> window id
    navigations: int = 0
    backs: int = 0
    searches: int = 0
    skipped_links: int = 0
    tabs: int = 0
    actions: dict = field(default_factory=dict)  # action name -> [count, seconds]

    def timed(self, name: str, fn):
        t = time.monotonic()
        try:
            return fn()
        finally:
            a = self.actions.setdefault(name, [0, 0.0])
            a[0] += 1
            a[1] = round(a[1] + time.monotonic() - t, 2)

    def new_window_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def on_emit(self, source, payload: str) -> None:
        page = source["page"]
        wid = self.window_ids.get(page)
        if wid is None:
            wid = self.window_ids[page] = self.new_window_id()
        self.events.append((wid, orjson.loads(payload)))


class Driver:
    """Drives one tab like a reader of documentation."""

    def __init__(self, rec: SessionRecorder, page, deadline: float):
        self.rec = rec
        self.rng = rec.rng
        self.page = page
        self.deadline = deadline
        vp = page.viewport_size
        self.mx, self.my = vp["width"] / 2, vp["height"] / 2
        self.history_depth = 0

    # ---- helpers
    def left(self) -> float:
        return self.deadline - time.monotonic()

    def pause(self, lo: float, hi: float) -> None:
        self.page.wait_for_timeout(int(1000 * self.rng.uniform(lo, hi)))

    def click_here(self, expect_nav: bool = False) -> bool:
        """Click at the pointer; follow up if that navigated. Returns whether it did."""
        if expect_nav:
            try:
                with self.page.expect_navigation(wait_until="domcontentloaded", timeout=8000):
                    self.page.mouse.click(self.mx, self.my)
            except PlaywrightTimeout:
                self.rec.skipped_links += 1
                return False
            self.after_navigation()
            return True
        before = self.page.url.split("#")[0]
        self.page.mouse.click(self.mx, self.my)
        self.page.wait_for_timeout(300)
        if self.page.url.split("#")[0] != before:
            self.after_navigation()
            return True
        return False

    def wait_recording(self) -> None:
        try:
            self.page.wait_for_load_state("domcontentloaded", timeout=15000)
            self.page.wait_for_function("() => window.__replayRec === true", timeout=15000)
        except Exception as exc:  # noqa: BLE001 - a broken page is skipped, not fatal
            raise BrokenPage(str(exc)) from exc

    def move_to(self, x: float, y: float) -> None:
        """Move along a curved path with human-ish timing."""
        vp = self.page.viewport_size
        x = min(max(x, 1), vp["width"] - 2)
        y = min(max(y, 1), vp["height"] - 2)
        x0, y0 = self.mx, self.my
        dist = math.hypot(x - x0, y - y0)
        n = max(4, min(25, int(dist / 30)))
        # control point off the straight line for a gentle curve
        cx = (x0 + x) / 2 + self.rng.uniform(-0.3, 0.3) * dist
        cy = (y0 + y) / 2 + self.rng.uniform(-0.3, 0.3) * dist
        for k in range(1, n + 1):
            t = k / n
            t = t * t * (3 - 2 * t)  # ease in/out
            px = (1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t * t * x
            py = (1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t * t * y
            self.page.mouse.move(px, py)
            self.page.wait_for_timeout(self.rng.randint(6, 20))
        self.mx, self.my = x, y

    # ---- actions on the current page
    def scroll(self) -> None:
        direction = 1 if self.rng.random() < 0.8 else -1
        for _ in range(self.rng.randint(3, 12)):
            self.page.mouse.wheel(0, direction * self.rng.choice([100, 100, 120, 200, 300, 400]))
            self.page.wait_for_timeout(self.rng.randint(40, 220))
        self.pause(0.3, 1.5)

    def wander(self) -> None:
        vp = self.page.viewport_size
        for _ in range(self.rng.randint(1, 4)):
            self.move_to(self.rng.uniform(20, vp["width"] - 20), self.rng.uniform(20, vp["height"] - 20))
            self.pause(0.05, 0.6)

    def read(self) -> None:
        # reading: small jitters of the pointer, long-ish pauses
        for _ in range(self.rng.randint(1, 3)):
            self.move_to(self.mx + self.rng.uniform(-40, 40), self.my + self.rng.uniform(-25, 25))
            self.pause(0.6, 2.5)

    def select_text(self) -> None:
        blocks = self.page.evaluate(TEXT_BLOCKS_JS)
        if not blocks:
            return
        x, y, w, h = self.rng.choice(blocks)
        sx, sy = x + self.rng.uniform(2, w / 3), y + min(h / 2, 10)
        self.move_to(sx, sy)
        self.page.mouse.down()
        self.move_to(sx + self.rng.uniform(w / 4, w * 0.65), sy + self.rng.choice([0, 0, 18, 36]))
        self.page.mouse.up()
        self.pause(0.5, 1.5)
        self.move_to(self.mx + self.rng.uniform(-200, 200), self.my + self.rng.uniform(-100, 100))
        self.click_here()  # click elsewhere to clear the selection

    def click_widget(self) -> None:
        found = self.page.evaluate(VISIBLE_JS, list(self.rec.site.widgets))
        if not found:
            return
        sel, i = self.rng.choice(found)
        r = self.page.evaluate(RECT_JS, [sel, i])
        if not r or not r["hit"]:
            return
        self.move_to(r["x"], r["y"])
        self.pause(0.1, 0.4)
        if not self.click_here():
            self.pause(0.4, 1.2)

    def resize(self) -> None:
        w, h = self.rng.choice([(1280, 800), (1366, 768), (1440, 900), (1024, 768), (1536, 864)])
        self.page.set_viewport_size({"width": w, "height": h})
        self.mx, self.my = min(self.mx, w - 2), min(self.my, h - 2)
        self.pause(0.5, 1.0)

    def search(self) -> bool:
        """Type a query into the site's search box, wait for results, maybe open one."""
        s = self.rec.site.search
        if not s:
            return False
        target = self.page.evaluate(VISIBLE_JS, [s.open_selector])
        if not target:
            return False
        r = self.page.evaluate(RECT_JS, [s.open_selector, target[0][1]])
        if not r:
            return False
        self.move_to(r["x"], r["y"])
        self.page.mouse.click(self.mx, self.my)
        try:
            self.page.wait_for_selector(s.input_selector, state="visible", timeout=3000)
        except Exception:  # noqa: BLE001
            return False
        self.page.focus(s.input_selector)
        self.page.keyboard.press("Control+A")
        self.page.keyboard.press("Backspace")
        query = self.rng.choice(s.queries)
        for k, ch in enumerate(query):
            if k > 1 and self.rng.random() < 0.06:  # a typo, then fix it
                self.page.keyboard.type(self.rng.choice("qwertyuiopasdfghjkl"))
                self.page.wait_for_timeout(self.rng.randint(120, 300))
                self.page.keyboard.press("Backspace")
            self.page.keyboard.type(ch)
            self.page.wait_for_timeout(self.rng.randint(60, 260))
        self.rec.searches += 1
        try:
            self.page.wait_for_selector(s.results_selector, state="visible", timeout=8000)
        except Exception:  # noqa: BLE001 - no results is a fine outcome too
            log(f"  search {query!r}: no results shown")
            self.pause(0.5, 1.0)
            self.page.keyboard.press("Escape")
            return True
        self.pause(0.8, 2.5)
        self.move_to(self.mx + self.rng.uniform(-80, 80), self.my + self.rng.uniform(60, 240))
        if self.rng.random() < 0.3:
            self.scroll()
        if self.rng.random() < 0.7:
            results = self.page.evaluate(VISIBLE_JS, [s.results_selector])
            if results:
                _, i = self.rng.choice(results[:8])
                rr = self.page.evaluate(RECT_JS, [s.results_selector, i])
                if rr and rr["hit"]:
                    self.move_to(rr["x"], rr["y"])
                    self.pause(0.2, 0.6)
                    log(f"  search {query!r}: {len(results)} results, opening #{i}")
                    if self.click_here(expect_nav=True):
                        return True
        log(f"  search {query!r}: looked at the results")
        self.page.keyboard.press("Escape")
        self.pause(0.3, 0.8)
        return True

    # ---- navigation
    def after_navigation(self) -> None:
        self.wait_recording()
        self.rec.navigations += 1
        self.history_depth += 1
        self.pause(0.4, 1.2)

    def pick_link(self, prefer_in_view: bool) -> dict | None:
        links = self.page.evaluate(LINKS_JS, [list(self.rec.site.scopes), self.rec.origin])
        if not links:
            return None
        pool = [ln for ln in links if ln["inView"]] if prefer_in_view else []
        pool = pool or links
        for _ in range(6):
            ln = self.rng.choice(pool)
            if ln["samePage"] or self.page_size_ok(ln["path"]):
                return ln
            self.rec.skipped_links += 1
        return None

    def page_size_ok(self, url_path: str) -> bool:
        rel = urllib.parse.unquote(url_path).lstrip("/")
        f = self.rec.site.root / rel
        if rel == "" or rel.endswith("/"):
            f = f / "index.html"
        try:
            return f.is_file() and f.stat().st_size <= self.rec.max_page_bytes
        except OSError:
            return False

    def click_link(self) -> bool:
        ln = self.pick_link(prefer_in_view=self.rng.random() < 0.75)
        if not ln:
            return False
        r = self.page.evaluate(RECT_JS, ["a[href]", ln["i"]])
        if not r:
            return False
        if r["top"] < 40 or r["top"] > r["vh"] - 30:
            # wheel towards the link like a person would, then snap the rest
            delta = r["top"] - r["vh"] / 3
            steps = min(15, int(abs(delta) / 300))
            for _ in range(steps):
                self.page.mouse.wheel(0, math.copysign(300, delta))
                self.page.wait_for_timeout(self.rng.randint(40, 140))
            self.page.evaluate("([sel, i]) => document.querySelectorAll(sel)[i]?.scrollIntoView({block: 'center'})",
                               ["a[href]", ln["i"]])
            self.pause(0.3, 0.8)
            r = self.page.evaluate(RECT_JS, ["a[href]", ln["i"]])
            if not r:
                return False
        if not r["hit"]:
            self.rec.skipped_links += 1
            return False
        self.move_to(r["x"], r["y"])
        self.pause(0.1, 0.5)
        if ln["samePage"]:
            self.click_here()  # in-page anchor
            self.pause(0.3, 1.0)
            return True
        return self.click_here(expect_nav=True)

    def go_back(self) -> bool:
        if self.history_depth <= 0:
            return False
        try:
            self.page.go_back(timeout=15000, wait_until="domcontentloaded")
        except Exception as exc:  # noqa: BLE001
            raise BrokenPage(str(exc)) from exc
        self.history_depth -= 1
        self.rec.backs += 1
        self.wait_recording()
        self.pause(0.5, 1.5)
        return True

    # ---- one "visit" of the current page: look around, then move on
    def visit(self, allow_tab: bool) -> str:
        actions = [
            (self.scroll, 5), (self.wander, 3), (self.read, 3), (self.select_text, 1),
            (self.click_widget, 1.5),
        ]
        fns, weights = zip(*actions)
        for _ in range(self.rng.randint(1, 5)):
            if self.left() <= 0:
                return "done"
            fn = self.rng.choices(fns, weights)[0]
            self.rec.timed(fn.__name__, fn)
        if self.left() <= 0:
            return "done"
        roll = self.rng.random()
        if roll < 0.25 and self.rec.site.search:
            self.rec.timed("search", self.search)
        elif roll < 0.37 and self.history_depth > 0:
            self.rec.timed("go_back", self.go_back)
        elif roll < 0.41 and allow_tab:
            return "tab"
        elif roll < 0.43:
            self.rec.timed("resize", self.resize)
        else:
            if not self.rec.timed("click_link", self.click_link):
                self.scroll()
        return "ok"


def open_page(context, rec: SessionRecorder, url: str):
    page = context.new_page()
    rec.window_ids.setdefault(page, rec.new_window_id())
    rec.tabs += 1
    page.set_default_timeout(15000)
    page.goto(url, wait_until="domcontentloaded", timeout=20000)
    return page


def browse(context, rec: SessionRecorder, seconds: float) -> None:
    start_url = f"{rec.origin}/{rec.site.start}"
    deadline = time.monotonic() + seconds
    page = open_page(context, rec, start_url)
    drv = Driver(rec, page, deadline)
    drv.wait_recording()
    errors = 0
    while drv.left() > 0:
        try:
            what = drv.visit(allow_tab=len(context.pages) == 1 and drv.left() > 25)
        except Exception as exc:  # noqa: BLE001 - keep browsing; a broken page sends us back to the start
            errors += 1
            log(f"  {exc.__class__.__name__}: {str(exc).splitlines()[0][:160]}")
            if errors > 40:
                log("  too many errors, ending this site early")
                break
            try:
                if isinstance(exc, BrokenPage):
                    rec.skipped_links += 1
                    page.goto(start_url, wait_until="domcontentloaded", timeout=20000)
                    drv.history_depth = 0
                drv.wait_recording()
            except Exception:  # noqa: BLE001
                try:
                    page.goto(start_url, wait_until="domcontentloaded", timeout=20000)
                    drv.history_depth = 0
                    drv.wait_recording()
                except Exception:  # noqa: BLE001
                    break
            continue
        if what == "tab":
            # open a same-origin link in a new tab, read there for a while, close it
            ln = drv.pick_link(prefer_in_view=True)
            if not ln or ln["samePage"]:
                continue
            log(f"  new tab: {ln['path']}")
            try:
                tab = open_page(context, rec, ln["href"])
                tdrv = Driver(rec, tab, min(deadline, time.monotonic() + rec.rng.uniform(10, 25)))
                tdrv.wait_recording()
                while tdrv.left() > 0:
                    tdrv.visit(allow_tab=False)
            except Exception as exc:  # noqa: BLE001
                log(f"  tab failed: {str(exc)[:120]}")
            finally:
                for p in context.pages:
                    if p is not page:
                        p.close()
            page.bring_to_front()
            drv.pause(0.5, 1.0)
    page.wait_for_timeout(1200)  # let rrweb flush its throttled mousemove/scroll buffers


def record_site(browser, site: Site, seconds: float, seed: int, rrweb_js: str, max_page_bytes: int) -> dict:
    rng = random.Random(f"{seed}:{site.name}")
    with StaticServer(site.root) as srv:
        rec = SessionRecorder(site, srv.origin, rng, max_page_bytes)
        vw, vh = rng.choice([(1280, 800), (1366, 768), (1440, 900), (1536, 864)])
        context = browser.new_context(viewport={"width": vw, "height": vh}, locale="en-US",
                                      service_workers="block", bypass_csp=True)
        # Only the local server is ever contacted; every other request is aborted here.
        context.route(re.compile(r"^(?!" + re.escape(srv.origin) + r"/)"), lambda route: route.abort())
        context.expose_binding("__replayEmit", rec.on_emit)
        context.add_init_script(script=init_script(rrweb_js))
        t0 = time.monotonic()
        try:
            browse(context, rec, seconds)
        finally:
            try:
                context.close()
            except Exception:  # noqa: BLE001
                pass
        wall = time.monotonic() - t0
    return {"rec": rec, "wall_s": wall}


# --------------------------------------------------------------------------- output


def run_lengths(window_ids: list[str]) -> list[list]:
    out: list[list] = []
    for w in window_ids:
        if out and out[-1][0] == w:
            out[-1][1] += 1
        else:
            out.append([w, 1])
    return out


def write_session(out_dir: Path, name: str, events: list, window_ids: list[str], extra: dict) -> dict:
    raw = orjson.dumps(events)
    (out_dir / f"{name}.json").write_bytes(raw)
    (out_dir / f"{name}.windows.json").write_bytes(orjson.dumps(run_lengths(window_ids)))
    ts = [e.get("timestamp", 0) for e in events]
    types: dict[str, int] = {}
    for e in events:
        types[str(e.get("type"))] = types.get(str(e.get("type")), 0) + 1
    metas = [e for e in events if e.get("type") == 4]
    entry = {
        "site": name,
        "file": f"{name}.json",
        "windows_file": f"{name}.windows.json",
        "events": len(events),
        "raw_json_bytes": len(raw),
        "duration_ms": (max(ts) - min(ts)) if ts else 0,
        "pages_visited": len(metas),
        "distinct_urls": len({m["data"].get("href", "").split("#")[0] for m in metas}),
        "full_snapshots": sum(1 for e in events if e.get("type") == 2),
        "windows": len(set(window_ids)),
        "event_types": dict(sorted(types.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 99)),
    }
    entry.update(extra)
    return entry


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=3.0, help="browsing time per site (default 3)")
    ap.add_argument("--quick", action="store_true", help="smoke run: ~20 s per site")
    ap.add_argument("--sites", default="", help="comma-separated subset of: rust-std,rust-book,nodejs-api")
    ap.add_argument("--seed", type=int, default=1, help="RNG seed for the browsing script (default 1)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output dir (default bench/corpus)")
    ap.add_argument("--max-page-bytes", type=int, default=2_000_000,
                    help="never follow links to HTML files larger than this (default 2 MB)")
    ap.add_argument("--no-fixture", action="store_true", help="do not add the rrweb-player demo session")
    args = ap.parse_args(argv)
    seconds = 20.0 if args.quick else args.minutes * 60

    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    rrweb_js, rrweb_from = rrweb_source()
    sites = discover_sites()
    wanted = [s for s in args.sites.split(",") if s] or list(sites)
    unknown = [s for s in wanted if s not in sites]
    if unknown:
        ap.error(f"unknown or unavailable sites: {unknown}; available: {list(sites)}")

    manifest = {"rrweb": rrweb_from, "seed": args.seed, "seconds_per_site": seconds,
                "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "sessions": []}
    t_all = time.monotonic()
    exe = os.environ.get("REPLAY_CHROMIUM") or shutil.which("chromium")
    if not exe:
        log("chromium not found: apt-get install -y chromium, or set REPLAY_CHROMIUM")
        return 2
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            for name in wanted:
                site = sites[name]
                log(f"{name}: browsing {site.root}/{site.start} for {seconds:.0f} s")
                res = record_site(browser, site, seconds, args.seed, rrweb_js, args.max_page_bytes)
                rec: SessionRecorder = res["rec"]
                # emit order is kept; a stable sort by timestamp only reorders across tabs
                pairs = sorted(rec.events, key=lambda we: we[1].get("timestamp", 0))
                entry = write_session(
                    out_dir, name, [e for _, e in pairs], [w for w, _ in pairs],
                    {"source": f"recorded: {site.root}/{site.start}", "wall_s": round(res["wall_s"], 1),
                     "navigations": rec.navigations, "backs": rec.backs, "searches": rec.searches,
                     "tabs": rec.tabs, "skipped_links": rec.skipped_links, "actions": rec.actions},
                )
                manifest["sessions"].append(entry)
                log(f"{name}: {entry['events']} events, {entry['raw_json_bytes'] / 1e6:.1f} MB, "
                    f"{entry['pages_visited']} page loads, {entry['full_snapshots']} full snapshots, "
                    f"{entry['windows']} windows, wall {entry['wall_s']} s")
        finally:
            browser.close()

    if not args.no_fixture:
        events, src = player_fixture_events()
        wid = str(uuid.UUID(int=random.Random(f"{args.seed}:fixture").getrandbits(128), version=4))
        entry = write_session(out_dir, "rrweb-player-demo", events, [wid] * len(events),
                              {"source": src, "wall_s": 0.0})
        manifest["sessions"].append(entry)
        log(f"rrweb-player-demo: {entry['events']} events from {src}")

    manifest["wall_s"] = round(time.monotonic() - t_all, 1)
    (out_dir / "MANIFEST.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    log(f"wrote {out_dir}/MANIFEST.json ({len(manifest['sessions'])} sessions) in {manifest['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
