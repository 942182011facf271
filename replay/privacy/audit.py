"""Privacy audit of a recorded session: every form field seen, and everything that leaked.

``audit_session(events, policy)`` replays the events through the same walker enforcement uses
(``walk.py``), so "leaked" means exactly "enforcement of this policy would have changed it".
Events are what playback returns: rrweb event dicts in order, or ``(window_id, event)`` pairs
when a session has several windows (each window has its own node ids and mirror).

Finding kinds:
- ``unmasked_input``: a field value the policy masks was recorded readable (snapshot value,
  Input event, textarea/contenteditable text; hidden/radio/checkbox values included);
- ``password_length``: a password field's masked value grew keystroke by keystroke;
- ``unmasked_text``: text the policy masks (mask selectors, ``<option>`` text of masked selects);
- ``unmasked_attribute``: an attribute the policy masks (placeholder, title, aria-label, data-*...);
- ``unblocked_element``: content recorded inside an element the policy blocks;
- ``sensitive_url_param``: a URL parameter the policy strips had a readable value;
- ``email``, ``payment_card``, ``phone``, ``iban``, ``ssn``, ``token``: PII detectors.

Excerpts are masked (``detectors.excerpt``): a report never repeats a secret.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from replay.privacy.detectors import excerpt, find_pii, is_masked
from replay.privacy.mirror import PASSWORD, Node, SessionMirror
from replay.privacy.policy import MaskingPolicy
from replay.privacy.urls import decoded, split_url
from replay.privacy.walk import FORM_INPUT_EVENT, Rules, Walker, rules_for

HIGH = "high"  # user data or secrets readable in the recording
LOW = "low"  # the policy says mask it, and nothing sensitive was detected in it
_LOW_KINDS = frozenset({"unmasked_attribute", "unmasked_text", "unblocked_element"})


@dataclass
class FieldReport:
    """One form field (input, textarea, select, contenteditable root) seen in the recording."""

    window_id: str
    node_id: int
    tag: str
    type: str
    name: str | None
    id: str | None
    autocomplete: str | None
    path: str
    must_mask: bool
    values: int = 0  # values recorded for it (snapshot value, input events, text)
    unmasked_values: int = 0

    @property
    def masked(self) -> bool:
        return self.unmasked_values == 0


@dataclass
class Finding:
    kind: str
    severity: str
    where: str  # "input", "text", "attribute:title", "url:page url", "url:href", "custom event"...
    path: str  # CSS path of the node, "" when not tied to a node
    excerpt: str
    window_id: str
    node_id: int | None
    timestamp: int | float | None
    count: int = 1


@dataclass
class SessionAudit:
    session_id: str | None
    events: int
    windows: int
    fields: list[FieldReport] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "leaked" if self.findings else "clean"

    def counts(self) -> dict[str, int]:
        c: Counter[str] = Counter()
        for f in self.findings:
            c[f.kind] += f.count
        return dict(sorted(c.items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "verdict": self.verdict,
            "events": self.events,
            "windows": self.windows,
            "counts": self.counts(),
            "fields": [dict(asdict(f), masked=f.masked) for f in self.fields],
            "findings": [asdict(f) for f in self.findings],
        }


def audit_session(
    events: Iterable[Any], policy: MaskingPolicy | None = None, *, session_id: str | None = None
) -> SessionAudit:
    """Audit one session's events against ``policy`` (default: ``MaskingPolicy()``, the strict one).

    Reads the events, never changes them.
    """
    rules = rules_for(policy or MaskingPolicy())
    walkers: dict[str, tuple[Walker, _Auditor]] = {}
    fields: list[FieldReport] = []
    findings: dict[tuple[Any, ...], Finding] = {}
    count = 0
    for item in events:
        window, ev = _split(item)
        pair = walkers.get(window)
        if pair is None:
            mirror = SessionMirror(rules.selector_attributes)
            auditor = _Auditor(rules, window, fields, findings)
            pair = walkers[window] = (Walker(rules, mirror, auditor), auditor)
        count += 1
        pair[1].timestamp = ev.get("timestamp") if isinstance(ev, dict) else None
        pair[0].event(ev)
    for _, auditor in walkers.values():
        auditor.finish()
    ordered = sorted(findings.values(), key=lambda f: (f.severity != HIGH, f.kind, f.path, f.where))
    return SessionAudit(session_id, count, len(walkers), fields, ordered)


def _split(item: Any) -> tuple[str, Any]:
    if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], dict):
        return str(item[0]), item[1]
    return "", item


def css_path(node: Node | None) -> str:
    """A readable CSS path: up to the nearest ancestor with an id, fields named by ``name``."""
    if node is None:
        return "?"
    parts: list[str] = []
    n = node
    while not n.tag.startswith("#"):
        if len(parts) == 12:  # readable, and bounded on pathologically deep pages
            parts.append("…")
            break
        seg = n.tag
        if n.attrs.get("id"):
            parts.append(f"{seg}#{n.attrs['id']}")
            break
        if n.attrs.get("name"):
            seg += f'[name="{n.attrs["name"]}"]'
        elif n.attrs.get("class"):
            seg += "".join(f".{c}" for c in n.attrs["class"].split()[:2])
        parts.append(seg)
        if n.parent is None:
            parts.append("?")  # unknown ancestry: this process never saw the full snapshot
            break
        n = n.parent
    return " > ".join(reversed(parts)) or "?"


class _Auditor:
    """Sink that records what it sees and changes nothing."""

    drops_blocked = False

    def __init__(self, rules: Rules, window: str, fields: list[FieldReport],
                 findings: dict[tuple[Any, ...], Finding]) -> None:
        self.rules = rules
        self.window = window
        self.fields = fields
        self.findings = findings
        self.timestamp: int | float | None = None
        self._fields: dict[int, FieldReport] = {}
        self._password_lengths: dict[int, set[int]] = {}
        self._password_nodes: dict[int, Node] = {}

    # --- Sink -------------------------------------------------------------------------------------

    def field(self, node: Node) -> None:
        report = self._fields.get(node.id)
        if report is not None and report.tag == node.tag:
            return
        kind = "contenteditable" if node.tag not in ("input", "textarea", "select") else node.input_type()
        report = FieldReport(
            self.window, node.id, node.tag, kind, node.attrs.get("name"), node.attrs.get("id"),
            node.attrs.get("autocomplete"), css_path(node), self.rules.masks_value(node)
            if kind != "contenteditable" else self.rules.mask_editable,
        )
        self._fields[node.id] = report
        self.fields.append(report)

    def input_value(self, node: Node | None, value: str, must_mask: bool, form: str) -> str:
        masked = is_masked(value) or (
            node is not None and node.input_type() in ("radio", "checkbox") and value == "on"
        )
        report = self._fields.get(node.id) if node is not None else None
        if report is not None:
            report.values += 1
            report.unmasked_values += not masked
            report.must_mask = report.must_mask or must_mask
        if masked:
            if node is not None and node.flags & PASSWORD and form == FORM_INPUT_EVENT and value:
                self._password_lengths.setdefault(node.id, set()).add(len(value))
                self._password_nodes[node.id] = node
            return value
        if must_mask:
            # A password's characters are not shown at all, not even first/last.
            shown = "********" if node is not None and node.flags & PASSWORD else None
            where = "input" if form == FORM_INPUT_EVENT else form
            self._add("unmasked_input", where, node, shown or value, exact=bool(shown), kind_for="")
        self._pii(value, form if form != FORM_INPUT_EVENT else "input", node)
        return value

    def text(self, parent: Node | None, value: str, must_mask: bool) -> str:
        if is_masked(value):
            return value
        if must_mask:
            self._add("unmasked_text", "text", parent, value)
        self._pii(value, "text", parent)
        return value

    def attribute(self, node: Node | None, name: str, value: str, must_mask: bool) -> str:
        if is_masked(value):
            return value
        if must_mask:
            self._add("unmasked_attribute", f"attribute:{name}", node, value)
        self._pii(value, f"attribute:{name}", node)
        return value

    def free_text(self, where: str, value: str) -> str:
        self._pii(value, where, None)
        return value

    def url(self, node: Node | None, where: str, value: str) -> str:
        if value.startswith("data:"):
            return value
        where = f"url:{where}"
        path_end, params = split_url(value)
        for p in params:
            raw = value[p.start:p.end]
            if not raw or is_masked(raw):
                continue
            if self.rules.sensitive_param(p.name):
                self._add("sensitive_url_param", f"{where} ({p.name})", node, f"{p.name}={excerpt('', raw)}",
                          exact=True)
            self._pii(decoded(raw), where, node)
        self._pii(value[:path_end], where, node)
        return value

    def blocked(self, node: Node, serialized: dict[str, Any] | None) -> None:
        if serialized is not None:
            attrs = serialized.get("attributes") or {}
            extra = set(attrs) - {"id", "class", "rr_width", "rr_height"} if isinstance(attrs, dict) else set()
            if not serialized.get("childNodes") and not extra:
                return  # rrweb's (or our) blocked placeholder: nothing recorded inside
        self._add("unblocked_element", "element", node, "", exact=True)

    def option_selected(self, option: Node) -> bool:
        select = option.parent if option.parent is not None and option.parent.tag == "select" else None
        report = self._fields.get(select.id) if select is not None else None
        if report is not None:
            report.values += 1
            report.unmasked_values += 1
        self._add("unmasked_input", "option selected", select or option, "", exact=True)
        return False

    # --- helpers ----------------------------------------------------------------------------------

    def finish(self) -> None:
        for node_id, lengths in self._password_lengths.items():
            if len(lengths) > 1:  # a fixed-length mask has one length however much was typed
                node = self._password_nodes[node_id]
                self._add("password_length", "input", node, f"{len(lengths)} different lengths", exact=True)

    def _pii(self, value: str, where: str, node: Node | None) -> None:
        for f in find_pii(value, self.rules.detectors):
            self._add(f.kind, where, node, value[f.span[0]:f.span[1]])

    def _add(self, kind: str, where: str, node: Node | None, value: str, *, exact: bool = False,
             kind_for: str | None = None) -> None:
        key = (kind, self.window, node.id if node is not None else None, where)
        found = self.findings.get(key)
        if found is not None:
            found.count += 1
            return
        shown = value if exact else excerpt(kind if kind_for is None else kind_for, value)
        self.findings[key] = Finding(
            kind, LOW if kind in _LOW_KINDS else HIGH, where, css_path(node) if node is not None else "",
            shown, self.window, node.id if node is not None else None, self.timestamp,
        )


@dataclass
class ProjectSummary:
    sessions: int
    clean: int
    leaked: int
    findings_by_kind: dict[str, int]
    sessions_by_kind: dict[str, int]
    leaking_fields: list[dict[str, Any]]  # fields (by path/name) that leaked, with session counts
    worst_sessions: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize_project(audits: Iterable[SessionAudit], top: int = 20) -> ProjectSummary:
    """Aggregate session audits: how many leaked, by what, and which fields leak most often."""
    audits = list(audits)
    by_kind: Counter[str] = Counter()
    sessions_by_kind: Counter[str] = Counter()
    fields: Counter[tuple[str, str, str | None]] = Counter()
    for a in audits:
        counts = a.counts()
        by_kind.update(counts)
        sessions_by_kind.update(counts.keys())
        fields.update({(f.path, f.type, f.name) for f in a.fields if f.must_mask and not f.masked})
    leaked = [a for a in audits if a.verdict == "leaked"]
    worst = sorted(leaked, key=lambda a: -sum(f.count for f in a.findings))[:top]
    return ProjectSummary(
        sessions=len(audits),
        clean=len(audits) - len(leaked),
        leaked=len(leaked),
        findings_by_kind=dict(sorted(by_kind.items())),
        sessions_by_kind=dict(sorted(sessions_by_kind.items())),
        leaking_fields=[
            {"path": p, "type": t, "name": n, "sessions": c} for (p, t, n), c in fields.most_common(top)
        ],
        worst_sessions=[
            {"session_id": a.session_id, "findings": len(a.findings), "counts": a.counts()} for a in worst
        ],
    )


def render_text(report: SessionAudit | ProjectSummary) -> str:
    """A plain-text report for terminals and logs."""
    if isinstance(report, ProjectSummary):
        lines = [f"project: {report.sessions} sessions, {report.clean} clean, {report.leaked} leaked"]
        lines += [f"  {k}: {n} findings in {report.sessions_by_kind[k]} sessions"
                  for k, n in report.findings_by_kind.items()]
        if report.leaking_fields:
            lines.append("fields recorded unmasked:")
            lines += [f"  {f['path']} ({f['type']}): {f['sessions']} sessions" for f in report.leaking_fields]
        return "\n".join(lines) + "\n"
    name = report.session_id or "session"
    lines = [f"{name}: {report.verdict.upper()} ({report.events} events, {len(report.fields)} fields, "
             f"{len(report.findings)} findings)"]
    if report.fields:
        lines.append("fields:")
        for f in report.fields:
            state = "masked" if f.masked else f"UNMASKED ({f.unmasked_values}/{f.values} values)"
            rule = "" if f.must_mask else " (policy: not masked)"
            lines.append(f"  {f.path} [{f.type}]: {state}{rule}")
    if report.findings:
        lines.append("findings:")
        for x in report.findings:
            times = f" x{x.count}" if x.count > 1 else ""
            lines.append(f"  [{x.severity}] {x.kind} at {x.path or '-'} ({x.where}): {x.excerpt}{times}")
    return "\n".join(lines) + "\n"
