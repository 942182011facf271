"""The wheel the Dockerfile installs: built the way its build stage builds it, it carries the C parts."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile

from harness import ROOT

NATIVE = ("replay/privacy/_native_walk", "replay/ingest/_decoded_tree")


def test_the_docker_build_stage_copies_what_the_c_parts_are_built_from():
    dockerfile = (ROOT / "Dockerfile").read_text()
    build = dockerfile.split("FROM ")[1]  # the first stage
    assert "gcc" in build
    copied = {word for line in build.splitlines() if line.startswith("COPY ") for word in line.split()[1:-1]}
    assert {"setup.py", "pyproject.toml", "replay"} <= copied
    assert re.search(r"pip wheel .* \.$", build, re.M)


def test_the_wheel_carries_the_compiled_parts(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, timeout=600, capture_output=True)
    wheel = next(tmp_path.glob("replay-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for module in NATIVE:
        assert any(n.startswith(module) and n.endswith(".so") for n in names), (module, names)
