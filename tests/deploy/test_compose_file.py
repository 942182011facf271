"""docker-compose.yml cannot run here (no Docker engine); check it parses and speaks our config."""

from __future__ import annotations

import yaml

from harness import ROOT
from replay.config import OPTIONS, settings_from

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
BOTO_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"}


def test_compose_runs_minio_its_bucket_and_replay():
    services = COMPOSE["services"]
    assert {"minio", "create-bucket", "replay"} <= set(services)
    assert "mc mb" in services["create-bucket"]["entrypoint"]


def test_every_replay_setting_in_compose_is_one_the_app_reads():
    env = COMPOSE["services"]["replay"]["environment"]
    known = {o.env for o in OPTIONS} | BOTO_ENV
    assert set(env) <= known, set(env) - known
    settings = settings_from(environ={k: str(v) for k, v in env.items()})
    bucket_cmd = COMPOSE["services"]["create-bucket"]["entrypoint"]
    bucket = settings.blob.removeprefix("s3://").split("/")[0]
    assert f"local/{bucket}" in bucket_cmd
    assert settings.s3_path_style is True and settings.s3_endpoint_url == "http://minio:9000"
    assert settings.host == "0.0.0.0" and settings.port == 8080


def test_compose_credentials_match_minio():
    minio = COMPOSE["services"]["minio"]["environment"]
    env = COMPOSE["services"]["replay"]["environment"]
    assert env["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
