"""The ``replay`` command: serve, projects (and their policy), keys, reindex, compact, export, audit."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from replay.config import add_arguments, settings_from
from replay.playback import event_json
from replay.service import Service

log = logging.getLogger("replay")
STORE_OPTIONS = {"data", "blob_url", "s3_endpoint_url", "s3_region", "s3_path_style", "catalog_url", "retention_days"}


def _setup_logging(fmt: str) -> None:
    if fmt == "json":
        from replay.logs import JsonFormatter
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=logging.INFO, handlers=[handler])
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _tune_gc() -> None:
    """Keep the cyclic garbage collector off the ingest path.

    Decoding an upload makes one Python container per JSON object and array, and with the default
    thresholds every 700 of them start a collection; the older generations, which hold every
    module, class and function loaded at startup, are walked again and again. Measured with
    bench/ingest_throughput.py that doubled the cost of orjson.loads. Freezing what startup made
    takes it out of every later collection, and a higher first threshold makes collections rarer
    while a batch is being decoded. But a collection's pause grows with that threshold, and every
    upload in flight waits for it: at 50,000 the young generation took 25-30 ms to collect and the
    next one up 140-175 ms, which set the p99 of 1,000 concurrent sessions
    (bench/concurrency.py); 5,000 keeps those pauses near 10 and 18 ms and costs decoding ~12%
    (bench/gc_decode.py). A full collection walks every object the server holds, mostly the
    privacy mirrors' nodes (~0.4 us each: 200-400 ms at 1,000 concurrent sessions), and by default
    one may start every ten collections of the middle generation, i.e. every 20-30 s under load; a
    third threshold of 100 makes that every few minutes. An upload's objects are freed by reference
    counting when its request ends and the mirrors hold no cycles, so the collector is left with
    the rare reference cycle, which can wait. Where the C parts are built, decoded uploads and the
    mirrors' nodes are not tracked by the collector at all (``ingest/_decoded_tree.c``,
    ``privacy/_native_walk.c``): its CPU share under load fell from 12-14% to under 2%.
    """
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, 5_000), gen1, max(gen2, 100))


async def _serve(args: argparse.Namespace) -> int:
    from replay.ingest import body, packed
    from replay.privacy import walk
    from replay.web.app import start_server

    settings = settings_from(args)
    service = Service(settings)
    await service.start()
    project, api_key = await service.ensure_default_project()
    runner, port = await start_server(service, settings.host, settings.port)
    _tune_gc()
    url = f"http://{settings.host}:{port}"
    print(f"Replay data: {settings.data.resolve()}  blobs: {service.store.url}", flush=True)
    print(f"  project {project.id} ({project.name}) ingest token: {project.ingest_token}", flush=True)
    if api_key:
        print(f"  API key (shown once, keep it): {api_key}", flush=True)
    print(f"  demo: {url}/demo   sessions: {url}/", flush=True)
    missing = [part for part, built in (("the masking walk", walk.native_walk is not None),
                                        ("the decoded-upload helper", body.UNTRACKS_DECODED),
                                        ("the JSON-to-msgpack packer", packed.BUILT)) if not built]
    if missing:
        print(f"  {' and '.join(missing)} run in Python, slower: the C parts were not built at install "
              "(they need a C compiler and Python's headers; see README, Performance)", flush=True)
    # Printed last: scripts and tests wait for this line, so everything above is already out.
    print(f"Replay listening on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("Replay: stopping, flushing the spool", flush=True)
    await runner.cleanup()
    await service.stop()
    return 0


async def _with_service(args: argparse.Namespace, work) -> Any:
    service = Service(settings_from(args))
    await service.catalog.open()
    try:
        return await work(service)
    finally:
        await service.catalog.close()
        await service.store.close()


async def _projects_create(args: argparse.Namespace) -> int:
    async def work(service: Service) -> int:
        project, key = await service.catalog.create_project(args.name, service.settings.retention_days)
        out = {"project_id": project.id, "name": project.name, "ingest_token": project.ingest_token, "api_key": key}
        if args.json:
            print(json.dumps(out))
        else:
            print(f"project:      {project.id} ({project.name})\ningest token: {project.ingest_token}\n"
                  f"API key:      {key}   (shown once; stored hashed)")
        return 0
    return await _with_service(args, work)


async def _projects_list(args: argparse.Namespace) -> int:
    async def work(service: Service) -> int:
        projects = await service.catalog.projects()
        if args.json:
            print(json.dumps([{"project_id": p.id, "name": p.name, "ingest_token": p.ingest_token,
                               "retention_days": p.retention_days} for p in projects]))
        else:
            for p in projects:
                print(f"{p.id}\t{p.name}\t{p.ingest_token}")
        return 0
    return await _with_service(args, work)


async def _reindex(args: argparse.Namespace) -> int:
    from replay.catalog.rebuild import rebuild_index

    async def work(service: Service) -> int:
        report = await rebuild_index(service.store, service.catalog)
        print(f"reindexed {report.objects} objects, {report.blocks} blocks, {report.sessions} sessions"
              + (f"; skipped {report.skipped} unreadable objects" if report.skipped else ""))
        return 0
    return await _with_service(args, work)


async def _compact(args: argparse.Namespace) -> int:
    from replay.spool import read_spool_dir

    async def work(service: Service) -> int:
        if args.session and not args.project:
            print("replay compact: --session needs --project", file=sys.stderr)
            return 2
        idle = service.settings.compact_after if args.idle is None else args.idle
        # A session with batches in the spool gets more blocks at the next flush: it waits.
        spooled = {(b.project_id, b.session_id) for b in read_spool_dir(service.settings.spool_dir)}
        report = await service.compactor.run_pass(idle, project_id=args.project, session_id=args.session,
                                                  skip=spooled, limit=1_000_000, sweep_orphans=True)
        for r in report.results:
            if r.outcome == "compacted":
                print(f"compacted {r.project_id}/{r.session_id}: {r.blocks_before} blocks in {r.objects_before} "
                      f"objects, {r.bytes_before} -> {r.bytes_after} bytes, {r.events} events")
            elif r.outcome == "refused":
                print(f"skipped {r.project_id}/{r.session_id}: new blocks arrived meanwhile")
        refused = sum(r.outcome == "refused" for r in report.results)
        print(f"compacted {len(report.compacted)} sessions ({refused} refused, {report.failed} failed); "
              f"deleted {report.deleted} replaced objects and {report.orphans_deleted} orphans")
        return 1 if report.failed else 0
    return await _with_service(args, work)


async def _export(args: argparse.Namespace) -> int:
    from replay.stored_sessions import StoredSessions

    async def work(service: Service) -> int:
        if await service.catalog.project(args.project) is None:
            print(f"replay export: no project {args.project}", file=sys.stderr)
            return 2
        sessions = StoredSessions(service)
        if not await sessions.exists(args.project, args.session):
            print(f"replay export: no session {args.session} in {args.project}", file=sys.stderr)
            return 2
        out = open(args.output, "wb") if args.output and args.output != "-" else sys.stdout.buffer
        with contextlib.ExitStack() as stack:
            if out is not sys.stdout.buffer:
                stack.callback(out.close)
            out.write(b"[")
            first = True
            async for _w, event in sessions.items(args.project, args.session):
                out.write((b"" if first else b",") + event_json(event))
                first = False
            out.write(b"]\n")
        return 0
    return await _with_service(args, work)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="replay", description="Self-hosted session recording and replay.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the receiver, player and API")
    add_arguments(serve)
    serve.set_defaults(run=_serve)

    projects = sub.add_parser("projects", help="manage projects").add_subparsers(dest="action", required=True)
    create = projects.add_parser("create", help="create a project; prints its id, ingest token and API key")
    create.add_argument("name")
    create.add_argument("--json", action="store_true")
    add_arguments(create, STORE_OPTIONS)
    create.set_defaults(run=_projects_create)
    plist = projects.add_parser("list", help="list projects")
    plist.add_argument("--json", action="store_true")
    add_arguments(plist, STORE_OPTIONS)
    plist.set_defaults(run=_projects_list)
    from replay.policy_commands import add_parser as add_policy_parser
    add_policy_parser(projects, add_arguments, STORE_OPTIONS)

    from replay.key_commands import add_parser as add_keys_parser
    add_keys_parser(sub, add_arguments, STORE_OPTIONS)

    reindex = sub.add_parser("reindex", help="rebuild the session index from the blob footers")
    add_arguments(reindex, STORE_OPTIONS)
    reindex.set_defaults(run=_reindex)

    compact = sub.add_parser("compact", help="rewrite idle sessions into one session object each")
    compact.add_argument("--project", help="only this project")
    compact.add_argument("--session", help="only this session (needs --project)")
    compact.add_argument("--idle", type=float, metavar="SECONDS",
                         help="only sessions idle this long (default: --compact-after; 0: every session not in the spool)")
    add_arguments(compact, STORE_OPTIONS | {"compact_after", "compact_grace", "node_id"})
    compact.set_defaults(run=_compact)

    export = sub.add_parser("export", help="write a session's rrweb events as a JSON array")
    export.add_argument("--project", required=True)
    export.add_argument("--session", required=True)
    export.add_argument("-o", "--output", help="file to write (default: stdout)")
    add_arguments(export, STORE_OPTIONS)
    export.set_defaults(run=_export)

    from replay.audit_command import add_parser as add_audit_parser
    add_audit_parser(sub, add_arguments, STORE_OPTIONS)
    return parser


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (Linux, macOS): about half asyncio's CPU per request and thread hop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(getattr(args, "log_format", None) or "text")
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
