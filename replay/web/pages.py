"""Server-rendered pages: Jinja2 templates (autoescaped) sent with a strict Content-Security-Policy.

Templates never hold inline scripts; what a page's script needs travels in data-* attributes or
a ``<script type="application/json">`` block (``|tojson`` escapes ``<``, ``>`` and ``&``), so
``script-src 'self'`` holds and a recorded string can never become code.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

TEMPLATES = Path(__file__).resolve().parent / "templates"

# The player page and the rest of the UI. 'unsafe-inline' styles: rrweb-player (Svelte) and the
# replayed document set inline styles; scripts stay 'self' only. The replay iframe is about:blank,
# so it inherits this policy: a recorded page cannot load scripts, frames or remote images either.
UI_CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; "
          "img-src 'self' data: blob:; font-src 'self' data:; frame-src 'self' blob: about:; media-src 'self' blob:; "
          "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# The demo page records itself with capture.js and posts to this same origin.
DEMO_CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def format_ms_duration(ms: int | None) -> str:
    """1h 02m 03s / 2m 03s / 3.4s."""
    if ms is None:
        return ""
    seconds = max(0, ms) / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def format_timestamp(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_timestamp(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,  # every template, whatever its name: recorded strings are untrusted
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["duration"] = format_ms_duration
ENV.filters["timestamp"] = format_timestamp
ENV.filters["isotime"] = iso_timestamp


def render(template: str, *, status: int = 200, csp: str = UI_CSP, headers: dict[str, str] | None = None,
           **context: Any) -> web.Response:
    body = ENV.get_template(template).render(**context)
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8", headers={
        "Content-Security-Policy": csp,
        "Cache-Control": "no-store",  # pages show session data: never from a shared cache or after sign-out
        "X-Frame-Options": "DENY",
        **(headers or {}),
    })
