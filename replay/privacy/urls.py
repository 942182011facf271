"""Query and fragment parameters of a URL, located by character span so they can be masked in place.

URLs are not re-encoded (urllib would normalise them): masking replaces the value span only, so
everything else in the URL stays byte-for-byte what the browser recorded.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import unquote_plus

_PARTS = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


class Param(NamedTuple):
    name: str  # decoded
    start: int  # value span in the URL
    end: int


def split_url(url: str) -> tuple[int, list[Param]]:
    """Return where the path ends (``?``, ``#`` or the end) and every ``name=value`` parameter.

    Fragments are read as parameters too when they look like ``#a=b&c=d``: OAuth's implicit flow
    puts ``access_token`` there.
    """
    q = url.find("?")
    h = url.find("#")
    if q > h >= 0:
        q = -1  # a "?" inside the fragment
    path_end = min(i for i in (q, h, len(url)) if i >= 0)
    params: list[Param] = []
    if q >= 0:
        _pairs(url, q + 1, h if h >= 0 else len(url), params)
    if h >= 0 and "=" in url[h + 1:]:
        _pairs(url, h + 1, len(url), params)
    return path_end, params


def _pairs(url: str, start: int, end: int, out: list[Param]) -> None:
    pos = start
    while pos < end:
        amp = url.find("&", pos, end)
        stop = end if amp < 0 else amp
        eq = url.find("=", pos, stop)
        if eq >= 0:
            out.append(Param(unquote_plus(url[pos:eq]), eq + 1, stop))
        pos = stop + 1


def name_parts(name: str) -> set[str]:
    """``X-Amz-Signature`` -> {x, amz, signature}; ``apiKey`` -> {api, key}; plus the whole name."""
    lowered = name.lower()
    parts = {p for p in _PARTS.split(name) if p}
    return {lowered} | {p.lower() for p in parts}


def decoded(value: str) -> str:
    return unquote_plus(value)
