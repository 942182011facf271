"""A project's masking policy: what the server masks, blocks and strips before anything is stored.

The policy is plain, JSON-safe configuration (the catalog stores ``to_dict()`` per project). Its
defaults are strict on purpose: a site whose client masks nothing still gets inputs, sensitive
attributes, PII and URL secrets masked on the server. ``client_settings()`` is what the remote
config hands to clients so that well-behaved ones mask in the browser too (defence in depth: the
server never trusts that they did).
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, fields
from typing import Any

from replay.errors import BadRequest
from replay.privacy.detectors import DETECTORS
from replay.privacy.selectors import SelectorError, parse

# rrweb's maskInputOptions keys, plus the kinds of input rrweb has no option for.
INPUT_TYPES: tuple[str, ...] = (
    "color", "date", "datetime-local", "email", "month", "number", "range", "search", "tel", "text",
    "time", "url", "week", "password", "hidden", "radio", "checkbox", "file",
    "textarea", "select", "contenteditable",
)
RRWEB_INPUT_OPTIONS = frozenset(INPUT_TYPES[:14] + ("textarea", "select"))

DEFAULT_MASK_ATTRIBUTES: tuple[str, ...] = (
    "placeholder", "title", "alt", "aria-label", "aria-description", "aria-valuetext", "aria-placeholder",
    # data-* is not masked wholesale by default: sites and UI kits keep layout state there, and
    # replays would stop matching the CSS; PII detectors still scan every data-* value. Add
    # "data-*" to a project's mask_attributes to mask them all.
    "input[type=hidden]@value", "input[type=radio]@value", "input[type=checkbox]@value",
)
# data-* attributes UI libraries style on (Radix, Popper, Headless UI): masking them would break
# the replay's CSS; they still go through PII detection like every other attribute.
DEFAULT_KEEP_ATTRIBUTES: tuple[str, ...] = (
    "data-state", "data-orientation", "data-side", "data-align", "data-placement", "data-theme",
    "data-headlessui-state", "data-rr-is-password",
)
DEFAULT_STRIP_QUERY_PARAMS: tuple[str, ...] = (
    "email", "mail", "token", "password", "passwd", "pwd", "pass", "secret", "key", "apikey", "api_key",
    "access_token", "refresh_token", "id_token", "auth", "authorization", "session", "sessionid", "sid",
    "code", "signature", "sig", "credential", "credentials", "otp", "ssn", "card", "phone",
)


@dataclass(frozen=True)
class MaskingPolicy:
    """Server-side masking policy of one project (validated on construction; immutable).

    - ``mask_all_inputs``: mask every input, textarea, select and contenteditable value (button
      labels excepted). When false only ``mask_input_types`` are masked; passwords always are.
    - ``mask_option_text``: with selects masked, also mask ``<option>`` text and values and drop
      ``selected`` (otherwise the option list shows what the masked select holds).
    - ``mask_text_selectors`` / ``block_selectors``: CSS selectors (see ``selectors.py`` for the
      supported subset); text under the first is masked, elements matching the second are
      replaced by rrweb's blocked placeholder.
    - ``mask_attributes``: attribute names (``title``), globs (``data-*``) or ``selector@name``
      (``input[type=hidden]@value``); ``keep_attributes`` are exceptions to the name rules.
    - ``pii_detectors``: which detectors run over all remaining text, attributes and URLs.
    - ``strip_query_params``: query/fragment parameters whose values are always masked; a name
      matches exactly or by one of its parts (``reset_token``, ``apiKey``, ``X-Amz-Signature``).
    - ``fixed_length_mask``: input values mask to ``********`` whatever their length, so
      keystrokes do not reveal a password's length.
    - ``enforce``: false stores events as received (the audit still reports what leaked).
    """

    enforce: bool = True
    mask_all_inputs: bool = True
    mask_input_types: tuple[str, ...] = ("password",)
    mask_option_text: bool = True
    mask_text_selectors: tuple[str, ...] = (".rr-mask", ".ph-mask")
    block_selectors: tuple[str, ...] = (".rr-block", ".ph-no-capture")
    mask_attributes: tuple[str, ...] = DEFAULT_MASK_ATTRIBUTES
    keep_attributes: tuple[str, ...] = DEFAULT_KEEP_ATTRIBUTES
    pii_detectors: tuple[str, ...] = DETECTORS
    strip_query_params: tuple[str, ...] = DEFAULT_STRIP_QUERY_PARAMS
    fixed_length_mask: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "bool":
                if not isinstance(value, bool):
                    raise _invalid(f"{f.name} must be true or false")
                continue
            if isinstance(value, str) or not isinstance(value, (list, tuple)):
                raise _invalid(f"{f.name} must be a list of strings")
            if not all(isinstance(v, str) and v.strip() for v in value):
                raise _invalid(f"{f.name} must hold non-empty strings")
            object.__setattr__(self, f.name, tuple(v.strip() for v in value))
        bad = [t for t in self.mask_input_types if t.lower() not in INPUT_TYPES]
        if bad:
            raise _invalid(f"unknown mask_input_types {bad}; known: {list(INPUT_TYPES)}")
        object.__setattr__(self, "mask_input_types", tuple(t.lower() for t in self.mask_input_types))
        bad = [d for d in self.pii_detectors if d not in DETECTORS]
        if bad:
            raise _invalid(f"unknown pii_detectors {bad}; known: {list(DETECTORS)}")
        for sel in self.mask_text_selectors + self.block_selectors:
            _check_selector(sel)
        for rule in self.mask_attributes:
            selector, at, name = rule.rpartition("@")
            if at:
                _check_selector(selector)
            if not name or any(c in name for c in " ,[]>"):
                raise _invalid(f"mask_attributes entry {rule!r} must be a name, a glob or selector@name")
        object.__setattr__(self, "strip_query_params", tuple(p.lower() for p in self.strip_query_params))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MaskingPolicy:
        """Build from stored/posted JSON; unknown keys are an error (a typo must not weaken masking)."""
        if not isinstance(data, dict):
            raise _invalid("policy must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise _invalid(f"unknown policy fields {unknown}")
        return cls(**data)

    def masks_input_type(self, kind: str) -> bool:
        """Whether values of this input type (or ``textarea``/``select``/``contenteditable``) are masked."""
        return self.mask_all_inputs or kind == "password" or kind in self.mask_input_types

    def client_settings(self) -> dict[str, Any]:
        """rrweb ``record()`` options for the remote config (posthog's ``sessionRecording.masking``).

        Always sent as the strict side: the server masks regardless, but masking in the browser
        means the secret never crosses the network.
        """
        out: dict[str, Any] = {"maskAllInputs": self.mask_all_inputs}
        if not self.mask_all_inputs:
            options = {t: True for t in self.mask_input_types if t in RRWEB_INPUT_OPTIONS}
            options["password"] = True
            out["maskInputOptions"] = options
        out["maskTextSelector"] = ", ".join(self.mask_text_selectors) or None
        out["blockSelector"] = ", ".join(self.block_selectors) or None
        return out

    def attribute_name_masked(self, name: str) -> bool:
        """Name-only rules (``title``, ``data-*``) for ``name``, honouring ``keep_attributes``."""
        if name in self.keep_attributes:
            return False
        return any(
            "@" not in rule and (rule == name or ("*" in rule and fnmatch.fnmatchcase(name, rule)))
            for rule in self.mask_attributes
        )


def _invalid(detail: str) -> BadRequest:
    return BadRequest(detail, code="invalid_policy")


def _check_selector(selector: str) -> None:
    try:
        parse(selector)
    except SelectorError as exc:
        raise _invalid(str(exc)) from None
