"""The benchmark suite behind ``python -m bench``: every figure a ratio against a baseline
measured in the same run, side by side, in alternating rounds.

Each measure returns a ``Figure``: per round, our time and the baseline's (the two run one
after the other, the order swapped every round so a burst of load on a shared machine falls
on both), and the per-round ratio; the report gives min / median / max of those ratios.
Nothing here asserts a time: targets are printed beside the figures, met or not.

Measures (``quick`` shrinks each; the real-Harper part is skipped in quick mode):

* validation vs CA-file size: ``validate_files`` in-process against the seed's openssl
  pipeline (7 processes: ``x509 -text``, ``verify -CAfile``, ``x509 -modulus | md5`` and
  ``rsa -modulus | md5``, ``x509 -checkend``) and against a minimal cryptography script
  (``bench/minimal_validate.py``, called in-process), for CA files of 1 to 1,000 roots;
* process wall time: ``harper-certd validate`` vs the minimal script as a process, and
  ``status --no-probe`` vs ``validate``;
* the install path (``pipeline.install_newest`` in-process) vs copying the three files with
  an fsync each, a rename each and the folder fsynced (``bench_daemon.bench_phases``);
* install cost vs history kept (history.jsonl lines and processed/ folders);
* drop -> installed in the daemon vs the number of certificate sets it manages;
* a soak of rotations through the real daemon: RSS and open fds every few rotations, and
  drop -> installed against the settle period;
* on real Harper 4.7.29: served time and failed handshakes, hot reload vs restart
  (``bench_harper``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cryptography
import psutil
import yaml
from cryptography.x509.oid import ExtendedKeyUsageOID

from bench import bench_daemon, bench_harper, bench_validate, minimal_validate
from harper_certd import __version__, devca, judge, logs
from harper_certd.install import context, pipeline
from harper_certd.roles import Purpose, SetPaths
from harper_certd.validate import validate_files

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from daemonfix import DaemonProc, drop  # noqa: E402
from harper_rig import HARPER_VERSION, find_harper  # noqa: E402
from nodefix import make_node  # noqa: E402

MIB = 1024 * 1024


# --- figures ---------------------------------------------------------------------------------


@dataclass
class Figure:
    """One measure: ``ours`` and ``base`` seconds per round; ``ratios`` per round.

    ``speedup``: the ratio is base / ours ("x faster"); otherwise ours / base ("x the
    baseline's time").  ``target``: a bound on the median ratio (at least for a speedup,
    at most otherwise), or None."""

    section: str
    name: str
    ours_label: str
    base_label: str
    ours: list[float] = field(default_factory=list)
    base: list[float] = field(default_factory=list)
    speedup: bool = False
    target: float | None = None
    note: str = ""

    @property
    def ratios(self) -> list[float]:
        if self.speedup:
            return [b / o for o, b in zip(self.ours, self.base, strict=True) if o > 0]
        return [o / b for o, b in zip(self.ours, self.base, strict=True) if b > 0]

    def ratio_stats(self) -> tuple[float, float, float]:
        r = self.ratios
        return min(r), statistics.median(r), max(r)

    @property
    def met(self) -> bool | None:
        if self.target is None or not self.ratios:
            return None
        median = statistics.median(self.ratios)
        return median >= self.target if self.speedup else median <= self.target


def _median_time(fn: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def alternate(
    figure: Figure,
    ours: Callable[[], object],
    base: Callable[[], object],
    rounds: int,
    inner: tuple[int, int] = (1, 1),
) -> Figure:
    """``rounds`` rounds; each times ``ours`` (median of ``inner[0]`` runs) and ``base``
    (median of ``inner[1]``), the order swapped every round."""
    ours()  # warm: imports, caches of the interpreter, the page cache
    base()
    for r in range(rounds):
        if r % 2 == 0:
            o = _median_time(ours, inner[0])
            b = _median_time(base, inner[1])
        else:
            b = _median_time(base, inner[1])
            o = _median_time(ours, inner[0])
        figure.ours.append(o)
        figure.base.append(b)
    return figure


def alternate_keys(
    figures: dict[int, Figure], base: int, measure: Callable[[int, int], float], rounds: int
) -> None:
    """``measure(key, round)`` once unrecorded for the baseline's key and each figure's (round
    0: the first install adopts the live files), then ``rounds`` rounds in an order reversed
    every round; each figure gets its key's time and the baseline's of the same round."""
    keys = [base, *figures]
    for key in keys:
        measure(key, 0)
    for i in range(1, rounds + 1):
        order = keys if i % 2 else list(reversed(keys))
        took = {key: measure(key, i) for key in order}
        for key, figure in figures.items():
            figure.ours.append(took[key])
            figure.base.append(took[base])


# --- the machine -----------------------------------------------------------------------------


def _run_text(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    if done.returncode != 0:
        return "?"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else ""


def machine() -> dict[str, str]:
    """CPU, cores, load, versions, the git commit: what the figures were measured on."""
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    from cryptography.hazmat.backends.openssl import backend

    harper = find_harper()
    commit = _run_text(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"])
    dirty = _run_text(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    load1, load5, _ = os.getloadavg()
    return {
        "date (UTC)": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "load average at start (1 / 5 min)": f"{load1:.2f} / {load5:.2f}",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "OpenSSL (command)": _run_text([bench_validate.OPENSSL, "version"]),
        "OpenSSL (cryptography's)": backend.openssl_version_text(),
        "cryptography": cryptography.__version__,
        "Node": _run_text(["node", "--version"]),
        "Harper": HARPER_VERSION if harper else "not installed",
        "harper-certd": __version__,
        "git commit": commit + (" (with local changes)" if dirty not in ("", "?") else ""),
    }


# --- 1. validation vs CA-file size ------------------------------------------------------------


def _ca_sets(folder: Path, sizes: Sequence[int]) -> dict[int, SetPaths]:
    """One RSA-2048 leaf (so openssl's ``rsa -modulus`` applies) under an intermediate, and
    CA files of ``n`` roots: ``n - 1`` EC P-256 stranger roots, then the real root."""
    root = devca.make_ca("bench root", key=devca.make_key("rsa", 2048))
    inter = devca.make_ca(
        "bench intermediate", parent=root, key=devca.make_key("rsa", 2048), path_length=0
    )
    leaf = devca.make_leaf(inter, "nodea", key=devca.make_key("rsa", 2048))
    # A pool of 8 keys: generation stays short; every root is still parsed and fingerprinted.
    pool = [devca.make_key("ec") for _ in range(8)]
    strangers = [
        devca.make_ca(f"bench stranger root {i:04d}", key=pool[i % len(pool)])
        for i in range(max(sizes) - 1)
    ]
    return {
        n: devca.write_set(folder / f"roots{n}", leaf, [*strangers[: n - 1], root], chain=[inter])
        for n in sizes
    }


def _minimal_in_process(paths: SetPaths) -> Callable[[], object]:
    argv = [str(paths.cert), str(paths.key), str(paths.ca)]

    def run() -> object:
        with contextlib.redirect_stdout(io.StringIO()):
            return minimal_validate.main(argv)

    return run


def bench_ca_sizes(tmp: Path, sizes: Sequence[int], rounds: int) -> list[Figure]:
    inner = 5 if rounds > 3 else 2
    sets = _ca_sets(tmp / "ca-sizes", sizes)
    out = []
    for n, paths in sets.items():
        at = dt.datetime.now(dt.UTC)
        report = validate_files(paths, at=at, purpose=Purpose.CLUSTER, judge=judge.MODEL)
        verdict = "valid" if report.valid else "refused: " + ", ".join(report.codes)
        assert paths.ca is not None
        size_kib = paths.ca.stat().st_size / 1024

        def ours(paths: SetPaths = paths, at: dt.datetime = at) -> object:
            return validate_files(paths, at=at, purpose=Purpose.CLUSTER, judge=judge.MODEL)

        note = f"CA file {size_kib:,.0f} KiB; our verdict: {verdict}"
        out.append(
            alternate(
                Figure("validation", f"{n} roots", "validate_files", "openssl pipeline",
                       speedup=True, target={150: 20.0, 1000: 5.0}.get(n), note=note),
                ours,
                lambda paths=paths: bench_validate.openssl_pipeline(paths),  # type: ignore[misc]
                rounds,
                inner=(inner, 1),
            )
        )
        out.append(
            alternate(
                Figure("validation-minimal", f"{n} roots", "validate_files",
                       "minimal cryptography script (in-process)", speedup=True, note=note),
                ours,
                _minimal_in_process(paths),
                rounds,
                inner=(inner, inner),
            )
        )
    return out


def rsa_thousand_roots(tmp: Path) -> str:
    """Whether a CA file of 1,000 RSA-2048 roots (over 1 MiB) is accepted, and its size."""
    root = devca.make_ca("bench root", key=devca.make_key("rsa", 2048))
    leaf = devca.make_leaf(root, "nodea", key=devca.make_key("rsa", 2048))
    pool = [devca.make_key("rsa", 2048) for _ in range(4)]
    strangers = [
        devca.make_ca(f"bench rsa root {i:04d}", key=pool[i % len(pool)]) for i in range(999)
    ]
    paths = devca.write_set(tmp / "rsa1000", leaf, [*strangers, root])
    started = time.perf_counter()
    report = validate_files(
        paths, at=dt.datetime.now(dt.UTC), purpose=Purpose.CLUSTER, judge=judge.MODEL
    )
    took = time.perf_counter() - started
    verdict = "accepted (valid)" if report.valid else "refused: " + ", ".join(report.codes)
    assert paths.ca is not None
    size = paths.ca.stat().st_size / MIB
    return f"1,000 RSA-2048 roots ({size:.2f} MiB): {verdict}, {took * 1000:.0f} ms"


# --- 2. process wall time ---------------------------------------------------------------------


def _process(argv: Sequence[str], env: dict[str, str]) -> Callable[[], object]:
    def run() -> object:
        return subprocess.run(argv, capture_output=True, check=False, timeout=120, env=env)

    return run


def bench_processes(tmp: Path, rounds: int, quick: bool = False) -> list[Figure]:
    """Fresh processes: ``validate`` judged by Node (the node on PATH, as an operator runs
    it) and by the model alone (``--node none``) against the minimal script, the two
    against each other (the Node judge's cost), and ``status --no-probe`` against both
    (``quick``: without the two rows that repeat a Node-judged ``validate``)."""
    node = make_node(tmp / "status-node", method="none")
    config = str(node.write_config())
    # The same node read with `judge.node: none`: the status judged by the model, as
    # `validate --node none` is (like with like; the Node-judged pair is its own row).
    model_config = tmp / "status-node" / "certd-model.yaml"
    model_config.write_text(yaml.safe_dump({**node.config_data, "judge": {"node": "none"}}))
    paths = node.live
    cli = bench_validate.cli_commands(paths)
    validate_cmd = cli[bench_validate.CLI]
    model_cmd = [*validate_cmd, "--node", "none"]
    status_node_cmd = [*validate_cmd[: -len(bench_validate._validate_args(paths))],
                       "status", "--no-probe", "--config", config]
    status_cmd = [*status_node_cmd[:-1], str(model_config)]
    # As a regular install runs: with a bytecode cache (this environment may forbid one) and
    # the YAML memo (yamlmemo), here in the bench's own folder, which the probe runs below
    # fill as an operator's first status does; one row without it, for comparison.
    env = bench_validate.environments(tmp / "pycache")["bytecode cached"]
    env["CACHE_DIRECTORY"] = str(tmp / "cache")
    no_memo = {**env, "HARPER_CERTD_YAML_MEMO": "off"}
    for argv in (status_cmd, status_node_cmd):
        probe = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
        if probe.returncode not in (0, 1):
            raise RuntimeError(f"status --no-probe failed: {probe.stderr}")
    node_note = _judge_line(validate_cmd, env)
    rows = [
        (
            Figure("process", "validate", "harper-certd validate (Node judge)",
                   "minimal cryptography script", target=1.3, note=node_note),
            _process(validate_cmd, env), _process(cli[bench_validate.BARE], env),
        ),
        (
            Figure("process", "validate --node none", "harper-certd validate --node none",
                   "minimal cryptography script", target=1.3, note=_judge_line(model_cmd, env)),
            _process(model_cmd, env), _process(cli[bench_validate.BARE], env),
        ),
        (
            Figure("process", "Node judge cost", "harper-certd validate (Node judge)",
                   "harper-certd validate --node none", note=node_note),
            _process(validate_cmd, env), _process(model_cmd, env),
        ),
        (
            Figure("process", "status --no-probe", "harper-certd status --no-probe (judge.node: "
                   "none)", "harper-certd validate --node none", target=1.3,
                   note="both judged by the model"),
            _process(status_cmd, env), _process(model_cmd, env),
        ),
        (
            Figure("process", "status --no-probe, no YAML memo",
                   "harper-certd status --no-probe (judge.node: none, "
                   "HARPER_CERTD_YAML_MEMO=off)", "harper-certd validate --node none",
                   note="both judged by the model; the status parses its two YAML files "
                        "(PyYAML imported), as its first run after a change does"),
            _process(status_cmd, no_memo), _process(model_cmd, env),
        ),
        (
            Figure("process", "status --no-probe (Node)", "harper-certd status --no-probe",
                   "harper-certd validate (Node judge)", target=1.3,
                   note="both judged by Node (the default)"),
            _process(status_node_cmd, env), _process(validate_cmd, env),
        ),
        (
            Figure("process", "status --no-probe (Node) vs validate --node none",
                   "harper-certd status --no-probe", "harper-certd validate --node none",
                   note="the row that carried the target until 2026-12-07 18:00: the status "
                        "judged by Node, validate by the model"),
            _process(status_node_cmd, env), _process(model_cmd, env),
        ),
    ]
    # Each side of a round is the median of three runs: one fresh process varies by half its
    # time here, and a round's ratio of two single runs went from 0.84x to 1.97x in one row.
    inner = (1, 1) if quick else (3, 3)
    return [
        alternate(figure, ours, base, rounds, inner)
        for figure, ours, base in rows
        if not quick or figure.name in _QUICK_PROCESS_ROWS
    ]


# --quick keeps these process rows (each row is ~4 x rounds fresh processes).
_QUICK_PROCESS_ROWS = ("validate --node none", "Node judge cost", "status --no-probe")


def _judge_line(argv: Sequence[str], env: dict[str, str]) -> str:
    """The judge line of ``validate``'s JSON output (who judged, its version)."""
    done = subprocess.run([*argv, "--json"], capture_output=True, text=True, check=False,
                          env=env, timeout=120)
    try:
        found = json.loads(done.stdout).get("judge") or {}
    except ValueError:
        return "judge: (no JSON output)"
    return f"judged by {found.get('version') or found.get('kind') or '?'}"


def bench_node_judge(tmp: Path, rounds: int) -> list[Figure]:
    """In-process ``validate_files`` on the typical set (root + intermediate) judged by Node
    (a short ``node`` process per set, started before the analysis) against the model
    alone; skipped (no figure) when no node is at hand."""
    choice = judge.runtime.choose(judge.runtime.Settings())
    if not isinstance(choice, judge.NodeChoice):
        return []
    paths = _ca_sets(tmp / "judge", [1])[1]
    at = dt.datetime.now(dt.UTC)
    report = validate_files(paths, at=at, purpose=Purpose.CLUSTER, judge=choice)
    info = report.judge
    note = f"judged by {info.version if info else '?'} ({choice.path}); valid: {report.valid}"
    # One Node run per validation: no sharing with the same set asked a moment before.
    reuse, judge.REUSE_SECONDS = judge.REUSE_SECONDS, 0.0
    try:
        return [
            alternate(
                Figure("judge", "typical set", "validate_files, Node judge",
                       "validate_files, judge.MODEL", note=note),
                lambda: validate_files(paths, at=at, purpose=Purpose.CLUSTER, judge=choice),
                lambda: validate_files(paths, at=at, purpose=Purpose.CLUSTER, judge=judge.MODEL),
                rounds,
                inner=(1, 3),
            )
        ]
    finally:
        judge.REUSE_SECONDS = reuse


# --- 3. the install path ----------------------------------------------------------------------


def bench_install(tmp: Path, samples: int) -> tuple[Figure, dict[str, Any]]:
    result = bench_daemon.bench_phases(tmp, samples, 0.2, "ec")
    fig = Figure("install", "install path", "install_newest to installed",
                 "copy + fsync + rename of the three files", target=3.0,
                 note=f"{result['fsyncs_to_installed']:g} fsyncs to installed "
                      f"({result['fsyncs_total']:g} in all); installed: Store.finish returned "
                      f"(counted as the call less its after phases, as before 2026-12-07 "
                      f"15:00: {result['less_after_median_ms']:.2f} ms, "
                      f"{result['ratio_less_after']:.2f}x)")
    for m in result["per_install"]:
        fig.ours.append(m["to_installed_s"])
        fig.base.append(m["baseline_s"])
    return fig, result


# --- 4. install cost vs history kept ----------------------------------------------------------

HISTORY_LINE = (
    '{"time": "2026-01-01T00:00:00.000000+00:00", "op": "install", "outcome": "installed", '
    '"generation": "20260101T000000000000Z-0000", "source": "/var/lib/harper/keys/incoming/set"}\n'
)


def _fill_history(node_root: Path, state: Path, kept: int, sample: Sequence[Path]) -> None:
    state.mkdir(parents=True, exist_ok=True)
    (state / "history.jsonl").write_text(HISTORY_LINE * kept)
    os.chmod(state / "history.jsonl", 0o600)
    processed = node_root / "keys" / "processed"
    processed.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)  # inside retention.days
    for i in range(kept):
        name = (stamp + dt.timedelta(seconds=i)).strftime("%Y%m%dT%H%M%S%fZ")
        folder = processed / f"{name}-kept{i:05d}"
        folder.mkdir(mode=0o700)
        for f in sample:
            shutil.copyfile(f, folder / f.name)


def bench_history(tmp: Path, kept: Sequence[int], rounds: int) -> list[Figure]:
    """``install_newest`` in-process on nodes that keep ``kept`` history lines and processed
    folders (retention.keep above that), against the node that keeps none; one install on
    each node per round."""
    nodes = {}
    for k in [0, *kept]:
        node = make_node(
            tmp / f"history{k}",
            method="none",
            extra={
                "restart": {"method": "none", "restarts_per_hour": 100000},
                "retention": {"keep": k + rounds + 10},
                "judge": {"node": "none"},  # the history's cost, not Node's start-up
            },
        )
        if k:
            live = node.live
            files = [p for p in (live.cert, live.key, live.ca) if p]
            _fill_history(node.root, node.state, k, files)
        folders = [node.source(f"set{i:03d}") for i in range(rounds + 1)]
        nodes[k] = (node, folders)
    figs = {k: Figure("history", f"{k:,} kept", f"{k:,} operations kept", "none kept")
            for k in kept}
    with open(os.devnull, "w") as sink:
        logs.configure(json=True, stream=sink, level="info")
        try:
            ctxs = {k: context.build_context(n.config) for k, (n, _) in nodes.items()}

            def install(k: int, i: int) -> float:
                node, folders = nodes[k]
                target = drop(node, f"set{i:03d}", folders[i])
                started = time.perf_counter()
                outcome = pipeline.install_newest(ctxs[k], [target])
                took = time.perf_counter() - started
                if outcome is None or outcome.status != "installed":
                    raise RuntimeError(f"history {k}: {outcome}")
                return took

            alternate_keys(figs, 0, install, rounds)
        finally:
            logs.configure(json=True, level="info")
    return list(figs.values())


# --- 4b. drop -> installed vs the number of sets ---------------------------------------------


def _node_with_sets(tmp: Path, count: int, settle: float) -> Any:
    """A node whose daemon manages ``count`` sets: the replication set and ``count - 1``
    server sets ``webNN`` (each its own CA file and keys folder, ``uses: [server]``)."""
    node = make_node(
        tmp,
        method="none",
        extra={
            "watch": {"settle_seconds": settle},
            "restart": {"method": "none", "restarts_per_hour": 100000},
            "judge": {"node": "none"},  # the sets' cost, not Node's start-up (its own row)
        },
    )
    config_path = node.root / "harperdb-config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["replication"]["enableRootCAs"] = False
    config["http"] = {"securePort": 9926}
    entries = [{**config["tls"], "uses": ["replication"]}]
    for i in range(1, count):
        name = f"web{i:02d}"
        ca = devca.make_ca(f"bench web CA {i:02d}")
        host = f"{name}.example.com"
        leaf = devca.make_leaf(ca, host, dns=[host], eku=[ExtendedKeyUsageOID.SERVER_AUTH])
        files = devca.write_set(node.root / "keys" / name, leaf, [ca])
        entries.append(
            {
                "certificate": str(files.cert),
                "certificateAuthority": str(files.ca),
                "privateKey": str(files.key),
                "name": name,
                "uses": ["server"],
            }
        )
    config["tls"] = entries if count > 1 else config["tls"]
    config_path.write_text(yaml.safe_dump(config))
    return node


def bench_sets(tmp: Path, counts: Sequence[int], rounds: int, settle: float) -> list[Figure]:
    """Drop -> installed of the replication set in daemons that manage ``counts`` sets, each
    against the daemon that manages one, all running side by side: per round one drop into
    each daemon's own folder for that set (``incoming/``, ``incoming/replication/`` beside
    other sets), in alternating order, a quiet pause after each (the daemon re-checks the
    live set after its own writes).  From the rename to ``certd.set_installed``'s time."""
    base_count = 1
    nodes = {n: _node_with_sets(tmp / f"sets{n}", n, settle) for n in [base_count, *counts]}
    folders = {
        n: [node.source(f"s{n}r{i:02d}") for i in range(rounds + 1)] for n, node in nodes.items()
    }
    figs = {
        n: Figure("sets", f"{n} sets", f"{n} sets managed", "1 set managed", target=1.5)
        for n in counts
    }
    quiet = max(3 * settle, 1.0)
    with contextlib.ExitStack() as stack:
        daemons = {n: stack.enter_context(DaemonProc(node)) for n, node in nodes.items()}
        seen = dict.fromkeys(nodes, 0)
        for n, daemon in daemons.items():
            started = daemon.wait_for("certd.started", timeout=120)
            if len(started["sets"]) != n:
                raise RuntimeError(f"{n} sets asked for, the daemon manages {started['sets']}")
        time.sleep(quiet)

        def one(n: int, i: int) -> float:
            node, daemon = nodes[n], daemons[n]
            incoming = node.root / "keys" / "incoming"
            folder = incoming if n == 1 else incoming / "replication"
            folder.mkdir(parents=True, exist_ok=True)
            before = time.time()
            os.rename(folders[n][i], folder / folders[n][i].name)
            landed = (before + time.time()) / 2
            seen[n], outcome = bench_daemon.next_outcome(daemon, seen[n], timeout=60 + 20 * settle)
            if outcome["event"] != "certd.set_installed" or outcome.get("set") not in (
                None,
                "replication",
            ):
                raise RuntimeError(f"{n} sets: {outcome}")
            time.sleep(quiet)
            return bench_daemon.ts_seconds(outcome) - landed

        alternate_keys(figs, base_count, one, rounds)
        for daemon in daemons.values():
            daemon.stop()
    return list(figs.values())


# --- 5. the soak ------------------------------------------------------------------------------


@dataclass
class Soak:
    rotations: int
    settle: float
    at: list[int] = field(default_factory=list)  # rotation count at each sample
    rss_mib: list[float] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    drop_to_installed: list[float] = field(default_factory=list)  # seconds, per rotation
    refused: int = 0

    def largest_step(self) -> tuple[float, int]:
        """The largest RSS rise between two samples (MiB) and the rotation it ends at."""
        rss = self.rss_mib
        steps = [(b - a, at) for a, b, at in zip(rss, rss[1:], self.at[1:], strict=False)]
        return max(steps, default=(0.0, 0))

    def growth_per_thousand(self) -> float:
        """RSS growth in MiB per 1,000 rotations over the second half of the soak (the
        first half fills the bounded caches: its growth is reported apart).

        One step of about 1 MiB comes near rotation 840 in every run: CPython's table of
        interned strings doubles once (pathlib interns each new path component: every set's
        folder, generation and stamp names, freed again after).  Measured with tracemalloc
        inside the daemon: one 1.92 MB allocation replacing one of 0.96 MB, at
        ``sys.intern`` in pathlib; the table keeps its size afterwards (400,000 new names
        in a bare interpreter: one growth in the first 40,000, then +0.01 MiB).  The full
        run's 2,000 rotations put the second half past it."""
        start = len(self.at) // 2
        if len(self.at) - start < 2:
            return float("nan")
        span = self.at[-1] - self.at[start]
        return (self.rss_mib[-1] - self.rss_mib[start]) / span * 1000


def bench_soak(tmp: Path, rotations: int, settle: float, every: int) -> Soak:
    node = make_node(
        tmp / "soak",
        method="none",
        extra={
            "watch": {"settle_seconds": settle},
            "restart": {"method": "none", "restarts_per_hour": 10**7},
        },
    )
    folders = [node.source(f"s{i:05d}") for i in range(rotations + 1)]
    soak = Soak(rotations, settle)
    with DaemonProc(node) as daemon:
        daemon.wait_for("certd.started")
        proc = psutil.Process(daemon.proc.pid)
        seen = 0
        for i, folder in enumerate(folders):
            dropped = time.time()
            drop(node, folder.name, folder)
            seen, outcome = bench_daemon.next_outcome(daemon, seen, timeout=60 + 20 * settle)
            if outcome["event"] != "certd.set_installed":
                soak.refused += 1
            elif i:
                soak.drop_to_installed.append(bench_daemon.ts_seconds(outcome) - dropped)
            if i % every == 0 or i == rotations:
                soak.at.append(i)
                soak.rss_mib.append(proc.memory_info().rss / MIB)
                soak.fds.append(proc.num_fds())
            with daemon.cond:  # the log kept by the fixture would be the soak's own growth
                del daemon.events[:seen]
                del daemon.raw[:-50]
            seen = 0
        daemon.stop()
    return soak


# --- 6. idle ----------------------------------------------------------------------------------


def bench_idle(tmp: Path, seconds: float) -> dict[str, Any]:
    """The daemon left alone ``seconds`` beside a bare Python with the same libraries and
    watches (``bench_daemon.bench_idle``): RSS and CPU side by side."""
    return bench_daemon.bench_idle(tmp, seconds)


# --- 7. real Harper ---------------------------------------------------------------------------


def bench_real_harper(
    runs: int, progress: Callable[[str], None]
) -> list[bench_harper.Summary] | None:
    with open(os.devnull, "w") as sink:
        logs.configure(json=True, stream=sink, level="info")  # the daemon's events: not here
        try:
            rotations = bench_harper.run_rotations(runs, progress)
        finally:
            logs.configure(json=True, level="info")
    if rotations is None:
        return None
    return [
        bench_harper.summarize(m, [r for r in rotations if r.method == m])
        for m in bench_harper.METHODS
    ]
