"""``replay audit``: the privacy audit of a project's recorded sessions, for auditors and for CI.

Each session is read the way the player reads it (blocks and the server's spool, merged, each
batch once; see replay/stored_sessions.py) and audited against the project's current policy.
Text goes to stdout (each session's report, then the project summary); with ``--json`` stdout is
exactly one JSON document (replay/session_audit.py ``project_report``). The progress bar and
messages go to stderr, so ``replay audit --json > report.json`` stays clean.

Exit status, so a pipeline can gate on it: 0 every audited session is clean; 1 something leaked;
2 a usage error (unknown project or session, a bad ``--since``); 3 nothing leaked but a session
could not be read (an audit that did not see everything must not pass).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from tqdm import tqdm

from replay.errors import BadRequest
from replay.privacy.audit import SessionAudit, render_text, summarize_project
from replay.privacy.policy_edit import effective
from replay.session_audit import audit_items, project_report, verdict

CLEAN, LEAKED, USAGE, UNREADABLE = 0, 1, 2, 3


async def _audit(args: argparse.Namespace) -> int:
    from replay.cli import _with_service
    from replay.stored_sessions import StoredSessions
    from replay.web.api import parse_time_ms

    def fail(detail: str) -> int:
        print(f"replay audit: {detail}", file=sys.stderr)
        return USAGE

    async def work(service: Any) -> int:
        project = await service.catalog.project(args.project)
        if project is None:
            return fail(f"no project {args.project}")
        try:
            policy = effective(project.policy)
            since = parse_time_ms(args.since, "since")
        except BadRequest as exc:
            return fail(exc.detail)
        sessions = StoredSessions(service)
        if args.session:
            if not await sessions.exists(project.id, args.session):
                return fail(f"no session {args.session} in {project.id}")
            ids = [args.session]
        else:
            ids = await sessions.session_ids(project.id, since)
        audits: list[SessionAudit] = []
        errors: list[dict[str, str]] = []
        bar = tqdm(total=len(ids), desc="auditing", unit="session", file=sys.stderr,
                   disable=args.no_progress or len(ids) < 2, dynamic_ncols=True)
        with bar:
            for sid in ids:
                try:
                    audit = await audit_items(sessions.items(project.id, sid), policy, session_id=sid)
                except Exception as exc:  # a corrupt or unreachable block: say so, audit the rest
                    errors.append({"session_id": sid, "error": f"{type(exc).__name__}: {exc}"})
                    bar.write(f"replay audit: cannot read {sid}: {exc}", file=sys.stderr)
                    continue
                finally:
                    bar.update()
                audits.append(audit)
                if not args.json:
                    bar.write(render_text(audit), file=sys.stdout, end="")
        if args.json:
            sys.stdout.write(json.dumps(project_report(project.id, policy, audits, errors)) + "\n")
        else:
            sys.stdout.write(render_text(summarize_project(audits)))
            unread = f", {len(errors)} could not be read" if errors else ""
            sys.stdout.write(f"verdict: {verdict(audits).upper()}{unread}\n")
        sys.stdout.flush()
        if verdict(audits) == "leaked":
            return LEAKED
        return UNREADABLE if errors else CLEAN

    return await _with_service(args, work)


def add_parser(sub: Any, add_arguments: Callable[..., None], store_options: set[str]) -> None:
    audit = sub.add_parser(
        "audit", help="privacy audit: which fields were masked, what leaked (exit 1 when anything leaked)",
        description="Audit recorded sessions against the project's masking policy. Exit status: 0 clean, "
                    "1 something leaked, 2 usage error, 3 a session could not be read.")
    audit.add_argument("--project", required=True)
    which = audit.add_mutually_exclusive_group()
    which.add_argument("--session", help="only this session")
    which.add_argument("--since", metavar="DATE",
                       help="only sessions with events at or after this time (ISO 8601, or ms since the epoch)")
    audit.add_argument("--json", action="store_true", help="one JSON document on stdout")
    audit.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_arguments(audit, store_options)
    audit.set_defaults(run=_audit)
