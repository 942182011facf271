"""The server's signing secret (share links, CSRF tokens): REPLAY_SECRET, or a random one kept in the data dir.

Several receivers behind one load balancer must share it: set REPLAY_SECRET on all of them (or
give them the same file). The file is created 0600 on first start and never rewritten.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_FILE = "secret.key"


def load_or_create_secret(data_dir: Path, configured: str = "") -> bytes:
    """The configured secret if any, else the data dir's ``secret.key`` (created 0600 when missing)."""
    if configured:
        return configured.encode()
    path = Path(data_dir) / SECRET_FILE
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32).encode()
    tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, value)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # link, not rename: if another process created the file meanwhile, its secret wins for both.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> bytes:
    value = path.read_bytes().strip()
    if len(value) < 32:
        raise ValueError(f"{path} holds a secret shorter than 32 bytes; delete it to make a new one")
    return value
