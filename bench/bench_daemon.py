"""What the daemon costs while it waits, and how long a dropped set takes to become live.

1. Idle: ``harper-certd run`` on a temporary Harper-style root (``tests/nodefix.py``), left
   alone for ``--idle-seconds`` (60) after ``certd.started``, against a bare Python process
   that imports what the daemon's work needs (cryptography with x509 verification and
   serialization, watchdog, structlog, yaml, psutil), starts a watchdog Observer on the
   same three folders the daemon watches (incoming recursively, keys/, the state's
   generations/ recursively) and waits on stdin.  A second bare process also imports the
   harper_certd modules, to tell the libraries' share from the daemon's own code.  All
   three run at once over the same window.  CPU is user+system time over the window
   (psutil, 10 ms ticks); RSS is sampled every 0.5 s (max) and read at the end.
   Targets: daemon RSS at most 1.3x the bare process's; daemon CPU under 0.1 s a minute.
2. Latency: a complete set (``node.source``) moved into the incoming folder with one rename
   (``daemonfix.drop``), to the swap being durable, with ``restart.method: none`` and
   ``watch.settle_seconds`` 0.5.  "Durable" is the ``ts`` of the ``certd.set_installed``
   line: the daemon logs it after the generation and the ``current`` flip are fsynced,
   the journal is removed (directory fsynced) and the history line is fsynced, so it is
   the first moment the daemon says so and never before the swap is on disk (same host,
   same wall clock, microsecond stamps).  The first drop adopts the live files and is
   reported apart.  Each sample is followed, once the daemon is quiet, by the baseline:
   the same three files copied in-process into a folder on the same file system, each
   written to a temporary name and fsynced, each renamed, then the folder fsynced.
   Target: median latency minus the settle period at most 3x the baseline's median.
3. Where the time goes: the same install path (``pipeline.install_newest``) run in this
   process on another node, with the phases and every ``os.fsync`` timed, each install the
   settle period after its drop, each followed (after the same pause) by the baseline.
   Comparing it with the daemon's set_detected -> set_installed separates the install
   path from the daemon's loop and its watches (its own writes come back as inotify events).

The machine may be shared: fsync times on a virtual disk vary with what else is written,
and after an idle pause they are several times slower than back to back; the baseline is
therefore measured beside each sample, after a pause, never in a separate burst.

Measured through ``python -m bench`` (``bench/suite.py``).  Reports only: nothing here
asserts a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import importlib.metadata
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from harper_certd import devca, logs
from harper_certd.install import context, filing, flip, judge, pipeline
from harper_certd.roles import HARPER_NAMES
from harper_certd.swap import Store

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results" / "daemon.json"
sys.path.insert(0, str(REPO / "tests"))

from daemonfix import DaemonProc, drop  # noqa: E402
from nodefix import Node, make_node  # noqa: E402

TARGET_RSS_RATIO = 1.3
TARGET_CPU_PER_MINUTE = 0.1
TARGET_LATENCY_RATIO = 3.0
RSS_SAMPLE_SECONDS = 0.5
MIB = 1024 * 1024

# The bare process: the libraries, an Observer on the daemon's folders, then nothing.
BARE = """\
import sys
import cryptography.x509
import cryptography.x509.verification
from cryptography.hazmat.primitives import hashes, serialization
import psutil, structlog, yaml
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

for arg in sys.argv[1:]:
    if arg.startswith("import:"):
        __import__(arg.removeprefix("import:"))
observer = Observer()
for arg in sys.argv[1:]:
    if arg.startswith("watch:"):
        how, path = arg.removeprefix("watch:").split(":", 1)
        observer.schedule(FileSystemEventHandler(), path, recursive=how == "r")
observer.start()
print("ready", flush=True)
sys.stdin.read()
observer.stop()
observer.join()
"""
# What `python -m harper_certd run` imports on its way to the loop (method "command").
CERTD_MODULES = ("harper_certd.cli", "harper_certd.run", "harper_certd.install.pipeline")
OUTCOMES = {
    "certd.set_installed",
    "certd.set_refused",
    "certd.set_unchanged",
    "certd.restart_held",
    "certd.swap_failed",
    "certd.cycle_failed",
}


# --- small helpers ---------------------------------------------------------------------------


def p90(values: Sequence[float]) -> float:
    """Nearest-rank 90th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def ts_seconds(event: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(str(event["ts"])).timestamp()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_system(path: Path) -> str:
    """The type and device of the mount holding ``path``."""
    real = str(path.resolve())
    best = None
    for part in psutil.disk_partitions(all=True):
        mount = part.mountpoint.rstrip("/") + "/"
        if (real + "/").startswith(mount) and (best is None or len(mount) > len(best[0])):
            best = (mount, f"{part.fstype} on {part.device} ({part.mountpoint})")
    return best[1] if best else "unknown"


def new_leaf_kwargs(key_kind: str) -> dict[str, Any]:
    return {"key": devca.make_key("rsa", 2048)} if key_kind == "rsa" else {}


# --- 1. idle -------------------------------------------------------------------------------------


@dataclass
class IdleProcess:
    name: str
    pid: int
    window_seconds: float = 0.0
    cpu_seconds: float = 0.0
    cpu_seconds_per_minute: float = 0.0  # from psutil: 10 ms ticks
    cpu_ms_schedstat: float = 0.0  # on-CPU time of every thread, nanosecond counters
    cpu_ms_per_minute_schedstat: float = 0.0
    rss_start_mib: float = 0.0
    rss_max_mib: float = 0.0
    rss_end_mib: float = 0.0
    uss_end_mib: float = 0.0
    peak_rss_lifetime_mib: float = 0.0  # VmHWM: includes start-up
    threads: int = 0
    wakeups_per_minute: float = 0.0  # voluntary context switches, all threads
    wakeups_by_thread: dict[str, float] = field(default_factory=dict)
    shared_objects: list[str] = field(default_factory=list)


def _peak_rss(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MIB
    return 0.0


def _cpu_ns(pid: int) -> int:
    """On-CPU nanoseconds of all of the process's threads (/proc/<pid>/task/*/schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


def _wakeups(pid: int) -> dict[str, int]:
    """Voluntary context switches of each thread (psutil reads the main thread's only)."""
    out: dict[str, int] = {}
    for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
        with contextlib.suppress(OSError):
            comm = (task / "comm").read_text().strip()
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    out[f"{task.name} {comm}"] = int(line.split()[1])
    return out


def _shared_objects(pid: int) -> list[str]:
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return []
    paths = {line.split()[-1] for line in maps.splitlines() if ".so" in line.split()[-1]}
    return sorted(Path(p).name for p in paths)


def _start_bare(name: str, roots: Sequence[tuple[Path, bool]], imports: Sequence[str]) -> Any:
    argv = [sys.executable, "-c", BARE]
    argv += [f"import:{m}" for m in imports]
    argv += [f"watch:{'r' if rec else 'n'}:{path}" for path, rec in roots]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError(f"the {name} process did not start")
    return proc


def bench_idle(tmp: Path, seconds: float) -> dict[str, Any]:
    node = make_node(tmp / "idle")
    keys = node.root / "keys"
    # The daemon's watch roots (lane.Lane.roots): incoming recursively, its parent and
    # the live files' folder (both keys/) alone, the generations recursively.
    roots = [(keys / "incoming", True), (keys, False), (node.state / "generations", True)]
    bares: list[Any] = []
    with DaemonProc(node) as daemon:
        daemon.wait_for("certd.started")
        try:
            bares.append(_start_bare("bare", roots, ()))
            bares.append(_start_bare("bare + harper_certd", roots, CERTD_MODULES))
            named = [
                ("harper-certd run", daemon.proc.pid),
                ("bare", bares[0].pid),
                ("bare + harper_certd", bares[1].pid),
            ]
            procs = [(IdleProcess(n, pid), psutil.Process(pid)) for n, pid in named]
            start = time.monotonic()
            first = [(p.cpu_times(), _wakeups(p.pid), _cpu_ns(p.pid)) for _, p in procs]
            for row, p in procs:
                rss = p.memory_info().rss / MIB
                row.rss_start_mib = row.rss_max_mib = rss
            deadline = start + seconds
            while (now := time.monotonic()) < deadline:
                time.sleep(min(RSS_SAMPLE_SECONDS, deadline - now))
                for row, p in procs:
                    row.rss_max_mib = max(row.rss_max_mib, p.memory_info().rss / MIB)
            window = time.monotonic() - start
            for (row, p), (cpu0, ctx0, ns0) in zip(procs, first, strict=True):
                cpu1, ctx1, ns1 = p.cpu_times(), _wakeups(p.pid), _cpu_ns(p.pid)
                row.cpu_ms_schedstat = round((ns1 - ns0) / 1e6, 3)
                row.cpu_ms_per_minute_schedstat = round(row.cpu_ms_schedstat * 60 / window, 3)
                row.window_seconds = round(window, 2)
                row.cpu_seconds = round((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), 3)
                row.cpu_seconds_per_minute = round(row.cpu_seconds * 60 / window, 4)
                row.wakeups_by_thread = {
                    t: round((n - ctx0.get(t, 0)) * 60 / window, 1) for t, n in ctx1.items()
                }
                row.wakeups_per_minute = round(sum(row.wakeups_by_thread.values()), 1)
                row.rss_end_mib = p.memory_info().rss / MIB
                row.rss_max_mib = max(row.rss_max_mib, row.rss_end_mib)
                row.uss_end_mib = p.memory_full_info().uss / MIB
                row.peak_rss_lifetime_mib = _peak_rss(p.pid)
                row.threads = p.num_threads()
                row.shared_objects = _shared_objects(p.pid)
        finally:
            for proc in bares:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        daemon_events = [e.get("event") for e in daemon.events]
        daemon.stop()
    rows = [row for row, _ in procs]
    for row in rows:
        for key in ("rss_start_mib", "rss_max_mib", "rss_end_mib", "uss_end_mib"):
            setattr(row, key, round(getattr(row, key), 2))
        row.peak_rss_lifetime_mib = round(row.peak_rss_lifetime_mib, 2)
    certd, bare, bare_certd = rows
    return {
        "processes": [dataclasses.asdict(r) for r in rows],
        "rss_max_ratio": round(certd.rss_max_mib / bare.rss_max_mib, 3),
        "rss_end_ratio": round(certd.rss_end_mib / bare.rss_end_mib, 3),
        "rss_end_ratio_vs_bare_with_harper_certd": round(
            certd.rss_end_mib / bare_certd.rss_end_mib, 3
        ),
        "cpu_seconds_per_minute": certd.cpu_seconds_per_minute,
        "cpu_seconds_per_minute_schedstat": round(certd.cpu_ms_per_minute_schedstat / 1000, 6),
        "shared_objects_only_in_daemon": sorted(
            set(certd.shared_objects) - set(bare.shared_objects)
        ),
        "shared_objects_only_in_bare": sorted(set(bare.shared_objects) - set(certd.shared_objects)),
        "daemon_events": daemon_events,
    }


# --- 2. latency ----------------------------------------------------------------------------------


@dataclass
class LatencySample:
    name: str
    raw_s: float  # rename -> certd.set_installed ts
    settled_s: float  # raw minus the settle period
    detect_s: float  # rename -> certd.set_detected ts (settle + wake-up)
    process_s: float  # certd.set_detected -> certd.set_installed
    baseline_s: float  # copy 3 files + fsync each + rename each + fsync dir, in-process


def copy_set_durably(source: Path, dest: Path) -> float:
    """The baseline: the three files copied, each fsynced, each renamed, the folder fsynced."""
    started = time.perf_counter()
    for name in HARPER_NAMES:
        data = (source / name).read_bytes()
        fd = os.open(
            dest / f".{name}.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600
        )
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    for name in HARPER_NAMES:
        os.rename(dest / f".{name}.tmp", dest / name)
    fsync_dir(dest)
    return time.perf_counter() - started


def next_outcome(daemon: DaemonProc, after: int, timeout: float) -> tuple[int, dict[str, Any]]:
    """The first install outcome logged at or after index ``after``; (next index, event)."""
    deadline = time.monotonic() + timeout
    with daemon.cond:
        while True:
            for i in range(after, len(daemon.events)):
                if daemon.events[i].get("event") in OUTCOMES:
                    return i + 1, daemon.events[i]
            left = deadline - time.monotonic()
            if left <= 0 or daemon.proc.poll() is not None:
                raise RuntimeError(
                    f"no install outcome within {timeout}s; log:\n" + "\n".join(daemon.raw)
                )
            daemon.cond.wait(timeout=min(left, 0.2))


def _detected(daemon: DaemonProc, source: Path) -> dict[str, Any]:
    found = [e for e in daemon.named("certd.set_detected") if e.get("source") == str(source)]
    if found:
        return found[-1]
    raise RuntimeError(f"no certd.set_detected for {source}")


def _processed(node: Node, name: str) -> Path:
    found = sorted((node.root / "keys" / "processed").glob(f"*-{name}"))
    if not found:
        raise RuntimeError(f"{name} was not filed in processed/")
    return found[-1]


def bench_latency(tmp: Path, samples: int, settle: float, key_kind: str) -> dict[str, Any]:
    node = make_node(
        tmp / "latency",
        method="none",
        extra={
            "watch": {"settle_seconds": settle},
            # method "none" still spends the restart budget (3 an hour by default).
            "restart": {"method": "none", "restarts_per_hour": 100000},
        },
    )
    quiet = max(3 * settle, 1.0)  # the daemon's own writes make it re-check the live set
    names = [f"set{i:03d}" for i in range(samples + 1)]
    # Every set made before the daemon starts: key generation must not compete with it.
    folders = [node.source(name, **new_leaf_kwargs(key_kind)) for name in names]
    baseline_dir = tmp / "latency" / "baseline"
    baseline_dir.mkdir()
    rows: list[LatencySample] = []
    with DaemonProc(node) as daemon:
        daemon.wait_for("certd.started")
        time.sleep(quiet)
        seen = 0
        for name, folder in zip(names, folders, strict=True):
            before = time.time()
            target = drop(node, name, folder)
            landed = (before + time.time()) / 2
            seen, outcome = next_outcome(daemon, seen, timeout=60 + 20 * settle)
            if outcome["event"] != "certd.set_installed":
                raise RuntimeError(f"{name}: {outcome}")
            installed = ts_seconds(outcome)
            detected = ts_seconds(_detected(daemon, target))
            time.sleep(quiet)
            baseline = copy_set_durably(_processed(node, name), baseline_dir)
            rows.append(
                LatencySample(
                    name,
                    installed - landed,
                    installed - landed - settle,
                    detected - landed,
                    installed - detected,
                    baseline,
                )
            )
        daemon.stop()
        unexpected = sorted(
            {
                str(e.get("event"))
                for e in daemon.events
                if e.get("_priority", 6) <= 4 or e.get("event") == "certd.live_changed"
            }
        )
    first, measured = rows[0], rows[1:]

    def summary(values: list[float]) -> dict[str, float]:
        return {
            "median_ms": round(statistics.median(values) * 1000, 2),
            "p90_ms": round(p90(values) * 1000, 2),
            "min_ms": round(min(values) * 1000, 2),
            "max_ms": round(max(values) * 1000, 2),
        }

    settled = summary([r.settled_s for r in measured])
    base = summary([r.baseline_s for r in measured])
    return {
        "durable_at": "ts of certd.set_installed (after flip, journal removal and history fsync)",
        "settle_seconds": settle,
        "leaf_key": key_kind,
        "samples": len(measured),
        "raw": summary([r.raw_s for r in measured]),
        "settle_subtracted": settled,
        "detect": summary([r.detect_s for r in measured]),
        "detect_minus_settle": summary([r.detect_s - settle for r in measured]),
        "detected_to_installed": summary([r.process_s for r in measured]),
        "baseline": base,
        "ratio_of_medians": round(settled["median_ms"] / base["median_ms"], 2),
        "first_install_with_adoption": dataclasses.asdict(first),
        "warnings_or_errors_logged": unexpected,
        "per_sample": [dataclasses.asdict(r) for r in rows],
    }


# --- 3. where the time goes, in-process --------------------------------------------------------


@dataclass
class PhaseClock:
    fsync_count: int = 0
    fsync_seconds: float = 0.0
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    fsyncs: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    fsync_time: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # when the install's ``Store.finish`` returned: the set installed (journal closed)
    installed_at: float | None = None
    fsyncs_at_installed: int = 0
    fsync_seconds_at_installed: float = 0.0

    def reset(self) -> None:
        self.installed_at, self.fsyncs_at_installed = None, 0
        self.fsync_seconds_at_installed = 0.0
        self.fsync_count, self.fsync_seconds = 0, 0.0
        self.seconds.clear()
        self.fsyncs.clear()
        self.fsync_time.clear()
        self.calls.clear()


def _timed(clock: PhaseClock, fn: Callable[..., Any], name: Callable[..., str]) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        phase = name(*args, **kwargs)
        fsyncs, fsync_time = clock.fsync_count, clock.fsync_seconds
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            ended = time.perf_counter()
            clock.seconds[phase] += ended - started
            clock.fsyncs[phase] += clock.fsync_count - fsyncs
            clock.fsync_time[phase] += clock.fsync_seconds - fsync_time
            clock.calls[phase] += 1
            if phase == FINISH and clock.installed_at is None:
                clock.installed_at, clock.fsyncs_at_installed = ended, clock.fsync_count
                clock.fsync_seconds_at_installed = clock.fsync_seconds

    return wrapper


def _validate_phase(ctx: Any, data: Any, names: tuple[str, ...]) -> str:
    if names[0] == "live certificate":
        return "validate live set (older-than-live)"
    return "validate new set"


def _prune_phase(clock: PhaseClock) -> Callable[..., str]:
    """A prune after the flip is after the set is installed; one before it (the install
    path pruned before staging until 2026-12-06) is part of the path and counted."""

    def name(*args: Any, **kwargs: Any) -> str:
        return PRUNE_AFTER if clock.calls[FLIP] else PRUNE_BEFORE

    return name


def _constant(phase: str) -> Callable[..., str]:
    def name(*args: Any, **kwargs: Any) -> str:
        return phase

    return name


FLIP = "flip + journal + nudge"
PRUNE_AFTER = "after: prune generations"
PRUNE_BEFORE = "prune before the flip"
# the pristine copy: written with the generation until 2026-12-07, after certd.set_installed since
PRISTINE_AFTER = "after: pristine copy"
# (owner, attribute, phase name); the last three run after certd.set_installed is logged.
FINISH = "finish: meta + journal clear + history"  # its return is "installed"
PHASES: list[tuple[Any, str, str]] = [
    (pipeline, "recover", "lock + recover check"),
    (judge, "read_source", "read source"),
    (judge, "validate_set", ""),
    (judge, "older_than_live", "older-than-live (incl. its validation)"),
    (pipeline, "same_as_live", "same-as-live check"),
    (flip, "adopt", "adopt check"),
    (Store, "stage", "stage: journal + generation"),
    (Store, "commit_flip", FLIP),
    (Store, "finish", FINISH),
    (Store, "keep_pristine", PRISTINE_AFTER),
    (filing, "keep", "after: file source in processed/"),
    (Store, "prune", PRUNE_AFTER),
]
NESTED = {"validate live set (older-than-live)"}  # inside another phase: not summed
AFTER = {PRISTINE_AFTER, "after: file source in processed/", PRUNE_AFTER}


@contextlib.contextmanager
def instrumented(clock: PhaseClock) -> Iterator[None]:
    saved: list[tuple[Any, str, Any]] = []
    real_fsync = os.fsync

    def fsync(fd: Any) -> None:
        started = time.perf_counter()
        try:
            real_fsync(fd)
        finally:
            clock.fsync_count += 1
            clock.fsync_seconds += time.perf_counter() - started

    try:
        saved.append((os, "fsync", real_fsync))
        os.fsync = fsync
        for owner, attr, phase in PHASES:
            fn = getattr(owner, attr)
            saved.append((owner, attr, fn))
            namer = _validate_phase if not phase else _constant(phase)
            if phase == PRUNE_AFTER:
                namer = _prune_phase(clock)
            setattr(owner, attr, _timed(clock, fn, namer))
        yield
    finally:
        for owner, attr, fn in reversed(saved):
            setattr(owner, attr, fn)


def bench_phases(tmp: Path, samples: int, pause: float, key_kind: str) -> dict[str, Any]:
    """The install path in this process, each install ``pause`` after its drop (as the
    daemon's settle period), then, ``pause`` later, the baseline copy of the same set."""
    node = make_node(
        tmp / "phases",
        method="none",
        # the install path's own work; Node's judgement (one process per set) is its own row
        extra={
            "restart": {"method": "none", "restarts_per_hour": 100000},
            "judge": {"node": "none"},
        },
    )
    names = [f"set{i:03d}" for i in range(samples + 1)]
    folders = [node.source(name, **new_leaf_kwargs(key_kind)) for name in names]
    clock = PhaseClock()
    per_install: list[dict[str, Any]] = []
    baseline_dir = tmp / "phases" / "baseline"
    baseline_dir.mkdir()
    with open(os.devnull, "w") as sink:
        logs.configure(json=True, stream=sink, level="info")
        ctx = context.build_context(node.config)
        with instrumented(clock):
            for name, folder in zip(names, folders, strict=True):
                target = drop(node, name, folder)
                os.sync()  # each side starts with nothing of the other's left to write back
                time.sleep(pause)
                clock.reset()
                started = time.perf_counter()
                outcome = pipeline.install_newest(ctx, [target])
                total = time.perf_counter() - started
                if outcome is None or outcome.status != "installed":
                    raise RuntimeError(f"{name}: {outcome}")
                after = sum(clock.seconds[p] for p in AFTER)
                fsync_to_installed = clock.fsync_seconds_at_installed
                fsyncs = clock.fsync_count
                assert clock.installed_at is not None  # an installed set was finished
                to_installed = clock.installed_at - started
                os.sync()
                time.sleep(pause)
                baseline = copy_set_durably(_processed(node, name), baseline_dir)
                per_install.append(
                    {
                        "total_s": total,
                        # from the call to Store.finish's return (the journal closed)
                        "to_installed_s": to_installed,
                        # as counted until 2026-12-07 15:00: the call less its after phases
                        # (what runs after finish outside those phases counted too)
                        "less_after_s": total - after,
                        "fsyncs_to_installed": clock.fsyncs_at_installed,
                        "fsyncs_total": fsyncs,
                        "fsync_to_installed_s": fsync_to_installed,
                        "baseline_s": baseline,
                        "phases": {
                            p: (clock.seconds[p], clock.fsyncs[p], clock.fsync_time[p])
                            for p in clock.seconds
                        },
                    }
                )
        logs.configure(json=True, level="info")
    measured = per_install[1:]  # the first one adopts the live files
    phase_names = [p or "validate new set" for _, _, p in PHASES]
    phase_names.insert(
        phase_names.index("older-than-live (incl. its validation)") + 1,
        "validate live set (older-than-live)",
    )
    phase_names.insert(phase_names.index("stage: journal + generation"), PRUNE_BEFORE)
    phases = {}
    for phase in phase_names:
        values = [m["phases"].get(phase, (0.0, 0, 0.0)) for m in measured]
        phases[phase] = {
            "median_ms": round(statistics.median(v[0] for v in values) * 1000, 2),
            "fsyncs": statistics.median(v[1] for v in values),
            "fsync_median_ms": round(statistics.median(v[2] for v in values) * 1000, 2),
        }
    to_installed = statistics.median(m["to_installed_s"] for m in measured)
    less_after = statistics.median(m["less_after_s"] for m in measured)
    baseline = statistics.median(m["baseline_s"] for m in measured)
    counted = sum(phases[p]["median_ms"] for p in phase_names if p not in AFTER and p not in NESTED)
    return {
        "installs": len(measured),
        "to_installed_median_ms": round(to_installed * 1000, 2),
        "less_after_median_ms": round(less_after * 1000, 2),
        "ratio_less_after": round(less_after / baseline, 2),
        "total_median_ms": round(statistics.median(m["total_s"] for m in measured) * 1000, 2),
        "other_to_installed_ms": round(to_installed * 1000 - counted, 2),
        "fsyncs_to_installed": statistics.median(m["fsyncs_to_installed"] for m in measured),
        "fsyncs_total": statistics.median(m["fsyncs_total"] for m in measured),
        "fsync_to_installed_median_ms": round(
            statistics.median(m["fsync_to_installed_s"] for m in measured) * 1000, 2
        ),
        "pause_seconds": pause,
        "baseline_median_ms": round(baseline * 1000, 2),
        "ratio_to_baseline": round(to_installed / baseline, 2),
        "phases": phases,
        "first_install_with_adoption_ms": round(per_install[0]["total_s"] * 1000, 2),
        "per_install": [
            {"to_installed_s": m["to_installed_s"], "baseline_s": m["baseline_s"]}
            for m in measured
        ],
    }


# --- report ----------------------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def table(idle: dict[str, Any], latency: dict[str, Any], phases: dict[str, Any]) -> list[str]:
    certd, bare, bare_certd = idle["processes"]
    window = certd["window_seconds"]
    cpu = idle["cpu_seconds_per_minute"]
    settled, base = latency["settle_subtracted"], latency["baseline"]
    ratio = latency["ratio_of_medians"]
    settle_ms = latency["settle_seconds"] * 1000
    lines = [
        f"Idle over {window:.0f} s after certd.started (daemon vs bare Python, same folders)",
        "",
        "| measure | harper-certd | bare | bare + harper_certd | ratio | target | met |",
        "|---|---:|---:|---:|---:|---|---|",
        f"| CPU s/min (psutil, 10 ms ticks) | {cpu:.3f} | {bare['cpu_seconds_per_minute']:.3f} "
        f"| {bare_certd['cpu_seconds_per_minute']:.3f} | | < {TARGET_CPU_PER_MINUTE} s "
        f"| {_met(cpu < TARGET_CPU_PER_MINUTE)} |",
        f"| CPU ms/min (schedstat, all threads) | {certd['cpu_ms_per_minute_schedstat']:.2f} "
        f"| {bare['cpu_ms_per_minute_schedstat']:.2f} "
        f"| {bare_certd['cpu_ms_per_minute_schedstat']:.2f} | | < "
        f"{TARGET_CPU_PER_MINUTE * 1000:.0f} ms "
        f"| {_met(certd['cpu_ms_per_minute_schedstat'] < TARGET_CPU_PER_MINUTE * 1000)} |",
        f"| RSS max MiB | {certd['rss_max_mib']:.1f} | {bare['rss_max_mib']:.1f} "
        f"| {bare_certd['rss_max_mib']:.1f} | {idle['rss_max_ratio']:.2f}x "
        f"| <= {TARGET_RSS_RATIO}x | {_met(idle['rss_max_ratio'] <= TARGET_RSS_RATIO)} |",
        f"| RSS end MiB | {certd['rss_end_mib']:.1f} | {bare['rss_end_mib']:.1f} "
        f"| {bare_certd['rss_end_mib']:.1f} | {idle['rss_end_ratio']:.2f}x "
        f"| <= {TARGET_RSS_RATIO}x | {_met(idle['rss_end_ratio'] <= TARGET_RSS_RATIO)} |",
        f"| USS end MiB | {certd['uss_end_mib']:.1f} | {bare['uss_end_mib']:.1f} "
        f"| {bare_certd['uss_end_mib']:.1f} | | | |",
        f"| peak RSS incl. start MiB | {certd['peak_rss_lifetime_mib']:.1f} "
        f"| {bare['peak_rss_lifetime_mib']:.1f} | {bare_certd['peak_rss_lifetime_mib']:.1f} "
        "| | | |",
        f"| threads | {certd['threads']} | {bare['threads']} | {bare_certd['threads']} | | | |",
        f"| wake-ups/min (all threads) | {certd['wakeups_per_minute']:.0f} "
        f"| {bare['wakeups_per_minute']:.0f} | {bare_certd['wakeups_per_minute']:.0f} | | | |",
        "",
        f"Latency, rename into incoming -> certd.set_installed ts; settle "
        f"{settle_ms:.0f} ms, restart.method none, {latency['samples']} samples "
        f"(+1 adopting, apart), {latency['leaf_key']} leaf",
        "",
        "| measure | median ms | p90 ms | min ms | max ms | target | met |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for label, key in (
        ("daemon raw", "raw"),
        ("daemon minus settle", "settle_subtracted"),
        ("  rename -> set_detected, minus settle", "detect_minus_settle"),
        ("  set_detected -> set_installed", "detected_to_installed"),
        ("baseline copy+fsync+rename+fsync dir", "baseline"),
    ):
        row = latency[key]
        target = met = ""
        if key == "settle_subtracted":
            target, met = (
                f"<= {TARGET_LATENCY_RATIO}x baseline",
                _met(ratio <= TARGET_LATENCY_RATIO),
            )
        lines.append(
            f"| {label} | {row['median_ms']:.1f} | {row['p90_ms']:.1f} | {row['min_ms']:.1f} "
            f"| {row['max_ms']:.1f} | {target} | {met} |"
        )
    lines += [
        f"| ratio of medians (settle subtracted) | {ratio:.2f}x "
        f"({settled['median_ms']:.1f} / {base['median_ms']:.1f}) | | | | "
        f"<= {TARGET_LATENCY_RATIO}x | {_met(ratio <= TARGET_LATENCY_RATIO)} |",
        "",
        f"Where the time goes: pipeline.install_newest in this process, median of "
        f"{phases['installs']} installs, each {phases['pause_seconds'] * 1000:.0f} ms after its "
        f"drop; {phases['fsyncs_to_installed']:.0f} fsyncs before set_installed "
        f"({phases['fsyncs_total']:.0f} in all); the baseline does 4",
        "",
        "| phase | median ms | fsyncs | of which fsync ms |",
        "|---|---:|---:|---:|",
    ]
    for phase, row in phases["phases"].items():
        label = f"  ({phase})" if phase in NESTED else phase
        lines.append(
            f"| {label} | {row['median_ms']:.2f} | {row['fsyncs']:.0f} "
            f"| {row['fsync_median_ms']:.2f} |"
        )
    lines += [
        f"| other (remainder) | {phases['other_to_installed_ms']:.2f} | | |",
        f"| **to installed** (Store.finish returned) | {phases['to_installed_median_ms']:.2f} "
        f"| {phases['fsyncs_to_installed']:.0f} | {phases['fsync_to_installed_median_ms']:.2f} |",
        f"| baseline, same pause | {phases['baseline_median_ms']:.2f} | 4 | |",
        f"| ratio (in-process install / baseline) | {phases['ratio_to_baseline']:.2f}x | | |",
        f"| as counted before 2026-12-07 15:00 (the call less its after phases) "
        f"| {phases['less_after_median_ms']:.2f} | | |",
        f"| ratio, counted so | {phases['ratio_less_after']:.2f}x | | |",
    ]
    return lines


def environment(tmp: Path) -> dict[str, str]:
    versions = {
        name: importlib.metadata.version(name)
        for name in ("cryptography", "watchdog", "structlog", "PyYAML", "psutil")
    }
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": str(len(os.sched_getaffinity(0))),
        "tmp": str(tmp),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "file_system": file_system(tmp),
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
        "at": dt.datetime.now(dt.UTC).isoformat(),
        **versions,
    }
