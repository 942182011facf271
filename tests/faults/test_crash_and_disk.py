"""SIGKILL under load, a store that dies between put and catalogue, a full spool disk, slow clients."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import uuid

import boto3
import pytest
import requests

from harness import IN_CI, ReplayProcess, post_batch
from load import LoadGenerator, batch_events, key
from tcp_proxy import TcpProxy


def read_events(url, project_id, api_key, sid):
    r = requests.get(f"{url}/api/projects/{project_id}/sessions/{sid}/events",
                     headers={"Authorization": f"Bearer {api_key}"}, timeout=60)
    return r.json() if r.status_code == 200 else []


def test_sigkill_under_load_then_restart_recovers_every_acknowledged_event(tmp_path):
    data = tmp_path / "data"
    proc = ReplayProcess(data, "--flush-interval", "0.5", "--rate-limit", "0").start()
    token, project_id = proc.printed(r"ingest token: (\S+)"), proc.printed(r"project (\S+) ")
    api_key = proc.printed(r"API key \(shown once, keep it\): (\S+)")
    loads = [LoadGenerator(proc.url, token, sessions=4, rate=40.0, first_seq=i * 100_000, pad=100).start()
             for i in range(3)]
    time.sleep(3)  # flushes happen meanwhile: the kill can land anywhere in one
    proc.kill()
    for load in loads:
        load.stop()
    acked = {}
    for load in loads:
        for sid, events in load.acked.items():
            acked.setdefault(sid, []).extend(events)
    assert sum(len(v) for v in acked.values()) > 1000
    proc = ReplayProcess(data, "--flush-interval", "3600").start()
    try:
        for sid, events in acked.items():
            got = [key(e) for e in read_events(proc.url, project_id, api_key, sid)]
            assert len(got) == len(set(got)), "an event played twice"
            assert set(map(key, events)) <= set(got), f"{sid}: acknowledged events lost"
    finally:
        assert proc.terminate() == 0


def test_store_dying_between_put_and_catalogue_recovers_once(tmp_path, s3_endpoint):
    """The PUT reaches the store but its answer never comes back; the process is killed there."""
    host, port = s3_endpoint.removeprefix("http://").split(":")
    proxy = TcpProxy(host, int(port)).start()
    bucket = f"putkill-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    args = ("--blob-url", f"s3://{bucket}/r", "--s3-endpoint-url", proxy.url, "--s3-region", "us-east-1",
            "--s3-path-style", "--rate-limit", "0")
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    try:
        proc = ReplayProcess(tmp_path / "d", *args, "--flush-interval", "3600", env=env).start()
        token, project_id = proc.printed(r"ingest token: (\S+)"), proc.printed(r"project (\S+) ")
        api_key = proc.printed(r"API key \(shown once, keep it\): (\S+)")
        events = {f"s{i}": batch_events(i, i, 50) for i in range(3)}
        for sid, evs in events.items():
            assert post_batch(proc.url, token, sid, evs, batch_id="b").status_code == 200
        proxy.set_mode("hold_responses")
        proc.proc.send_signal(15)  # SIGTERM flushes: its PUT lands in the store, the answer is held back
        deadline = time.monotonic() + 20
        while not s3.list_objects_v2(Bucket=bucket).get("KeyCount") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 1
        proc.kill()  # dead after the put, before the catalogue commit
        proxy.set_mode("pass")
        proc = ReplayProcess(tmp_path / "d", *args, "--flush-interval", "3600", env=env).start()
        assert proc.terminate() == 0  # recovery re-flushes the same segment under the same key
        assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 1
        proc = ReplayProcess(tmp_path / "d", *args, "--flush-interval", "3600", env=env).start()
        try:
            for sid, evs in events.items():
                got = read_events(proc.url, project_id, api_key, sid)
                assert sorted(map(key, got)) == sorted(map(key, evs)), sid  # all of it, once
        finally:
            proc.terminate()
    finally:
        proxy.stop()


@pytest.fixture
def tiny_spool_disk(tmp_path):
    """A real 2 MiB filesystem (tmpfs) as the spool directory."""
    spool = tmp_path / "d" / "spool"
    spool.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(spool)], capture_output=True, text=True)
    if r.returncode != 0:
        if IN_CI:
            pytest.fail(f"cannot mount a tmpfs for the full-disk test: {r.stderr}")
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr}")
    yield tmp_path / "d"
    subprocess.run(["umount", "-l", str(spool)], check=False)


def test_full_spool_disk_answers_503_never_200_and_recovers(make_server, tiny_spool_disk):
    server = make_server(data=tiny_spool_disk, rate_limit=0.0)
    p = server.create_project()
    acked, refused = [], []
    for seq in range(200):
        events = batch_events(0, seq, 40, pad=400)  # ~20 KB a batch, incompressible
        r = post_batch(server.url, p.token, "full", events, batch_id=f"b{seq}", encoding=None)
        assert r.status_code in (200, 503), r.text
        if r.status_code == 503:
            assert r.json()["error"] == "spool_full" and int(r.headers["Retry-After"]) >= 1
            refused.append(events)
        else:
            acked.append(events)
        if len(refused) >= 5:
            break
    assert acked and len(refused) >= 5  # the disk filled up
    server.flush()  # to the blob store (not on the tmpfs): the spool's segments are released
    r = post_batch(server.url, p.token, "full", batch_events(0, 10_000, 40, pad=400), batch_id="after", encoding=None)
    assert r.status_code == 200
    acked.append(batch_events(0, 10_000, 40, pad=400))
    got = set(map(key, requests.get(f"{server.url}/api/projects/{p.id}/sessions/full/events",
                                    headers={"Authorization": f"Bearer {p.api_key}"}).json()))
    assert {key(e) for b in acked for e in b} == got  # every acknowledged event, and none refused
    assert not got & {key(e) for b in refused for e in b}


def test_spool_max_bytes_answers_503_then_200_once_flushed(make_server):
    server = make_server(spool_max_bytes=200_000, rate_limit=0.0)
    p = server.create_project()
    codes = [post_batch(server.url, p.token, "cap", batch_events(0, i, 40, pad=200), batch_id=f"b{i}",
                        encoding=None).status_code for i in range(40)]
    assert 200 in codes and 503 in codes and codes.index(503) > 0
    assert all(c == 503 for c in codes[codes.index(503):])
    server.flush()
    assert post_batch(server.url, p.token, "cap", batch_events(0, 99, 40, pad=200), batch_id="again",
                      encoding=None).status_code == 200
    got = requests.get(f"{server.url}/api/projects/{p.id}/sessions/cap/events",
                       headers={"Authorization": f"Bearer {p.api_key}"}).json()
    assert len(got) == 40 * (codes.count(200) + 1)


def test_clients_trickling_their_body_do_not_delay_others(make_server):
    server = make_server(body_timeout=30.0, rate_limit=0.0)
    p = server.create_project()
    host, port = server.url.removeprefix("http://").split(":")
    stop = threading.Event()

    def trickle():
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"POST /v1/recordings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100000\r\n\r\n")
            while not stop.wait(1.0):
                sock.sendall(b" ")  # one byte a second

    slow = [threading.Thread(target=trickle, daemon=True) for _ in range(20)]
    for t in slow:
        t.start()
    time.sleep(1)
    load = LoadGenerator(server.url, p.token, sessions=4, rate=20.0, max_batches=100).start()
    load._thread.join(60)
    stop.set()
    assert load.statuses == {200: 100}
    lat = sorted(load.latencies)
    assert lat[len(lat) // 2] < 0.1 and lat[int(len(lat) * 0.95)] < 0.3 and lat[-1] < 1.0, lat[-5:]
