"""``replay projects policy PROJECT``: show or change a project's masking policy.

Changes are validated by ``MaskingPolicy`` before they are stored (an invalid one: exit 2, the
stored policy untouched). A running server applies a change to uploads within
``PROJECT_CACHE_SECONDS`` (replay/catalog/sqlite.py); its own API applies it at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from replay.errors import BadRequest
from replay.privacy.policy import MaskingPolicy
from replay.privacy.policy_edit import edit, effective, field_kinds, policy_document


def render_policy(project_id: str, overrides: dict[str, Any]) -> str:
    policy: MaskingPolicy = effective(overrides)
    values = policy.to_dict()
    width = max(len(k) for k in values)
    lines = [f"masking policy of {project_id} (* set for this project; the rest are the defaults)"]
    for key, kind in field_kinds().items():
        value = values[key]
        shown = ("true" if value else "false") if kind == "bool" else ", ".join(value) or "(none)"
        lines.append(f"  {key:<{width}} {'*' if key in overrides else ' '} {shown}")
    lines.append(f"client settings (remote config, capture.js): {json.dumps(policy.client_settings())}")
    return "\n".join(lines) + "\n"


def _load_file(path: str) -> Any:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    return json.loads(text)


async def _policy(args: argparse.Namespace) -> int:
    from replay.cli import _with_service

    def fail(detail: str) -> int:
        print(f"replay projects policy: {detail}", file=sys.stderr)
        return 2

    async def work(service: Any) -> int:
        project = await service.catalog.project(args.project)
        if project is None:
            return fail(f"no project {args.project}")
        changing = bool(args.set or args.file or args.reset)
        overrides = project.policy
        if changing:
            try:
                document = _load_file(args.file) if args.file else None
            except (OSError, ValueError) as exc:
                return fail(f"cannot read {args.file}: {exc}")
            try:
                overrides = edit(project.policy, args.set or (), replace=document, reset=args.reset)
            except BadRequest as exc:
                return fail(f"invalid policy: {exc.detail}")
            await service.catalog.set_policy(project.id, overrides)
        else:
            try:
                effective(overrides)
            except BadRequest as exc:  # stored by an older version whose fields differ
                return fail(f"the stored policy is invalid: {exc.detail}")
        if args.json:
            print(json.dumps(policy_document(project.id, overrides)))
        else:
            sys.stdout.write(render_policy(project.id, overrides))
        return 0

    return await _with_service(args, work)


def add_parser(projects: Any, add_arguments: Callable[..., None], store_options: set[str]) -> None:
    policy = projects.add_parser(
        "policy", help="show or change a project's masking policy",
        description="Show the project's effective masking policy, or change it. KEY=VALUE settings: booleans "
                    "(enforce=false), comma-separated lists (mask_input_types=password,email); KEY+=VALUE adds to "
                    "a list (mask_attributes+=data-*), KEY-=VALUE removes. Fields: " + ", ".join(field_kinds()))
    policy.add_argument("project")
    policy.add_argument("--show", action="store_true", help="print the effective policy (the default without changes)")
    policy.add_argument("--json", action="store_true", help="print it as JSON (the API's GET document)")
    policy.add_argument("--set", action="append", metavar="KEY=VALUE", help="change one field (repeatable)")
    policy.add_argument("--file", metavar="POLICY.json",
                        help="replace the project's settings with this JSON policy object ('-': stdin)")
    policy.add_argument("--reset", action="store_true", help="back to the defaults (then --file/--set apply)")
    add_arguments(policy, store_options)
    policy.set_defaults(run=_policy)
