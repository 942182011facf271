"""Masking policy, server-side enforcement, audit and PII detectors (pure: no HTTP, no storage).

Ingest calls ``enforce_events(policy, mirror, events)`` per batch; the web layer calls
``audit_session(events, policy)`` on what playback returns.
"""

from replay.privacy.audit import SessionAudit, audit_session, render_text, summarize_project
from replay.privacy.enforce import enforce_events, mirror_attributes
from replay.privacy.mirror import MirrorCache, SessionMirror
from replay.privacy.policy import MaskingPolicy

__all__ = [
    "MaskingPolicy",
    "MirrorCache",
    "SessionAudit",
    "SessionMirror",
    "audit_session",
    "enforce_events",
    "mirror_attributes",
    "render_text",
    "summarize_project",
]
