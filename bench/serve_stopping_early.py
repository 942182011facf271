#!/usr/bin/env python3
"""`replay serve` whose native ingest stops early and answers 200: ceilings for the ingest ratio.

    python bench/serve_stopping_early.py {respond|accept|records} serve ...

``respond``: the handler reads the body off the wire and answers, nothing decoded (aiohttp, our
middlewares, the response). ``accept``: ``POST /v1/recordings`` runs up to `Service.accept`
(gunzip, JSON parse, token lookup, checks, the decoded upload freed) and stops there: no duplicate
check, masking, packing, spool or flush. ``records``: `Service.accept` makes the spool records
(duplicate check, masking, packing, summaries) and stops before the spool: no log write, fsync or
flush. `ingest_throughput.py --stop-after` runs these, so the
ratio they print is the best any server could reach that does the rest of ingest for free.
"""
import sys

import orjson
from aiohttp import web

import replay.cli
from replay.ingest import native
from replay.ingest.upload import read_upload
from replay.service import Service
from replay.web.keys import SERVICE

step = sys.argv.pop(1)


async def respond(request: web.Request) -> web.Response:
    await read_upload(request, request.app[SERVICE].limits)
    return web.Response(body=orjson.dumps({"status": "ok", "accepted_events": 0}), content_type="application/json")


async def accept(self: Service, project: object, batches: list) -> int:
    return sum(len(b.events) for b in batches)


async def records(self: Service, project: object, batches: list) -> int:
    return sum(r.count for r in await self._records(project, batches))


if step == "respond":
    native.post_recordings = respond
elif step == "accept":
    Service.accept = accept
elif step == "records":
    Service.accept = records
else:
    sys.exit(f"unknown step {step!r}: respond, accept or records")
sys.exit(replay.cli.main(sys.argv[1:]))
