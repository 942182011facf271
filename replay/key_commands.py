"""``replay keys create|list|revoke``: a project's secret API keys (stored hashed; shown once)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable


def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) if ms else "-"


async def _create(args: argparse.Namespace) -> int:
    from replay.cli import _with_service

    async def work(service) -> int:
        if await service.catalog.project(args.project) is None:
            print(f"replay keys: no project {args.project}", file=sys.stderr)
            return 2
        key, secret = await service.catalog.create_key(args.project, args.name or "")
        if args.json:
            print(json.dumps({"key_id": key.id, "project_id": key.project_id, "name": key.name,
                              "prefix": key.prefix, "api_key": secret}))
        else:
            print(f"key:     {key.id} ({key.name or 'unnamed'})\nAPI key: {secret}   (shown once; stored hashed)")
        return 0
    return await _with_service(args, work)


async def _list(args: argparse.Namespace) -> int:
    from replay.cli import _with_service

    async def work(service) -> int:
        if await service.catalog.project(args.project) is None:
            print(f"replay keys: no project {args.project}", file=sys.stderr)
            return 2
        keys = await service.catalog.keys(args.project)
        if args.json:
            print(json.dumps([{"key_id": k.id, "project_id": k.project_id, "name": k.name, "prefix": k.prefix,
                               "created_ms": k.created_ms, "revoked_ms": k.revoked_ms} for k in keys]))
        else:
            for k in keys:
                state = f"revoked {_when(k.revoked_ms)}" if k.revoked_ms else "active"
                print(f"{k.id}\t{k.prefix}...\t{k.name or '-'}\tcreated {_when(k.created_ms)}\t{state}")
        return 0
    return await _with_service(args, work)


async def _revoke(args: argparse.Namespace) -> int:
    from replay.cli import _with_service

    async def work(service) -> int:
        if not await service.catalog.revoke_key(args.key_id):
            print(f"replay keys: no active key {args.key_id}", file=sys.stderr)
            return 2
        print(f"revoked {args.key_id}")
        return 0
    return await _with_service(args, work)


def add_parser(sub: Any, add_arguments: Callable[..., None], store_options: set[str]) -> None:
    keys = sub.add_parser("keys", help="manage a project's API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="create an API key; prints it once")
    create.add_argument("--project", required=True)
    create.add_argument("--name", default="")
    create.add_argument("--json", action="store_true")
    add_arguments(create, store_options)
    create.set_defaults(run=_create)
    klist = keys.add_parser("list", help="list a project's keys (ids and prefixes, never the secrets)")
    klist.add_argument("--project", required=True)
    klist.add_argument("--json", action="store_true")
    add_arguments(klist, store_options)
    klist.set_defaults(run=_list)
    revoke = keys.add_parser("revoke", help="revoke a key: it stops working at once")
    revoke.add_argument("key_id")
    add_arguments(revoke, store_options)
    revoke.set_defaults(run=_revoke)
