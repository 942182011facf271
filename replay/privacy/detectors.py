"""PII detectors over text, and the masking forms that go with them.

Every detector is a regex that finds candidates plus a validator that throws out look-alikes
(Luhn for cards, mod-97 for IBANs, entropy for anonymous tokens). Candidates are found in one
pass over the text (one alternation), because this runs on every text node at ingest.

A prefilter (``_candidate_pattern``; ``may_contain_pii`` for callers) skips the full pattern for
most page text: an e-mail needs ``@``; the numeric detectors (card, phone, SSN) need seven digits
in one run of digits and separators; an IBAN needs its country code and check digits; the tokens
need an 11-character word and either a token prefix (``_TOKEN_PREFIXES``) or a 32-200 character
ASCII word with two digits (what the entropy detector accepts at least). A new detector
must widen the prefilter, here and in ``_native_walk.c``, which implements the same test; the
tests hold the prefilter to the full pattern and the C version to this one.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from replay import native_parts

DETECTORS: tuple[str, ...] = ("email", "payment_card", "phone", "iban", "ssn", "token")

_SEVEN_DIGITS = re.compile(r"\d(?:[ ().-]*\d){6}")  # seven digits in one run of digits and separators
_WHITESPACE_RUN = re.compile(r"(\s+)")
_UNMASKED_CHAR = re.compile(r"[^\s*]")

# One alternative per candidate kind. Order matters where candidates overlap: earlier
# alternatives win at the same position.
_ALTERNATIVES: tuple[tuple[str, str], ...] = (
    ("email", r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+[A-Za-z]{2,24}(?![\w-])"),
    ("jwt", r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}(?![\w-])"),
    ("apikey", r"""(?<![\w-])(?:
        (?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,}
      | (?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}
      | github_pat_[A-Za-z0-9_]{30,}
      | xox[abprs]-[A-Za-z0-9-]{10,}
      | (?:AKIA|ASIA)[0-9A-Z]{16}
      | AIza[0-9A-Za-z_-]{35}
      | glpat-[A-Za-z0-9_-]{20,}
      | sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}
      | npm_[A-Za-z0-9]{36}
      | shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}
    )(?![\w-])"""),
    ("iban", r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?(?![A-Za-z0-9])"),
    ("ssn", r"(?<![\d-])(?!000|666|9\d\d)\d{3}(?P<ssn_sep>[- ])(?!00)\d{2}(?P=ssn_sep)(?!0000)\d{4}(?![\d-])"),
    ("card", r"(?<![\d-])[2-6]\d{3}(?:[ -]?\d{2,4}){2,4}(?:[ -]?\d{1,3})?(?![\d-])"),
    ("phone", r"""(?<![\w+])(?:
        \+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}
      | \(\d{3}\)[ ]?\d{3}[ .-]\d{4}
      | \d{3}(?P<nanp_sep>[.-])\d{3}(?P=nanp_sep)\d{4}
    )(?![\w-])"""),
    ("entropy", r"(?<![\w-])[A-Za-z0-9_-]{32,200}(?![\w-])"),
)
# Literal starts of the jwt and apikey alternatives below: a text without one of them (and without
# an IBAN's start) can only hold an entropy token. Keep in step with _ALTERNATIVES.
_TOKEN_PREFIXES: tuple[str, ...] = (
    "eyJ", "sk_", "rk_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "xoxa-", "xoxb-", "xoxp-",
    "xoxr-", "xoxs-", "AKIA", "ASIA", "AIza", "glpat-", "sk-", "npm_", "shpat_", "shpss_", "shpca_", "shppa_",
)
_IBAN_START = re.compile(r"[A-Z]{2}\d{2}")
# An IBAN's start, or a word as long as the shortest token ("eyJ" and eight more: a JWT's first part).
_WORD_GATE = re.compile(r"[A-Z]{2}\d{2}|[\w-]{11}")
# The entropy alternative, with the two digits _token_ok asks for at least (kebab-case anchors and
# identifiers in code samples, most long words, have none).
_ENTROPY_CANDIDATE = re.compile(r"(?<![\w-])(?=[A-Za-z_-]*[0-9][A-Za-z_-]*[0-9])[A-Za-z0-9_-]{32,200}(?![\w-])")
# E-mail needs "@" and the numeric kinds seven digits in a run of digits and separators:
# text with neither can only hold the word-like kinds, and a pattern of those alone scans it
# about twice as fast. Leaving out kinds that cannot match changes no result.
_WORD_KINDS = frozenset({"jwt", "apikey", "iban", "entropy"})


def _compile(kinds: frozenset[str] | None = None) -> re.Pattern[str]:
    return re.compile("|".join(f"(?P<{name}>{alt})" for name, alt in _ALTERNATIVES if kinds is None or name in kinds),
                      re.VERBOSE)


_PATTERN = _compile()
_WORD_PATTERN = _compile(_WORD_KINDS)

_GROUP_KIND = {
    "email": "email",
    "jwt": "token",
    "apikey": "token",
    "iban": "iban",
    "ssn": "ssn",
    "card": "payment_card",
    "phone": "phone",
    "entropy": "token",
}

# Not e-mail addresses: retina asset names like ``logo@2x.png``.
_FILE_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "avif", "css", "js", "mjs", "ico", "woff", "woff2"})

# IBAN lengths per country (ISO 13616 registry, common subset); unknown countries need 15-34.
_IBAN_LENGTHS = dict(
    (cc, int(n))
    for cc, n in (
        item.split(":")
        for item in (
            "AD:24 AE:23 AL:28 AT:20 AZ:28 BA:20 BE:16 BG:22 BH:22 BR:29 CH:21 CR:22 CY:28 CZ:24 DE:22 "
            "DK:18 DO:28 EE:20 EG:29 ES:24 FI:18 FO:18 FR:27 GB:22 GE:22 GI:23 GL:18 GR:27 GT:28 HR:21 "
            "HU:28 IE:22 IL:23 IS:26 IT:27 JO:30 KW:30 KZ:20 LB:28 LI:21 LT:20 LU:20 LV:21 MC:27 MD:24 "
            "ME:22 MK:19 MR:27 MT:31 MU:30 NL:18 NO:15 PK:24 PL:28 PS:29 PT:25 QA:29 RO:24 RS:22 SA:24 "
            "SE:24 SI:19 SK:24 SM:27 TN:24 TR:26 UA:29 VA:22 VG:24 XK:20"
        ).split()
    )
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected item: ``kind`` is one of ``DETECTORS``; ``span`` is ``(start, end)`` in the text."""

    kind: str
    span: tuple[int, int]


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    s = candidate.replace(" ", "")
    expected = _IBAN_LENGTHS.get(s[:2])
    if expected is not None and len(s) != expected:
        return False
    if expected is None and not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    # int() of the letter-expanded string is exact; IBANs are at most 34 chars so this is cheap.
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _entropy(s: str) -> float:
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def _card_ok(s: str) -> bool:
    digits = s.replace(" ", "").replace("-", "")
    if not 13 <= len(digits) <= 19:
        return False
    if " " in s and "-" in s:  # "4242 4242-4242 4242" is not how anyone writes a card number
        return False
    return luhn_ok(digits)


def _phone_ok(s: str) -> bool:
    return 7 <= sum(c.isdigit() for c in s) <= 15


def _email_ok(s: str) -> bool:
    return s.rsplit(".", 1)[-1].lower() not in _FILE_TLDS


def _token_ok(s: str) -> bool:
    # Anonymous long strings: a secret has letters AND digits and looks random; kebab-case
    # identifiers and hex digests (entropy <= 4 bits/char) do not count.
    digits = sum(c.isdigit() for c in s)
    letters = sum(c.isalpha() for c in s)
    if digits < 2 or letters < 8:
        return False
    if s.count("-") + s.count("_") > len(s) // 8:
        return False
    return _entropy(s) > 4.2


def _shrinking(check: Callable[[str], bool]) -> Callable[[str], int]:
    """A validator that also tries the candidate cut at each separator from the right.

    The regex is greedy, so "4242 4242 4242 4242 123" (card then CVV) is one candidate that
    fails Luhn; the card inside it must still be found.
    """

    def length(s: str) -> int:
        while True:
            if check(s):
                return len(s)
            cut = max(s.rfind(" "), s.rfind("-"))
            if cut <= 0:
                return 0
            s = s[:cut]

    return length


def _whole(check: Callable[[str], bool]) -> Callable[[str], int]:
    return lambda s: len(s) if check(s) else 0


# Each validator returns how many leading characters of the candidate are a real finding (0: none).
_VALIDATORS: dict[str, Callable[[str], int]] = {
    "email": _whole(_email_ok),
    "iban": _shrinking(iban_ok),
    "card": _shrinking(_card_ok),
    "phone": _whole(_phone_ok),
    "entropy": _whole(_token_ok),
}


# The same prefilter in C (replay/privacy/_native_walk.c), where it was built: 3-10x faster.
_native = native_parts.load("replay.privacy._native_walk")
if _native is not None:
    _native.set_token_prefixes(_TOKEN_PREFIXES)
_native_prefilter = _native.candidate if _native is not None else None
_BY_CANDIDATE = (None, _PATTERN, _WORD_PATTERN)  # what the C prefilter's answer 0 / 1 / 2 means


def use_native_prefilter(enabled: bool) -> None:
    """Run the prefilter in C (when built) or in Python (``walk.use_native_walk`` switches both)."""
    global _native_prefilter
    _native_prefilter = _native.candidate if enabled and _native is not None else None


def _candidate_pattern(text: str) -> re.Pattern[str] | None:
    """The prefilter: the pattern that can find something in ``text``, or None when nothing can."""
    if _native_prefilter is not None:
        return _BY_CANDIDATE[_native_prefilter(text)]
    return _python_candidate_pattern(text)


def _python_candidate_pattern(text: str) -> re.Pattern[str] | None:
    if "@" in text:
        return _PATTERN
    if len(text) < 7:  # shorter than seven digits, let alone a 20-character word
        return None
    if _SEVEN_DIGITS.search(text) is not None:
        return _PATTERN
    if len(text) >= 15 and _may_hold_a_word_kind(text):  # 15: an IBAN's or a Slack token's least
        return _WORD_PATTERN
    return None


def _may_hold_a_word_kind(text: str) -> bool:
    """An IBAN start, or an 11-character word with a token prefix or an entropy candidate."""
    gate = _WORD_GATE.search(text)
    if gate is None:
        return False
    if _IBAN_START.search(text, gate.start()) is not None:  # none starts before the gate's match
        return True
    return any(prefix in text for prefix in _TOKEN_PREFIXES) or (
        len(text) >= 32 and _ENTROPY_CANDIDATE.search(text) is not None)


def may_contain_pii(text: str) -> bool:
    """False when no detector can match ``text`` (the cheap test callers use to skip most text)."""
    return _candidate_pattern(text) is not None


_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#@]*")


def url_may_contain_pii(url: str) -> bool:
    """``may_contain_pii`` for a URL: its scheme and host (``http://127.0.0.1:8000``) cannot match."""
    if _native_prefilter is not None:
        return _native.url_may_contain_pii(url)
    return may_contain_pii(url[url_host_end(url):])


def url_host_end(url: str) -> int:
    """Where a URL's scheme and host end (0 if it has none): where PII detection starts.

    An IP address and port would pass for a phone number; user data lives in the path, query and
    fragment. A URL with ``@`` anywhere is scanned whole (``user:pass@host``).
    """
    if "@" in url:
        return 0
    m = _AUTHORITY.match(url)
    return m.end() if m is not None else 0


def find_pii(text: str, enabled: frozenset[str] | None = None) -> list[Finding]:
    """All PII findings in ``text`` (non-overlapping, in order); ``enabled`` limits the kinds."""
    pattern = _candidate_pattern(text)
    return [] if pattern is None else _scan(pattern, text, enabled)


def _scan(pattern: re.Pattern[str], text: str, enabled: frozenset[str] | None) -> list[Finding]:
    out: list[Finding] = []
    for m in pattern.finditer(text):
        group = m.lastgroup
        if group is None:
            continue
        kind = _GROUP_KIND[group]
        if enabled is not None and kind not in enabled:
            continue
        start, end = m.span(group)
        check = _VALIDATORS.get(group)
        if check is not None:
            end = start + check(text[start:end])
            if end == start:
                continue
        out.append(Finding(kind, (start, end)))
    return out


def mask_text(text: str) -> str:
    """rrweb's text masking form: every non-whitespace character becomes ``*``."""
    # A word at a time: a substitution per character costs ~1,000 instructions each, and every
    # title and aria-label of a page passes here under the default policy.
    parts = _WHITESPACE_RUN.split(text)
    parts[::2] = ["*" * len(word) for word in parts[::2]]
    return "".join(parts)


def is_masked(value: object) -> bool:
    """True for values that carry nothing: empty, or only ``*`` and whitespace."""
    if value is None or value is True or value is False:
        return True
    if not isinstance(value, str):
        return False
    return _UNMASKED_CHAR.search(value) is None


def mask_spans(text: str, spans: list[tuple[int, int]]) -> str:
    if not spans:
        return text
    parts: list[str] = []
    pos = 0
    for start, end in spans:
        parts.append(text[pos:start])
        parts.append(mask_text(text[start:end]))
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def mask_pii(text: str, enabled: frozenset[str] | None = None) -> tuple[str, list[Finding]]:
    """Mask every PII finding in rrweb's form (lengths and whitespace kept); return the findings too."""
    findings = find_pii(text, enabled)
    if not findings:
        return text, findings
    return mask_spans(text, [f.span for f in findings]), findings


def _stars(s: str) -> str:
    return "*" * max(3, min(len(s), 8))


def excerpt(kind: str, value: str) -> str:
    """A masked excerpt of a secret for reports: enough to recognise it, never the secret itself."""
    value = value.strip()
    if not value or is_masked(value):
        return value
    if kind == "email" and "@" in value:
        local, _, domain = value.rpartition("@")
        host, dot, tld = domain.rpartition(".")
        return f"{local[0]}{_stars(local[1:])}@{host[:1]}{_stars(host[1:])}{dot}{tld}"
    if kind == "payment_card":
        digits = "".join(c for c in value if c.isdigit())
        return "**** **** **** " + digits[-4:] if len(digits) >= 13 else _stars(digits)
    if kind == "iban":
        s = value.replace(" ", "")
        return f"{s[:2]}** **** … {s[-2:]}"
    if kind == "ssn":
        return "***-**-****"
    if kind == "phone":
        digits = "".join(c for c in value if c.isdigit())
        return ("+" if value.startswith("+") else "") + "*" * max(0, len(digits) - 2) + digits[-2:]
    if kind == "token":
        # Prefixes such as sk_live_/ghp_/eyJ say what leaked; the rest never appears.
        return f"{value[:4]}… ({len(value)} chars)"
    if len(value) <= 4:
        return "*" * len(value)
    return f"{value[0]}{_stars(value[1:-1])}{value[-1]}"
