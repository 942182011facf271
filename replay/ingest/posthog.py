"""The posthog-js receiver: everything an unmodified posthog-js asks of its ``api_host``.

A site changes only ``api_host`` to Replay's URL; posthog-js then calls (docs/posthog-wire.md):

* ``GET /array/{token}/config.js`` and ``/array/{token}/config`` (remote config, >= 1.350),
  ``POST /flags/`` (flags; with ``config=true`` also the config, ~1.252 - 1.349) and
  ``POST /decide/`` (config and flags, <= ~1.251) — see ``posthog_config``;
* ``GET /static/[{version}/]lazy-recorder.js`` (and the other bundle names) — served from the
  pinned posthog-js build vendored under player_assets/vendor;
* ``POST /s/`` — the recordings, decoded by ``posthog_wire`` and kept like any other batch;
* ``POST /e/``, ``/i/v0/e/``, ``/batch/``, ``/engage/``, ``/capture/``, ``/track/`` — analytics events.
  Replay is a recording backend: they are acknowledged (so the SDK does not retry them) and
  dropped, and counted in ``replay_analytics_events_dropped_total``.

posthog-js drops a batch on any 4xx (429 included) and retries everything else, so every
"try again later" on ``/s/`` is a 503 — a full spool and the per-token rate limit alike.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from replay.catalog.records import Project
from replay.errors import BadRequest, NotFound, ReplayError, Unauthorized, Unavailable
from replay.ingest.batch import Batch
from replay.ingest.posthog_config import config_script, decide_response, flags_response, remote_config
from replay.ingest.posthog_wire import SnapshotUpload, decode_snapshot_body, parse_snapshot_request
from replay.ingest.upload import read_upload
from replay.ingest.validate import check_batch_id, check_events, check_id
from replay.privacy.policy import MaskingPolicy
from replay.web.cors import CORS_ROUTES, CorsMode, allow_cors
from replay.web.keys import SERVICE

ROOT = Path(__file__).resolve().parents[2]
VENDOR_VERSIONS = ROOT / "player_assets" / "vendor" / "VERSIONS.json"

# Requested bundle name -> file in the vendored dist. recorder-v2.js is what posthog-js <= ~1.11x
# asks for when told recorderVersion "v2"; today's recorder.js still sets the window.rrweb it expects.
BUNDLES: dict[str, str] = {
    "lazy-recorder.js": "lazy-recorder.js",
    "posthog-recorder.js": "posthog-recorder.js",
    "recorder.js": "recorder.js",
    "recorder-v2.js": "recorder.js",
    "array.js": "array.js",
    "array.full.js": "array.full.js",
}
SCRIPT_TYPE = "application/javascript; charset=utf-8"
# A versioned URL names one build for good; the plain one moves when the pin does.
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=300"
VERSION_PATTERN = r"\d+\.\d+\.\d+[A-Za-z0-9.+-]*"

ANALYTICS_PATHS = ("/e/", "/i/v0/e/", "/batch/", "/engage/", "/capture/", "/track/")
FLAGS_BODY_MAX = 1024 * 1024  # an identity object and a few properties; nothing near this in practice
MAX_TOKEN_LENGTH = 200
MAX_USER_AGENT = 512
OK_RECORDINGS = {"status": "Ok"}
OK_ANALYTICS = {"status": 1}


# -- vendored bundles ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PosthogBuild:
    version: str
    dist: Path


def served_builds(versions_file: Path = VENDOR_VERSIONS, root: Path = ROOT) -> list[PosthogBuild]:
    """The posthog-js builds VERSIONS.json marks as served, newest pin first (the first is the default)."""
    packages = json.loads(versions_file.read_text())["packages"]
    builds = [PosthogBuild(p["version"], (root / p["dir"] / "dist").resolve())
              for p in packages if p.get("name") == "posthog-js" and p.get("use") == "served"]

    def key(build: PosthogBuild) -> tuple[int, ...]:
        return tuple(int(part) for part in build.version.split("-")[0].split(".")[:3])

    return sorted(builds, key=key, reverse=True)


def _bundle_response(build: PosthogBuild, name: str, cache: str) -> web.FileResponse:
    path = build.dist / BUNDLES[name]
    if not path.is_file():
        raise NotFound(f"posthog-js {build.version} has no {name}", code="no_such_asset")
    return web.FileResponse(path, headers={"Content-Type": SCRIPT_TYPE, "Cache-Control": cache})


def _bundle_handlers(builds: list[PosthogBuild]):
    if not builds:
        raise RuntimeError(f"no served posthog-js build in {VENDOR_VERSIONS}")
    pinned = builds[0]
    by_version = {b.version: b for b in builds}

    async def plain(request: web.Request) -> web.StreamResponse:
        # ?v=<client version> is ignored: this server serves the one pinned build to every client.
        return _bundle_response(pinned, request.path.rsplit("/", 1)[-1], SHORT)

    async def versioned(request: web.Request) -> web.StreamResponse:
        # posthog-js >= 1.417 asks for /static/<its version>/lazy-recorder.js first and falls back
        # to the plain URL on an error: a 404 for a version we do not vendor is that fallback.
        build = by_version.get(request.match_info["version"])
        if build is None:
            raise NotFound(f"posthog-js {request.match_info['version']} is not served here; "
                           f"the unversioned URL serves {pinned.version}", code="no_such_asset")
        return _bundle_response(build, request.match_info["name"], IMMUTABLE)

    return plain, versioned


# -- helpers -------------------------------------------------------------------------------------


async def _project(request: web.Request, token: Any) -> Project:
    if not isinstance(token, str) or not token:
        raise Unauthorized("a project token is required", code="missing_token")
    project = None
    if len(token) <= MAX_TOKEN_LENGTH:
        project = await request.app[SERVICE].catalog.project_by_token(token)
    if project is None:
        # posthog-js reads a failed config as "no config": recording stays off for this token.
        raise Unauthorized("unknown project token", code="invalid_token")
    return project


def masking_settings(project: Project) -> dict[str, Any]:
    """The project's masking policy as posthog's ``sessionRecording.masking``."""
    return MaskingPolicy.from_dict(project.policy or {}).client_settings()


def _config_for(project: Project) -> dict[str, Any]:
    return remote_config(project.ingest_token, masking_settings(project))


def _no_store(response: web.StreamResponse) -> web.StreamResponse:
    # Per-project answers that follow the policy: a changed policy must reach the next page view.
    response.headers["Cache-Control"] = "no-cache"
    return response


async def _identity_body(request: web.Request) -> dict[str, Any]:
    """The body of /flags/ and /decide/: ``{token, distinct_id, ...}`` as JSON, base64 form or gzip.

    posthog-js encodes every request body the same way, so the /s/ body decoder reads these too.
    """
    limits = request.app[SERVICE].limits
    raw = await read_upload(request, limits)
    payload = decode_snapshot_body(raw, max_bytes=FLAGS_BODY_MAX, query=request.query,
                                   content_type=request.headers.get("Content-Type"),
                                   content_encoding=request.headers.get("Content-Encoding"))
    if not isinstance(payload, dict):
        raise BadRequest("the body must be an object with the project token", code="invalid_body")
    return payload


def _body_token(payload: dict[str, Any], request: web.Request) -> Any:
    return payload.get("token") or payload.get("api_key") or request.query.get("token")


# -- remote config, flags, decide ----------------------------------------------------------------


async def get_config(request: web.Request) -> web.Response:
    project = await _project(request, request.match_info["token"])
    return _no_store(web.json_response(_config_for(project)))


async def get_config_js(request: web.Request) -> web.Response:
    project = await _project(request, request.match_info["token"])
    script = config_script(project.ingest_token, _config_for(project))
    return _no_store(web.Response(text=script, headers={"Content-Type": SCRIPT_TYPE}))


async def post_flags(request: web.Request) -> web.Response:
    payload = await _identity_body(request)
    project = await _project(request, _body_token(payload, request))
    with_config = request.query.get("config", "").lower() in ("true", "1")
    return web.json_response(flags_response(_config_for(project), with_config=with_config,
                                            request_id=secrets.token_hex(8)))


async def post_decide(request: web.Request) -> web.Response:
    payload = await _identity_body(request)
    project = await _project(request, _body_token(payload, request))
    return web.json_response(decide_response(_config_for(project)))


# -- recordings ----------------------------------------------------------------------------------


def _checked(upload: SnapshotUpload, project: Project, request: web.Request) -> Batch:
    """The upload's batch for ``project``, with the checks the native API applies, and the browser's user agent."""
    limits = request.app[SERVICE].limits
    batch = upload.batch_for(project.id)
    batch.session_id = check_id(batch.session_id, "session_id", limits)
    batch.window_id = check_id(batch.window_id, "window_id", limits)
    batch.batch_id = check_batch_id(batch.batch_id)
    batch.events = check_events(batch.events, limits)
    if batch.distinct_id is not None and len(batch.distinct_id) > limits.max_distinct_id_length:
        # A long distinct id is no reason to lose the recording (posthog-js would drop it on a 400);
        # a cut-off one would match the wrong person in a search, so there is none.
        batch.distinct_id = None
    # $snapshot events carry no browser properties by design; the request's header says it.
    user_agent = request.headers.get("User-Agent")
    if user_agent:
        batch.meta["user_agent"] = user_agent[:MAX_USER_AGENT]
    return batch


def _by_token(uploads: Iterable[SnapshotUpload]) -> dict[str, list[SnapshotUpload]]:
    grouped: dict[str, list[SnapshotUpload]] = {}
    for upload in uploads:
        grouped.setdefault(upload.token, []).append(upload)
    return grouped


async def post_snapshots(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    limits = service.limits
    raw = await read_upload(request, limits)
    uploads = parse_snapshot_request(raw, max_bytes=limits.max_decoded_bytes, query=request.query,
                                     content_type=request.headers.get("Content-Type"),
                                     content_encoding=request.headers.get("Content-Encoding"))
    accepted: list[tuple[Project, list[Batch]]] = []
    for token, group in _by_token(uploads).items():
        project = await _project(request, token)
        accepted.append((project, [_checked(u, project, request) for u in group]))
    for project, _ in accepted:
        wait = service.rate_limiter.retry_after(project.ingest_token)
        if wait > 0:
            # Not 429: posthog-js drops a batch on any 4xx and retries a 503 with backoff.
            raise Unavailable(f"this project token sends more than {service.rate_limiter.rate:g} requests "
                              f"per second; retry in {wait:.1f} s", code="rate_limited")
    for project, batches in accepted:
        # A retry after a partial failure re-sends every batch; the ones kept already play once.
        await service.accept(project, batches)
    return web.json_response(OK_RECORDINGS)


# -- analytics -----------------------------------------------------------------------------------


def _event_count(payload: Any) -> int:
    if isinstance(payload, list):
        return len(payload)
    if isinstance(payload, dict):
        batch = payload.get("batch")
        return len(batch) if isinstance(batch, list) else 1
    return 0


async def post_analytics(request: web.Request) -> web.Response:
    """Acknowledge and drop: Replay keeps recordings, not analytics. The body is read (bounded) to count it."""
    service = request.app[SERVICE]
    dropped = 0
    if request.method == "POST" and request.body_exists:
        try:
            raw = await read_upload(request, service.limits)
            dropped = _event_count(decode_snapshot_body(
                raw, max_bytes=service.limits.max_decoded_bytes, query=request.query,
                content_type=request.headers.get("Content-Type"),
                content_encoding=request.headers.get("Content-Encoding")))
        except ReplayError:
            # Nothing is kept either way; an error would only make the SDK log and give up on it.
            service.metrics.inc("replay_analytics_undecodable_total")
    service.metrics.inc("replay_analytics_events_dropped_total", dropped)
    return web.json_response(OK_ANALYTICS)


# -- routes --------------------------------------------------------------------------------------


def add_routes(app: web.Application, builds: list[PosthogBuild] | None = None) -> None:
    """Register before any catch-all ``/static/{path}`` route, so these bundle URLs win."""
    router = app.router
    router.add_get("/array/{token}/config", get_config)
    allow_cors(app, "/array/{token}/config", CorsMode.ANY_ORIGIN)
    router.add_get("/array/{token}/config.js", get_config_js)
    allow_cors(app, "/array/{token}/config.js", CorsMode.ANY_ORIGIN)
    for path, handler in (("/flags/", post_flags), ("/decide/", post_decide), ("/s/", post_snapshots)):
        router.add_post(path, handler)
        allow_cors(app, path, CorsMode.MIRROR_WITH_CREDENTIALS)
    for path in ANALYTICS_PATHS:
        router.add_post(path, post_analytics)
        router.add_get(path, post_analytics)
        allow_cors(app, path, CorsMode.MIRROR_WITH_CREDENTIALS)

    # Scripts load with crossorigin="anonymous": without Access-Control-Allow-Origin they do not run.
    plain, versioned = _bundle_handlers(builds if builds is not None else served_builds())
    for name in BUNDLES:
        router.add_get(f"/static/{name}", plain)
        allow_cors(app, f"/static/{name}", CorsMode.ANY_ORIGIN)
    names = "|".join(n.replace(".", r"\.") for n in BUNDLES)
    versioned_path = f"/static/{{version:{VERSION_PATTERN}}}/{{name:(?:{names})}}"
    resource = router.add_resource(versioned_path)
    resource.add_route("GET", versioned)
    allow_cors(app, versioned_path, CorsMode.ANY_ORIGIN)
    # The CORS middleware looks routes up by their canonical form, which drops the regexes.
    app[CORS_ROUTES][resource.canonical] = CorsMode.ANY_ORIGIN
