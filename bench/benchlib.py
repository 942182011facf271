"""Shared pieces of the benchmarks: real recordings, batch cutting, a `replay serve` child process.

Every benchmark reports ratios against a baseline measured in the same run, because the machine
is shared (2 cores, other people's test runs): absolute figures move, ratios much less. CPU time is
read from /proc, so a figure "per server CPU second" does not depend on how busy the machine is.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]


def put_tree_first() -> str:
    """Put the checkout named by ``--tree DIR`` (else this one) first on sys.path; call before importing replay.

    How ``stage_cost.py`` and ``masking_walk.py`` measure the code before a change and after it, one
    process each, back to back (``git worktree add DIR <commit>``).
    """
    tree = sys.argv[sys.argv.index("--tree") + 1] if "--tree" in sys.argv else str(REPO)
    sys.path.insert(0, tree)
    return tree


FIXTURE = REPO / "tests" / "fixtures" / "rrweb-player-events.json"
# Another engineer's bench/make_corpus.py may be rewriting bench/corpus/ while we run: point
# REPLAY_BENCH_CORPUS at a copy of it to compare runs on the same recordings.
CORPUS = Path(os.environ.get("REPLAY_BENCH_CORPUS") or REPO / "bench" / "corpus")
CLK_TCK = os.sysconf("SC_CLK_TCK")
FULL_SNAPSHOT, META = 2, 4


@dataclass
class Recording:
    """One real session: its events in emit order and the tab (window id) of each event."""

    name: str
    events: list[dict[str, Any]]
    windows: list[str]

    @property
    def duration_ms(self) -> int:
        return self.events[-1]["timestamp"] - self.events[0]["timestamp"]

    @property
    def raw_bytes(self) -> int:
        return len(orjson.dumps(self.events))


def _expand_windows(runs: list[list[Any]], n: int, default: str) -> list[str]:
    out: list[str] = []
    for window_id, count in runs:
        out += [window_id] * count
    return out if len(out) == n else [default] * n


def load_recordings() -> list[Recording]:
    """The corpus in bench/corpus/ (bench/make_corpus.py) plus the test fixture if the corpus lacks it.

    The corpus may be regenerated while we run; a file caught half-written is skipped.
    """
    recs: list[Recording] = []
    for path in sorted(CORPUS.glob("*.json")):
        if path.name == "MANIFEST.json" or path.name.endswith(".windows.json"):
            continue
        try:
            events = orjson.loads(path.read_bytes())
            wpath = path.with_name(path.stem + ".windows.json")
            runs = orjson.loads(wpath.read_bytes()) if wpath.exists() else []
        except (OSError, orjson.JSONDecodeError):
            continue
        if isinstance(events, list) and len(events) > 2:
            events.sort(key=lambda e: e["timestamp"])  # stable: emit order within a millisecond
            recs.append(Recording(path.stem, events, _expand_windows(runs, len(events), f"w-{path.stem}")))
    if not any(r.name == "rrweb-player-demo" for r in recs):  # the corpus copies the fixture under this name
        events = orjson.loads(FIXTURE.read_bytes())
        recs.append(Recording("rrweb-player-demo", events, ["w-player-demo"] * len(events)))
    return recs


def cut_batches(rec: Recording, seconds: float = 2.0) -> list[tuple[str, list[dict[str, Any]]]]:
    """(window_id, events) uploads of ~``seconds`` of recording each, as a capture snippet sends them."""
    batches: list[tuple[str, list[dict[str, Any]]]] = []
    span = seconds * 1000
    for window, ev in zip(rec.windows, rec.events):
        if batches and batches[-1][0] == window and ev["timestamp"] - batches[-1][1][0]["timestamp"] < span:
            batches[-1][1].append(ev)
        else:
            batches.append((window, [ev]))
    return batches


def shifted(events: list[dict[str, Any]], delta_ms: int) -> list[dict[str, Any]]:
    """Copies with ``timestamp`` moved by ``delta_ms`` (data is shared, it is never mutated)."""
    return [{**e, "timestamp": e["timestamp"] + delta_ms} for e in events]


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def machine() -> str:
    return (f"{datetime.date.today().isoformat()}, {os.cpu_count()} cores, "
            f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")


# -- /proc readings --------------------------------------------------------------------------------

def cpu_user_system(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process, all its threads included (fields 14, 15 of /proc/pid/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may contain spaces
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads included."""
    return sum(cpu_user_system(pid))


def machine_steal_seconds() -> float:
    """CPU time the hypervisor gave to other guests while ours wanted it, summed over cores (/proc/stat).

    On a virtual machine this is the part of a slow run that no one on this machine caused.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) / CLK_TCK if len(fields) > 8 else 0.0


def runqueue_wait_seconds(pid: int) -> float:
    """Time the process's threads spent runnable but waiting for a CPU (field 2 of /proc/pid/task/*/schedstat).

    On a shared machine this is how long other people's jobs held the cores we needed: latency that
    no change to our code can remove.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (FileNotFoundError, IndexError, ValueError):
            pass  # a thread that ended meanwhile
    return total / 1e9


def status_kb(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/pid/status, e.g. VmRSS or VmHWM."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


class RssSampler:
    """Samples a process's VmRSS every ``interval`` seconds on a thread; ``peak_kb`` is the highest seen."""

    def __init__(self, pid: int, interval: float = 0.005):
        self.pid, self.interval = pid, interval
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, status_kb(self.pid, "VmRSS"))
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self.peak_kb = status_kb(self.pid, "VmRSS")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, status_kb(self.pid, "VmRSS"))


# -- launching and profiling the server ----------------------------------------------------------

def tree_launcher(tree: str) -> str:
    """A ``Server(launcher=...)`` that runs `replay serve` from another checkout (bench/serve_tree.py)."""
    return f"{Path(__file__).resolve().parent / 'serve_tree.py'} {tree}"


@contextlib.contextmanager
def py_spy_recording(pid: int, out: str | None, *flags: str) -> Iterator[None]:
    """``py-spy record --format raw`` of ``pid`` into ``out`` while the block runs (nothing if ``out`` is None)."""
    if out is None:
        yield
        return
    profiler = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(pid), "-o", out,
                                 "--format", "raw", *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)  # let py-spy attach before the load starts
    try:
        yield
    finally:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its file and exits
        profiler.wait(60)


# -- the server under test -------------------------------------------------------------------------

@dataclass
class Server:
    """``python -m replay serve`` as a child process on 127.0.0.1 and a free port."""

    data: Path
    extra: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    url: str = ""
    token: str = ""
    project: str = ""
    api_key: str = ""
    output: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    # What follows the interpreter instead of "-m replay": a script that changes one thing and then
    # calls replay.cli.main (e.g. bench/serve_default_gc.py), for before/after runs in one process.
    launcher: str = ""
    # What runs the interpreter, e.g. valgrind (bench/server_instructions.py).
    wrapper: tuple[str, ...] = ()

    def start(self, timeout: float = 60) -> "Server":
        launcher = self.launcher or os.environ.get("REPLAY_BENCH_LAUNCHER", "")
        self.proc = subprocess.Popen(
            [*self.wrapper, sys.executable, *(launcher.split() or ["-m", "replay"]), "serve", "--data", str(self.data), "--host", "127.0.0.1",
             "--port", "0", *self.extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
            env={**os.environ, **self.env})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("replay serve exited:\n" + "".join(self.output))
            self.output.append(line)
            if m := re.search(r"project (\S+) .*ingest token: (\S+)", line):
                self.project, self.token = m.groups()
            if m := re.search(r"API key \(shown once, keep it\): (\S+)", line):
                self.api_key = m.group(1)
            if m := re.search(r"listening on (http://\S+)", line):
                self.url = m.group(1)
                threading.Thread(target=self._drain, daemon=True).start()
                return self
        raise RuntimeError("replay serve did not start:\n" + "".join(self.output))

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def runqueue_wait(self) -> float:
        return runqueue_wait_seconds(self.pid)

    def spooled_bytes(self) -> int:
        """Bytes in the spool's log files: 0 once everything acknowledged has been flushed."""
        total = 0
        for p in (self.data / "spool").glob("*.wal"):
            try:
                total += p.stat().st_size
            except FileNotFoundError:  # released by a flush between glob and stat
                pass
        return total

    def stop(self, timeout: float = 120) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
