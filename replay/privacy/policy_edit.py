"""Changing a project's stored policy: KEY=VALUE settings, a whole JSON document, a reset. Pure.

The catalog keeps only the fields a project set (its *overrides*); every other field follows
``MaskingPolicy``'s defaults of the running version, so a stricter default (a new detector, a
new sensitive URL parameter) reaches every project that never changed that field. What ingest
enforces and the audit checks is ``effective(overrides)``.

Settings, as typed on a command line (``--set``):

- ``enforce=false``, ``fixed_length_mask=yes``: booleans (true/false, yes/no, on/off, 1/0);
- ``mask_input_types=password,email``: lists, comma-separated (empty: ``mask_attributes=``);
- ``mask_attributes+=data-*`` adds to the current list, ``strip_query_params-=code`` removes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import Any

from replay.errors import BadRequest
from replay.privacy.policy import MaskingPolicy

_BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
# The keys of a document GET /api/projects/{p}/policy returns; such a document is accepted back.
DOCUMENT_KEYS = frozenset({"project_id", "policy", "overrides", "client_settings"})


def field_kinds() -> dict[str, str]:
    """Policy field name -> "bool" or "list", in declaration order."""
    return {f.name: "bool" if f.type == "bool" else "list" for f in fields(MaskingPolicy)}


def effective(overrides: dict[str, Any] | None) -> MaskingPolicy:
    """The policy a project's stored overrides mean (defaults for everything not set)."""
    return MaskingPolicy.from_dict(overrides or {})


def normalize(overrides: Any) -> dict[str, Any]:
    """Validated overrides in their stored form (trimmed, lower-cased where the policy does);
    raises ``BadRequest`` (code ``invalid_policy``) with what is wrong."""
    full = MaskingPolicy.from_dict(overrides).to_dict()
    return {name: full[name] for name in field_kinds() if name in overrides}


def policy_document(project_id: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """``GET /api/projects/{p}/policy`` and ``replay projects policy --json``; PUT and ``--file`` take it back."""
    policy = effective(overrides)
    return {"project_id": project_id, "policy": policy.to_dict(), "overrides": overrides,
            "client_settings": policy.client_settings()}


def policy_object(document: Any) -> dict[str, Any]:
    """The policy in a posted/loaded document: a policy object, or a whole GET answer (its ``policy``)."""
    if isinstance(document, dict) and isinstance(document.get("policy"), dict) and set(document) <= DOCUMENT_KEYS:
        return document["policy"]
    if not isinstance(document, dict):
        raise _invalid("a policy must be a JSON object")
    return document


def parse_setting(text: str) -> tuple[str, str, Any]:
    """``KEY=VALUE`` / ``KEY+=VALUE`` / ``KEY-=VALUE`` -> (key, operator, typed value)."""
    key, sep, raw = text.partition("=")
    op = "="
    if key.endswith(("+", "-")):
        key, op = key[:-1], key[-1] + "="
    key = key.strip()
    if not sep or not key:
        raise _invalid(f"a setting is KEY=VALUE, got {text!r}")
    kinds = field_kinds()
    if key not in kinds:
        raise _invalid(f"unknown policy field {key!r}; known: {', '.join(kinds)}")
    if kinds[key] == "bool":
        if op != "=":
            raise _invalid(f"{key} is true or false: use {key}=true or {key}=false")
        value = _BOOLS.get(raw.strip().lower())
        if value is None:
            raise _invalid(f"{key} must be true or false, got {raw!r}")
        return key, op, value
    return key, op, [part.strip() for part in raw.split(",") if part.strip()]


def edit(overrides: dict[str, Any] | None, settings: Iterable[str] = (), *,
         replace: Any = None, reset: bool = False) -> dict[str, Any]:
    """New overrides: start from ``overrides`` (none with ``reset``; ``replace``'s policy when
    given), then apply each setting in order. Validated; raises ``BadRequest``."""
    current: dict[str, Any] = {} if reset or overrides is None else dict(overrides)
    if replace is not None:
        current = dict(policy_object(replace))
    current = normalize(current)
    for text in settings:
        key, op, value = parse_setting(text)
        if op == "=":
            current[key] = value
        else:
            have = list(effective(current).to_dict()[key])
            if op == "+=":
                current[key] = have + [v for v in value if v not in have]
            else:
                current[key] = [v for v in have if v not in value]
        current = normalize(current)  # each step validated: the error names the setting that broke it
    return current


def _invalid(detail: str) -> BadRequest:
    return BadRequest(detail, code="invalid_policy")
