"""Vendored assets match their SHA256SUMS, and the offline check notices when not."""
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "refresh_assets.py"


def load_script():
    spec = importlib.util.spec_from_file_location("refresh_assets", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_vendored_assets_match_their_checksums():
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_check_reports_changed_missing_and_unlisted_files(tmp_path):
    refresh = load_script()
    for root in (refresh.SERVED, refresh.TESTS):
        shutil.copytree(REPO / root, tmp_path / root)
    refresh.ROOT = tmp_path
    assert refresh.check() == []

    player = tmp_path / refresh.SERVED / "rrweb-player-2.1.7"
    (player / "dist" / "style.css").write_text("/* tampered */")
    (player / "dist" / "extra.js").write_text("")
    (tmp_path / refresh.TESTS / refresh.EVENTS_FIXTURE).unlink()

    assert sorted(refresh.check()) == [
        f"changed: {refresh.SERVED}/rrweb-player-2.1.7/dist/style.css",
        f"missing: {refresh.TESTS}/{refresh.EVENTS_FIXTURE}",
        f"not in SHA256SUMS: {refresh.SERVED}/rrweb-player-2.1.7/dist/extra.js",
    ]
