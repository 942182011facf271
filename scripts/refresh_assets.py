#!/usr/bin/env python3
"""Vendored front-end assets: fetch pinned npm releases, or verify what is vendored.

Usage (from anywhere; paths are relative to the repo root):

    python scripts/refresh_assets.py          # npm pack each pin, verify, rewrite files
    python scripts/refresh_assets.py --check  # offline: compare files with SHA256SUMS

Refreshing needs `npm` on PATH and the npm registry. Each tarball's sha512 must
equal both the integrity pinned below and `npm view NAME@VERSION dist.integrity`;
only then are the listed files copied out. It writes, per destination root, a
`SHA256SUMS` (`sha256sum -c` format, paths relative to that root), and
`player_assets/vendor/VERSIONS.json` naming every package, version, integrity,
licence and file. It also regenerates tests/fixtures/rrweb-player-events.json,
the demo recording rrweb-player ships as `dist/events.js`.

`--check` needs no network: it exits 1 if a listed file is missing or differs,
or if a vendored package folder holds a file nobody vetted.

To bump a version: edit PINS (set integrity to the value the mismatch error
prints after checking it with `npm view`), run without --check, commit all.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVED = "player_assets/vendor"
TESTS = "tests/fixtures"
EVENTS_FIXTURE = "rrweb-player-events.json"


# rrweb's npm tarballs carry no LICENSE file; this is the repository's LICENSE.
RRWEB_LICENSE = """\
MIT License

Copyright (c) 2018 Contributors (https://github.com/rrweb-io/rrweb/graphs/contributors)

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    integrity: str
    root: str  # SERVED or TESTS
    files: tuple[str, ...]  # paths inside the tarball's package/ folder
    license_text: str = ""  # written as LICENSE when the tarball has none

    @property
    def folder(self) -> str:
        return f"vendor/{self.name}-{self.version}" if self.root == TESTS else f"{self.name}-{self.version}"


PINS = (
    Pin("rrweb", "2.2.2",
        "sha512-LUvR1mbcTTaNkn5OiR0r2neuH86quaQsmucT07N4Yd7YFdxPtr9qMQ2e//1FkbWKa1L3JGmPIQtgv83VPJe3mQ==",
        SERVED, ("dist/rrweb.umd.min.cjs",), RRWEB_LICENSE),
    Pin("rrweb-player", "2.1.7",
        "sha512-jY6ovTq+Ll9nh8s0WEUl9abNKY9UQO524lFShaoSakQsGooYUGvzxg0xFWEQn7qY4rP5Q5BSRV0vbtRW35+o6A==",
        SERVED, ("dist/rrweb-player.umd.min.cjs", "dist/style.css"), RRWEB_LICENSE),
    Pin("posthog-js", "1.449.2",
        "sha512-vji+h92IHaLlFSEnRH1hwe8uLWGOdDUImmPXexj/+V7Xm7HTxIQisYE/Kom7Aaw4DRpzfdhQxiyAN1YVYR4G8Q==",
        SERVED, ("dist/array.js", "dist/array.full.js", "dist/lazy-recorder.js",
                 "dist/recorder.js", "dist/posthog-recorder.js", "LICENSE")),
    # Test-only: the newest release whose default flags call is /decide/?v=4
    # (1.252.0 moved to /flags/), to prove older embedded clients still work.
    Pin("posthog-js", "1.251.0",
        "sha512-lm0dahEnoL15LA9uz2TkQMUINnu3tWJ4cDrgZmgX49ySdRWtqe3e24JnmrKejDeUXeLFUuS2O+K1Y1xvI8hX9Q==",
        TESTS, ("dist/array.js", "dist/array.full.js", "dist/recorder.js",
                "dist/posthog-recorder.js", "LICENSE")),
)

def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def npm(*args: str, cwd: Path) -> str:
    return subprocess.run(["npm", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def fetch(pin: Pin, tmp: Path) -> Path:
    spec = f"{pin.name}@{pin.version}"
    tarball = tmp / npm("pack", spec, cwd=tmp).strip().splitlines()[-1]
    actual = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    registry = npm("view", spec, "dist.integrity", cwd=tmp).strip()
    if not actual == registry == pin.integrity:
        sys.exit(f"{spec}: integrity mismatch\n  tarball  {actual}\n  registry {registry}\n  pinned   {pin.integrity}")
    out = tmp / f"{pin.name}-{pin.version}"
    with tarfile.open(tarball) as tar:
        tar.extractall(out, filter="data")
    return out / "package"


def events_json(events_js: str) -> str:
    """dist/events.js is `const events = [...]`; the literal is already JSON."""
    start = events_js.index("[")
    events, end = json.JSONDecoder().raw_decode(events_js, start)
    if not isinstance(events, list) or events_js[end:].strip() not in ("", ";"):
        sys.exit("rrweb-player dist/events.js no longer looks like `const events = [...]`")
    return events_js[start:end] + "\n"  # keep the original bytes of the literal


def refresh() -> None:
    written: dict[str, list[str]] = {SERVED: [], TESTS: []}
    manifest = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for pin in PINS:
            pkg = fetch(pin, tmp)
            dest = ROOT / pin.root / pin.folder
            shutil.rmtree(dest, ignore_errors=True)
            files = list(pin.files)
            for rel in files:
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(pkg / rel, dest / rel)
            if pin.license_text:
                (dest / "LICENSE").write_text(pin.license_text)
                files.append("LICENSE")
            written[pin.root] += [f"{pin.folder}/{rel}" for rel in files]
            license = json.loads((pkg / "package.json").read_bytes())["license"]
            manifest.append({"name": pin.name, "version": pin.version, "integrity": pin.integrity,
                             "license": license, "dir": f"{pin.root}/{pin.folder}",
                             "use": "served" if pin.root == SERVED else "tests only",
                             "files": sorted(files)})
            if pin.name == "rrweb-player":
                fixture = ROOT / TESTS / EVENTS_FIXTURE
                fixture.write_text(events_json((pkg / "dist/events.js").read_text("utf-8")), "utf-8")
                written[TESTS].append(EVENTS_FIXTURE)
    (ROOT / SERVED / "VERSIONS.json").write_text(json.dumps({"packages": manifest}, indent=2) + "\n")
    written[SERVED].append("VERSIONS.json")
    for root, names in written.items():
        lines = [f"{sha256(ROOT / root / n)}  {n}\n" for n in sorted(names)]
        (ROOT / root / "SHA256SUMS").write_text("".join(lines))
        print(f"{root}: {len(names)} files")


def check() -> list[str]:
    problems = []
    for root in (SERVED, TESTS):
        sums = ROOT / root / "SHA256SUMS"
        if not sums.exists():
            problems.append(f"{root}/SHA256SUMS is missing")
            continue
        listed = set()
        for line in sums.read_text().splitlines():
            digest, name = line.split("  ", 1)
            listed.add(name)
            path = ROOT / root / name
            if not path.is_file():
                problems.append(f"missing: {root}/{name}")
            elif sha256(path) != digest:
                problems.append(f"changed: {root}/{name}")
        for pin in PINS:
            folder = ROOT / pin.root / pin.folder
            if pin.root == root and folder.is_dir():
                for path in folder.rglob("*"):
                    name = path.relative_to(ROOT / root).as_posix()
                    if path.is_file() and name not in listed:
                        problems.append(f"not in SHA256SUMS: {root}/{name}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify vendored files offline")
    args = parser.parse_args()
    if not args.check:
        refresh()
    problems = check()
    for problem in problems:
        print(problem, file=sys.stderr)
    print("vendored assets OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
