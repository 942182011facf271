"""Service settings: command-line flags over ``REPLAY_*`` environment variables over defaults."""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Option:
    """One setting: its flag, the environment variable behind it, its default and type."""

    name: str
    env: str
    default: object
    kind: type
    help: str


# The single list of settings; flags, env vars, docker-compose.yml and the README all follow it.
OPTIONS: tuple[Option, ...] = (
    Option("data", "REPLAY_DATA", "./replay-data", str, "data directory (file blobs, SQLite catalog, spool)"),
    Option("host", "REPLAY_HOST", "127.0.0.1", str, "address to listen on"),
    Option("port", "REPLAY_PORT", 8080, int, "port to listen on (0 picks a free one)"),
    Option("blob_url", "REPLAY_BLOB_URL", "", str, "blob store: file:///path or s3://bucket/prefix (default: file store in the data dir)"),
    Option("s3_endpoint_url", "REPLAY_S3_ENDPOINT_URL", "", str, "S3 endpoint (MinIO, R2, Ceph...); empty for AWS"),
    Option("s3_region", "REPLAY_S3_REGION", "", str, "S3 region"),
    Option("s3_path_style", "REPLAY_S3_PATH_STYLE", False, bool, "use path-style S3 addressing (MinIO needs it)"),
    Option("catalog_url", "REPLAY_CATALOG_URL", "", str, "catalog: sqlite:///path (default: catalog.sqlite3 in the data dir)"),
    Option("flush_interval", "REPLAY_FLUSH_INTERVAL", 10.0, float, "seconds between spool flushes"),
    Option("flush_bytes", "REPLAY_FLUSH_BYTES", 8 * 1024 * 1024, int, "flush early once this many event bytes have arrived since the last flush"),
    Option("spool_max_bytes", "REPLAY_SPOOL_MAX_BYTES", 1024 * 1024 * 1024, int, "answer 503 once the spool holds this many bytes"),
    Option("retention_days", "REPLAY_RETENTION_DAYS", 30, int, "default retention, the first part of every blob key"),
    Option("node_id", "REPLAY_NODE_ID", "", str, "this receiver's name in blob keys (default: host name)"),
    Option("body_timeout", "REPLAY_BODY_TIMEOUT", 30.0, float, "seconds a client may take to send its body"),
    Option("max_events", "REPLAY_MAX_EVENTS", 20_000, int, "events per batch"),
    Option("rate_limit", "REPLAY_RATE_LIMIT", 1000.0, float, "ingest requests per second per token (0: no limit); every visitor of a site shares its token"),
    Option("rate_burst", "REPLAY_RATE_BURST", 2000, int, "ingest burst per token"),
    Option("compact_after", "REPLAY_COMPACT_AFTER", 1800.0, float, "compact a session idle this many seconds (0: never)"),
    Option("compact_grace", "REPLAY_COMPACT_GRACE", 300.0, float, "seconds compaction keeps replaced objects for playbacks in flight"),
    Option("public_url", "REPLAY_PUBLIC_URL", "", str, "URL browsers use to reach this server (demo page, share links)"),
    Option("log_format", "REPLAY_LOG_FORMAT", "text", str, "text or json"),
    Option("secret", "REPLAY_SECRET", "", str, "key that signs share links and CSRF tokens; the same on every receiver (default: random, kept in <data>/secret.key)"),
)


def _parse_bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    data: Path = Path("./replay-data")
    host: str = "127.0.0.1"
    port: int = 8080
    blob_url: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = ""
    s3_path_style: bool = False
    catalog_url: str = ""
    flush_interval: float = 10.0
    flush_bytes: int = 8 * 1024 * 1024
    spool_max_bytes: int = 1024 * 1024 * 1024
    retention_days: int = 30
    node_id: str = ""
    body_timeout: float = 30.0
    max_events: int = 20_000
    rate_limit: float = 1000.0
    rate_burst: int = 2000
    compact_after: float = 1800.0
    compact_grace: float = 300.0
    public_url: str = ""
    log_format: str = "text"
    secret: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def blob(self) -> str:
        return self.blob_url or (self.data.resolve() / "blobs").as_uri()

    @property
    def catalog(self) -> str:
        return self.catalog_url or f"sqlite:///{(self.data.resolve() / 'catalog.sqlite3')}"

    @property
    def spool_dir(self) -> Path:
        return self.data / "spool"

    @property
    def node(self) -> str:
        raw = self.node_id or socket.gethostname() or "node"
        return "".join(c if c.isalnum() else "-" for c in raw)[:40]


def add_arguments(parser: argparse.ArgumentParser, names: set[str] | None = None) -> None:
    """Add a flag for each option (or those in ``names``), defaulting to its environment variable."""
    for opt in OPTIONS:
        if names is not None and opt.name not in names:
            continue
        flag = "--" + opt.name.replace("_", "-")
        if opt.kind is bool:
            parser.add_argument(flag, dest=opt.name, action=argparse.BooleanOptionalAction, default=None, help=f"{opt.help} [{opt.env}]")
        else:
            parser.add_argument(flag, dest=opt.name, type=opt.kind, default=None, help=f"{opt.help} [{opt.env}]")


def settings_from(args: argparse.Namespace | None = None, environ: dict[str, str] | None = None, **overrides) -> Settings:
    """Build Settings: explicit overrides, then flags, then environment, then defaults."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for opt in OPTIONS:
        value = overrides.get(opt.name)
        if value is None and args is not None:
            value = getattr(args, opt.name, None)
        if value is None and opt.env in environ and environ[opt.env] != "":
            raw = environ[opt.env]
            value = _parse_bool(raw) if opt.kind is bool else opt.kind(raw)
        if value is None:
            value = opt.default
        values[opt.name] = value
    values["data"] = Path(str(values["data"]))
    return Settings(**values)  # type: ignore[arg-type]
